"""How the runner treats the agent process: timeouts kill the whole group, malformed output is
kept and never stops a stage, a non-zero exit is a failed attempt, every attempt is saved.

These tests drive a small real program through the `command` provider; the agent CLIs
themselves are exercised in test_pipeline_claude.py.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from pipeline import jobs, services
from pipeline.agent_process import group_alive
from pipeline.models import AgentEvent, StageResult, Task
from tests import conftest
from tests.conftest import git, processes_matching

AGENT = str(Path(__file__).parent / "agents" / "scripted_agent.py")


def command_stage(name: str, *args: str, timeout: int = 60, fmt: str = "claude-stream-json") -> dict:
    return {
        "name": name,
        "provider": "command",
        "timeout": timeout,
        "max_attempts": 1,
        "options": {"argv": [sys.executable, AGENT, *args], "format": fmt},
    }


def commit_workflow(clone: Path, stages: list[dict], **extra) -> None:
    publish = {} if any(s.get("name") == "pr_creation" for s in stages) else {"publish": "none"}
    conftest.commit_workflow(clone, yaml.safe_dump({"stages": stages, **publish, **extra}))


def run(repository, title: str = "Add farewell") -> Task:
    task, _ = services.task_create(repository=repository, issue_number=7, title=title, body="Please.", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return jobs.task_run_inline(task=task)


@pytest.mark.django_db(transaction=True)
def test_a_successful_pipeline_records_every_stage_and_pushes_the_branch(local_repository, clone, origin_and_clone):
    commit_workflow(
        clone,
        [command_stage("planning", "plan"), command_stage("building", "build"), command_stage("reviewing", "review"), {"name": "pr_creation"}],
    )
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    results = list(StageResult.objects.filter(task=task).order_by("id"))
    assert [(r.stage.name, r.outcome, r.success) for r in results] == [
        ("planning", "succeeded", True),
        ("building", "succeeded", True),
        ("reviewing", "succeeded", True),
        ("pr_creation", "succeeded", True),
    ]
    assert results[0].output_text.startswith("# Plan")
    assert results[2].verdict == "APPROVE"
    # The branch reached the bare origin with the builder's change and without the plan file.
    origin = origin_and_clone[0]
    files = git(origin, "ls-tree", "-r", "--name-only", task.branch).split()
    assert "greeter.py" in files and "plan.md" not in files and "review.md" not in files
    assert "farewell" in git(origin, "show", f"{task.branch}:greeter.py")
    assert "Closes #" not in results[3].output_text  # a local repository: no forge keyword


@pytest.mark.django_db(transaction=True)
def test_a_hanging_agent_is_killed_at_its_timeout_with_its_whole_process_group(local_repository, clone, tmp_path):
    tag = f"hang-{uuid.uuid4().hex}"
    commit_workflow(clone, [command_stage("planning", "hang", tag, timeout=2), {"name": "pr_creation"}])
    started = time.monotonic()
    task = run(local_repository)
    elapsed = time.monotonic() - started
    result = StageResult.objects.get(task=task)
    assert result.outcome == StageResult.Outcome.TIMED_OUT
    assert result.error == "timed out after 2 s"
    assert task.status == Task.Status.FAILED and "timed out after 2 s" in task.status_reason
    assert AgentEvent.objects.filter(result=result, kind="system", data__subtype="hanging").exists()
    assert not group_alive(result.worker.pgid), "a process of the agent's group survived"
    assert processes_matching(tag) == [], "a process the agent started survived"
    assert elapsed < 20


@pytest.mark.django_db(transaction=True)
def test_a_malformed_line_is_kept_as_a_raw_event_and_the_stage_goes_on(local_repository, clone):
    commit_workflow(clone, [command_stage("planning", "malformed")])
    task = run(local_repository)
    result = StageResult.objects.get(task=task)
    assert result.success, result.error
    raws = AgentEvent.objects.filter(result=result, kind="raw")
    assert any("this is not json" in e.data.get("line", "") for e in raws)
    assert AgentEvent.objects.filter(result=result, kind="result").exists()  # parsing went on after it


@pytest.mark.django_db(transaction=True)
def test_a_non_zero_exit_is_a_saved_failed_attempt(local_repository, clone):
    commit_workflow(clone, [command_stage("planning", "fail", fmt="text")])
    task = run(local_repository)
    result = StageResult.objects.get(task=task)
    assert (result.outcome, result.exit_code, result.success) == ("failed", 3, False)
    assert "3" in result.error and "something broke" in result.error
    assert task.status == Task.Status.FAILED


@pytest.mark.django_db(transaction=True)
def test_a_stage_that_leaves_no_evidence_fails_with_the_reason(local_repository, clone):
    commit_workflow(clone, [command_stage("planning", "nothing")])
    task = run(local_repository)
    result = StageResult.objects.get(task=task)
    assert not result.success
    assert result.error == "planning left no plan: plan.md is missing or empty in the worktree"


@pytest.mark.django_db(transaction=True)
def test_an_invalid_workflow_fails_the_task_before_any_agent_starts(local_repository, clone):
    (clone / ".tac").mkdir()
    (clone / ".tac" / "workflow.yaml").write_text("stages:\n  - name: planning\n    provider: claude\n    timeout: -1\n")
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "bad workflow")
    task = run(local_repository)
    assert task.status == Task.Status.FAILED
    assert task.status_reason == "invalid workflow: .tac/workflow.yaml: stages[0] (planning).timeout: must be >= 1, got -1"
    assert not StageResult.objects.exists() and not task.stages.exists()


@pytest.mark.django_db(transaction=True)
def test_a_hostile_title_stays_inside_the_worktree_root(local_repository, clone, settings):
    commit_workflow(clone, [command_stage("planning", "plan")])
    task = run(local_repository, title="$(touch /tmp/pwned) ../../etc/passwd; `id` && rm -rf ~ <!-- hidden -->")
    root = Path(settings.TACX["WORKTREE_ROOT"]).resolve()
    assert Path(task.worktree_path).parent == root
    assert task.branch.startswith("tacx/7-") and ".." not in task.branch
    assert all(c.isalnum() or c in "/-" for c in task.branch)
    assert "hidden" not in task.title
    assert StageResult.objects.get(task=task).success
    assert not Path("/tmp/pwned").exists()


@pytest.mark.django_db(transaction=True)
def test_the_agent_never_sees_the_forge_token_and_transcripts_are_redacted(local_repository, clone, tmp_path, monkeypatch):
    from pipeline.lib import redaction

    secret = "ghp_" + "Zz9" * 12
    monkeypatch.setenv("GITHUB_TOKEN", secret)
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "hook-secret-value-123")
    redaction.refresh_literal_secrets()
    commit_workflow(clone, [command_stage("planning", "env", "env.json", fmt="text")])
    task = run(local_repository)
    assert StageResult.objects.get(task=task).success
    env = json.loads((Path(task.worktree_path) / "env.json").read_text())
    assert "GITHUB_TOKEN" not in env and "GITHUB_WEBHOOK_SECRET" not in env
    assert secret not in json.dumps(env)
    stored = json.dumps(list(AgentEvent.objects.filter(task=task).values_list("data", flat=True)))
    assert "ghp_A1b2" not in stored and "[REDACTED]" in stored


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_task_kills_its_agent_and_records_the_attempt(local_repository, clone, tmp_path):
    import threading

    from django.db import connection

    tag = f"hang-{uuid.uuid4().hex}"
    commit_workflow(clone, [command_stage("planning", "hang", tag, timeout=60), {"name": "pr_creation"}])
    task, _ = services.task_create(repository=local_repository, issue_number=9, title="Hang", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)

    def cancel_when_started() -> None:
        try:
            for _ in range(100):
                if len(processes_matching(tag)) >= 2:  # the agent and its child run
                    break
                time.sleep(0.1)
            services.task_cancel(task=Task.objects.get(pk=task.pk), reason="cancelled by a test")
        finally:
            connection.close()

    canceller = threading.Thread(target=cancel_when_started)
    canceller.start()
    started = time.monotonic()
    task = jobs.task_run_inline(task=task)
    canceller.join()
    assert time.monotonic() - started < 15
    result = StageResult.objects.get(task=task)
    assert result.outcome == StageResult.Outcome.CANCELLED and "cancelled" in result.error
    assert task.status == Task.Status.CANCELLED
    assert [s.status for s in task.stages.order_by("position")] == ["cancelled", "cancelled"]
    assert not group_alive(result.worker.pgid)
    assert processes_matching(tag) == []
