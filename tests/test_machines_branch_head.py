"""Two machines, one task (issue 10, item 1): a stage starts from the branch head the previous
stage pushed, whichever machine ran it, and never from a machine's own stale copy (a worktree or
a local branch left there by an earlier stage). Two "machines" here are two var directories
(repository mirrors), two worktree roots and two host names in one process; the origin is a real
bare repository that both mirror."""

from __future__ import annotations

import shutil
import socket

import pytest

from pipeline import attempt, services
from pipeline.models import Repository, Stage, StageResult, Task, TaskWorktree
from tests.conftest import git
from tests.test_runner_processes import command_stage, commit_workflow


class Machines:
    def __init__(self, settings, tmp_path, monkeypatch):
        self.settings, self.tmp_path, self.monkeypatch = settings, tmp_path, monkeypatch

    def use(self, name: str) -> None:
        self.settings.VAR_DIR = self.tmp_path / name / "var"
        self.settings.TACX = {**self.settings.TACX, "WORKTREE_ROOT": self.tmp_path / name / "trees"}
        self.monkeypatch.setattr(socket, "gethostname", lambda: name)

    def run(self, name: str, task: Task, stage_name: str) -> StageResult:
        self.use(name)
        stage = Stage.objects.get(task=task, name=stage_name)
        assert stage.status == Stage.Status.QUEUED, (stage.name, stage.status)
        attempt.run_stage(stage.pk, enqueue_next=False)
        return StageResult.objects.filter(stage=stage).order_by("-id").first()


@pytest.fixture
def machines(settings, tmp_path, monkeypatch):
    return Machines(settings, tmp_path, monkeypatch)


@pytest.fixture
def mirrored(db, origin_and_clone):
    """A repository every machine mirrors from the bare origin (as from GitHub)."""
    origin, clone = origin_and_clone
    commit_workflow(
        clone,
        [command_stage("planning", "plan"), command_stage("building", "build"), command_stage("reviewing", "review")],
    )
    git(clone, "push", "--quiet", "origin", "main")
    return Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="acme/sample", clone_url=str(origin), default_branch="main")


def _start(repository: Repository, machines: Machines) -> Task:
    machines.use("machine-a")
    task, _ = services.task_create(repository=repository, issue_number=3, title="Add farewell", trigger_source="cli")
    assert services.task_dispatch(task=task, enqueue=False)
    return task


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("leftover", ["worktree", "local branch only"])
def test_a_stage_continues_from_the_head_another_machine_pushed_not_from_its_stale_copy(mirrored, machines, leftover):
    task = _start(mirrored, machines)
    planning = machines.run("machine-a", task, "planning")
    assert planning.success, planning.error
    building = machines.run("machine-b", task, "building")
    assert building.success, building.error
    assert building.head_commit != building.base_commit  # the builder's change was pushed
    tree_a = machines.tmp_path / "machine-a" / "trees"
    if leftover == "local branch only":
        # Machine A's worktree is gone, but its mirror still has the branch where A left it.
        shutil.rmtree(tree_a)
    reviewing = machines.run("machine-a", task, "reviewing")
    assert reviewing.success, reviewing.error
    # The reviewer on machine A saw the builder's commit from machine B.
    assert reviewing.base_commit == building.head_commit
    assert Task.objects.get(pk=task.pk).head_commit == building.head_commit
    worktree = next(tree_a.iterdir())
    assert "farewell" in (worktree / "greeter.py").read_text()
    # Both machines hold a worktree of the task, and both are recorded for their clean-up.
    assert sorted(TaskWorktree.objects.filter(task=task).values_list("host", flat=True)) == ["machine-a", "machine-b"]


@pytest.mark.django_db(transaction=True)
def test_a_stage_refuses_to_run_when_the_recorded_head_is_not_on_the_origin(mirrored, machines):
    task = _start(mirrored, machines)
    assert machines.run("machine-a", task, "planning").success
    Task.objects.filter(pk=task.pk).update(head_commit="0123456789abcdef0123456789abcdef01234567")
    building = machines.run("machine-b", task, "building")
    assert not building.success
    assert "0123456789ab" in building.error and "not in" in building.error
    assert not StageResult.objects.filter(task=task, stage__name="building", exit_code__isnull=False).exists()  # no agent ran


@pytest.mark.django_db(transaction=True)
def test_a_stage_takes_a_fast_forward_of_the_recorded_head_from_the_origin(mirrored, machines, origin_and_clone, tmp_path):
    task = _start(mirrored, machines)
    assert machines.run("machine-a", task, "planning").success
    building = machines.run("machine-a", task, "building")
    assert building.success, building.error
    task.refresh_from_db()
    # Someone pushes a commit on top of the builder's (e.g. a human on the pull request).
    human = tmp_path / "human"
    git(tmp_path, "clone", "--quiet", "-b", task.branch, str(origin_and_clone[0]), str(human))
    (human / "NOTE.md").write_text("a human was here\n")
    git(human, "add", "-A")
    git(human, "commit", "-q", "-m", "human")
    git(human, "push", "--quiet", "origin", task.branch)
    reviewing = machines.run("machine-a", task, "reviewing")
    assert reviewing.success, reviewing.error
    assert reviewing.base_commit == git(human, "rev-parse", "HEAD")


@pytest.mark.django_db(transaction=True)
def test_every_machine_that_held_a_worktree_of_a_task_removes_its_own(mirrored, machines, settings):
    from datetime import timedelta

    from django.utils import timezone

    from coordinator import reaping
    from coordinator.backoff import Backoff

    task = _start(mirrored, machines)
    assert machines.run("machine-a", task, "planning").success
    assert machines.run("machine-b", task, "building").success
    assert machines.run("machine-a", task, "reviewing").success
    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    trees = {name: machines.tmp_path / name / "trees" for name in ("machine-a", "machine-b")}
    assert all(len(list(root.iterdir())) == 1 for root in trees.values())
    Task.objects.filter(pk=task.pk).update(finished_at=timezone.now() - timedelta(days=2))
    # Machine A ran the last stage; machine B's worktree must not be forgotten.
    machines.use("machine-a")
    assert reaping.clean_one_worktree(backoff=Backoff(), host="machine-a")
    assert not list(trees["machine-a"].iterdir()) and len(list(trees["machine-b"].iterdir())) == 1
    assert Task.objects.get(pk=task.pk).worktree_removed_at is None  # B still holds one
    assert not reaping.clean_one_worktree(backoff=Backoff(), host="machine-a")  # not A's to remove
    machines.use("machine-b")
    assert reaping.clean_one_worktree(backoff=Backoff(), host="machine-b")
    assert not list(trees["machine-b"].iterdir())
    assert Task.objects.get(pk=task.pk).worktree_removed_at is not None
    assert not TaskWorktree.objects.filter(task=task, removed_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_machine_whose_worktree_root_was_lost_records_its_worktree_as_removed(mirrored, machines):
    from datetime import timedelta

    from django.utils import timezone

    from coordinator import reaping
    from coordinator.backoff import Backoff

    task = _start(mirrored, machines)
    assert machines.run("machine-a", task, "planning").success
    services.task_cancel(task=Task.objects.get(pk=task.pk))
    Task.objects.filter(pk=task.pk).update(finished_at=timezone.now() - timedelta(days=2))
    shutil.rmtree(machines.tmp_path / "machine-a" / "trees")  # the machine came back without it
    machines.use("machine-a")
    assert reaping.clean_one_worktree(backoff=Backoff(), host="machine-a")
    assert Task.objects.get(pk=task.pk).worktree_removed_at is not None
