"""A whole run: a labelled issue on the stand-in becomes a task, the stages run (command-provider
agents in a real git worktree), the branch is pushed to the bare origin, the pull request is
opened with "Closes #N", and the progress comment is edited in place through every stage."""

from __future__ import annotations

import subprocess

import pytest
from github_standin import TOKEN, command_workflow, github_repo, standin  # noqa: F401

from coordinator.loop import Coordinator
from pipeline import attempt
from pipeline.github import GitHubClient
from pipeline.models import Repository, Stage, StageResult, Task
from tests.conftest import point_claude_at


def run_to_the_end(coordinator: Coordinator, task: Task) -> None:
    """Alternate coordinator cycles with the stage jobs django-q2 would run."""
    for _ in range(20):
        coordinator.run_once()
        stage = Stage.objects.filter(task=task, status=Stage.Status.QUEUED).order_by("position").first()
        if stage is None:
            task.refresh_from_db()
            if not task.is_active:
                coordinator.run_once()  # the final edit of the comment
                return
            continue
        attempt.run_stage(stage.pk, enqueue_next=False)
    raise AssertionError("the task did not finish")


def issue_run(standin, *, number: int = 12, client: GitHubClient | None = None) -> tuple[Task, Coordinator]:  # noqa: F811
    """Issue ``number`` of octo/sample labelled for TAC-X on the stand-in, then coordinator cycles
    (with ``client``, else its own) and the stage jobs until the task ends; the task and the
    coordinator."""
    standin.add_issue("octo/sample", number=number, title="Add a changelog", labels=("rpi-auto",), labeled_by="alice")
    coordinator = Coordinator(client=client, tick=0)
    coordinator.comments.min_edit_seconds = 0
    coordinator.run_once()
    task = Task.objects.get()
    run_to_the_end(coordinator, task)
    task.refresh_from_db()
    return task, coordinator


def labelled_issue_run(standin, clone_url: str, number: int) -> Task:  # noqa: F811
    """octo/sample registered (cloned from ``clone_url``), then ``issue_run``; the task."""
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=clone_url, default_branch="main")
    return issue_run(standin, number=number)[0]


def test_a_labelled_issue_ends_as_a_pull_request_with_the_progress_comment_edited_throughout(github_repo, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=12, title="Add a changelog", body="We need CHANGES.md.", labels=("rpi-auto",), labeled_by="alice")
    coordinator = Coordinator(client=GitHubClient(base_url=standin.url, token=TOKEN), tick=0)
    coordinator.comments.min_edit_seconds = 0
    coordinator.run_once()
    task = Task.objects.get()
    assert task.status == Task.Status.RUNNING

    run_to_the_end(coordinator, task)

    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert StageResult.objects.filter(task=task, success=True).count() == 4

    (pull,) = standin.pulls_of("octo/sample")
    assert pull["head"]["ref"] == task.branch and pull["base"]["ref"] == "main" and pull["draft"] is True
    assert pull["body"].startswith("Closes #12")
    assert task.pr_url == pull["html_url"] and task.pr_number == pull["number"]

    origin = github_repo.clone_url
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", task.branch], cwd=origin, capture_output=True, text=True, check=True).stdout.split()
    assert "CHANGES.md" in files and "plan.md" not in files

    (comment,) = standin.comments_on("octo/sample", 12)
    history = comment["history"]
    assert all(body.startswith(f"<!-- tacx:task:{task.pk} -->") for body in history)
    assert len(history) == len(set(history))  # every edit changed something
    for name in ("planning", "building", "reviewing", "pr_creation"):
        assert any(f"| {name} | 🔄 running" in body or f"| {name} | ⏳ queued" in body for body in history), name
        assert any(f"| {name} | ✅ succeeded" in body for body in history), name
    final = history[-1]
    assert "**succeeded**" in final and pull["html_url"] in final
    assert f"https://tacx.example/tasks/{task.pk}/" in final
    # TAC-X's own comments changed the issue, yet no second task was started from them.
    coordinator.run_once()
    assert Task.objects.count() == 1


def test_a_rerun_of_pr_creation_updates_the_same_pull_request(github_repo, standin):  # noqa: F811
    Repository.objects.filter(pk=github_repo.pk).update(draft_prs=False)
    standin.add_issue("octo/sample", number=3, labels=("rpi-auto",), labeled_by="alice")
    coordinator = Coordinator(client=GitHubClient(base_url=standin.url, token=TOKEN), tick=0)
    coordinator.run_once()
    task = Task.objects.get()
    run_to_the_end(coordinator, task)
    # pr_creation runs again (say its first worker died after GitHub opened the PR).
    Task.objects.filter(pk=task.pk).update(status=Task.Status.RUNNING, finished_at=None)
    stage = Stage.objects.get(task=task, name="pr_creation")
    Stage.objects.filter(pk=stage.pk).update(status=Stage.Status.QUEUED)
    assert attempt.run_stage(stage.pk, enqueue_next=False) == attempt.RunResult.SUCCEEDED
    (pull,) = standin.pulls_of("octo/sample")
    assert len(pull["history"]) == 2 and pull["draft"] is False


@pytest.mark.parametrize("stages", [("planning", "building", "reviewing", "pr_creation")])
def test_the_workflow_helper_makes_a_valid_workflow(stages):
    from pipeline.workflow import load_workflow_text

    workflow = load_workflow_text(command_workflow(stages=stages))
    assert [s.name for s in workflow.stages] == list(stages)


@pytest.mark.cli
@pytest.mark.slow
def test_the_whole_run_with_the_real_claude_cli_against_the_scripted_model_server(db, standin, tmp_path, monkeypatch):  # noqa: F811
    """The same run with the bundled default workflow: Claude Code from node_modules plays the
    demo script served on loopback, really writing plan.md and committing in the worktree."""
    import yaml
    from conftest import ROOT, make_origin_and_clone

    from harness.modelserver import ScriptedModelServer

    origin, _ = make_origin_and_clone(tmp_path)  # demo/sample-repo: no workflow file, the default applies
    repo = Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=str(origin))
    standin.add_issue("octo/sample", number=21, title="Add a farewell", body="Please add farewell(name).", labels=("rpi-auto",), labeled_by="mo")
    with ScriptedModelServer(yaml.safe_load((ROOT / "demo" / "script.yaml").read_text())) as server:
        point_claude_at(monkeypatch, server)
        coordinator = Coordinator(client=GitHubClient(base_url=standin.url, token=TOKEN), tick=0)
        coordinator.comments.min_edit_seconds = 0
        coordinator.run_once()
        task = Task.objects.get(repository=repo)
        run_to_the_end(coordinator, task)
    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert StageResult.objects.filter(task=task, stage__name="planning", success=True, provider="claude").exists()
    (pull,) = standin.pulls_of("octo/sample")
    assert pull["body"].startswith("Closes #21")
    (comment,) = standin.comments_on("octo/sample", 21)
    assert "**succeeded**" in comment["body"] and len(comment["history"]) >= 5
