"""A stage of a local repository fetches into the mirror only when the mirror lacks what it
starts from (issue 23: a fetch of the user's repository before every stage was a tenth of the
pipeline's overhead and found nothing new). GitHub repositories still fetch before every stage:
a person may have pushed to the branch since. Real git, command-provider agents, no sandbox."""

from __future__ import annotations

import subprocess

import pytest

from pipeline import repos
from pipeline.models import Repository, Task
from tests.conftest import git
from tests.test_runner_processes import command_stage, commit_workflow, run


@pytest.fixture(autouse=True)
def _unsandboxed(settings):
    settings.TACX = {**settings.TACX, "SANDBOX": "off"}


@pytest.fixture
def clone(origin_and_clone):
    return origin_and_clone[1]


@pytest.mark.django_db(transaction=True)
def test_only_the_first_stage_of_a_local_task_fetches_and_a_missing_head_fetches_again(local_repository, clone, monkeypatch):
    commit_workflow(
        clone,
        [
            command_stage("planning", "plan"),
            command_stage("building", "build"),
            command_stage("reviewing", "review"),
            {"name": "pr_creation"},
        ],
    )
    fetches: list[bool] = []
    source_dir = repos.source_dir

    def recording(repository, *, fetch=True):
        fetches.append(fetch)
        return source_dir(repository, fetch=fetch)

    monkeypatch.setattr(repos, "source_dir", recording)
    processes: list[str] = []
    spawn = subprocess.run

    def counting(args, *a, **k):
        if args and args[0] == "git":
            processes.append(next(x for x in args[1:] if not x.startswith("-") and "=" not in x))
        return spawn(args, *a, **k)

    monkeypatch.setattr(subprocess, "run", counting)
    task = run(local_repository)
    monkeypatch.setattr(subprocess, "run", spawn)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    # task_dispatch reads the workflow (a fetch); then planning fetches (no base commit yet);
    # building, reviewing and pr_creation start from heads the mirror already holds.
    assert fetches[:2] == [True, True] and not any(fetches[2:]), fetches
    assert git(clone, "rev-parse", f"refs/heads/{task.branch}") == task.head_commit
    # The mirror's git directory is asked once, not before every stage and push (pin_worktree).
    # Git processes of the whole task, counted: before issue 23 this run took 88 (31 rev-parse,
    # 7 fetches: one per stage into the mirror, and `pin_worktree` asking for the mirror's git
    # directory before every stage and push); 79 since (the workflow read, planning, two pushes).
    assert processes.count("fetch") == 4, processes
    assert processes.count("rev-parse") <= 22 and len(processes) <= 79, (processes.count("rev-parse"), len(processes), processes)

    # A head the mirror lacks (pushed to the user's repository from elsewhere): fetched.
    assert repos.stage_needs_fetch(local_repository, task) is False
    git(clone, "checkout", "-q", task.branch)
    (clone / "elsewhere.txt").write_text("pushed from another machine\n")
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "elsewhere")
    task.head_commit = git(clone, "rev-parse", "HEAD")
    assert repos.stage_needs_fetch(local_repository, task) is True
    mirror = repos.source_dir(local_repository, fetch=True)
    assert git(mirror, "cat-file", "-t", task.head_commit) == "commit"
    assert repos.stage_needs_fetch(local_repository, task) is False


@pytest.mark.django_db
def test_a_github_repository_and_a_first_stage_always_fetch():
    repository = Repository(kind=Repository.Kind.GITHUB, full_name="octo/sample")
    assert repos.stage_needs_fetch(repository, Task(base_commit="a" * 40, head_commit="a" * 40)) is True
    local = Repository(kind=Repository.Kind.LOCAL, full_name="sample", local_path="/nonexistent")
    assert repos.stage_needs_fetch(local, Task(base_commit="", head_commit="")) is True
    assert repos.stage_needs_fetch(local, Task(base_commit="a" * 40, head_commit="a" * 40)) is True  # no mirror yet
