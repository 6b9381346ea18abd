"""Retrying a cancelled task while its agent is still being stopped, and retrying a skipped task.

The race of issue 9 (item 1), driven deterministically with a real agent process that ignores
SIGTERM: the retry arrives while the runner waits out the kill grace (the agent noted the
SIGTERM), or before the runner noticed the cancel at all. Either way the retry must not leave a
running task with no stage queued, nor undo the cancel behind the user's back.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from pipeline import attempt, jobs, services
from pipeline.agent_process import group_alive
from pipeline.models import Stage, StageResult, Task
from tests.conftest import wait_for
from tests.test_runner_processes import command_stage, commit_workflow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _unsandboxed(settings):
    """The race needs an agent that outlives SIGTERM for the kill grace. Inside the agent sandbox
    nothing does: the signal ends bubblewrap and its PID namespace with every process in it, at
    once. The retry/cancel logic under test is the same either way."""
    settings.TACX = {**settings.TACX, "SANDBOX": "off"}


def start_stubborn_task(local_repository, clone, tmp_path) -> tuple[Task, object]:
    marker = tmp_path / "agent-started"
    commit_workflow(clone, [command_stage("planning", "stubborn", str(marker), timeout=120), {"name": "pr_creation"}])
    task, _ = services.task_create(repository=local_repository, issue_number=11, title="Stubborn", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return task, marker


def run_planning_in_thread(task: Task) -> tuple[threading.Thread, dict]:
    outcome: dict = {}
    stage = task.stages.get(name="planning")

    def work() -> None:
        try:
            outcome["result"] = attempt.run_stage(stage.pk, enqueue_next=False)
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, outcome


def test_a_retry_while_the_agent_ignores_sigterm_is_refused_and_a_later_one_runs_the_stage(local_repository, clone, tmp_path, settings):
    settings.TACX = {**settings.TACX, "KILL_GRACE_SECONDS": 3.0}
    task, marker = start_stubborn_task(local_repository, clone, tmp_path)
    thread, outcome = run_planning_in_thread(task)
    wait_for(marker.exists, "the agent start", timeout=15)
    assert services.task_cancel(task=Task.objects.get(pk=task.pk), reason="cancelled by a test")
    # Not yet noticed by the runner (it looks once per heartbeat tick), or noticed and waiting
    # out the grace: the stage is running in both cases and the retry is refused.
    with pytest.raises(ValueError, match="still being stopped"):
        services.task_retry(task=Task.objects.get(pk=task.pk), enqueue=False)
    wait_for(marker.with_name(marker.name + ".term").exists, "the SIGTERM", timeout=15)
    with pytest.raises(ValueError, match="still being stopped"):
        services.task_retry(task=Task.objects.get(pk=task.pk), enqueue=False)
    thread.join(60)
    assert outcome["result"] == attempt.RunResult.CANCELLED
    assert not group_alive(int(marker.read_text()))
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED  # the cancel was not undone

    services.task_retry(task=task, enqueue=False)
    task.refresh_from_db()
    assert task.status == Task.Status.RUNNING
    assert task.stages.get(name="planning").status == Stage.Status.QUEUED
    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason


def test_a_task_made_running_again_while_its_cancelled_attempt_ends_gets_its_stage_queued(local_repository, clone, tmp_path, settings):
    settings.TACX = {**settings.TACX, "KILL_GRACE_SECONDS": 3.0}
    task, marker = start_stubborn_task(local_repository, clone, tmp_path)
    thread, outcome = run_planning_in_thread(task)
    wait_for(marker.exists, "the agent start", timeout=15)
    services.task_cancel(task=Task.objects.get(pk=task.pk))
    wait_for(marker.with_name(marker.name + ".term").exists, "the SIGTERM", timeout=15)
    # Any path that bypasses task_retry's guard (an admin edit, an older process).
    Task.objects.filter(pk=task.pk).update(status=Task.Status.RUNNING, finished_at=None)
    thread.join(60)
    assert outcome["result"] == attempt.RunResult.REQUEUED
    planning = task.stages.get(name="planning")
    assert planning.status == Stage.Status.QUEUED and planning.failed_attempts == 0
    assert StageResult.objects.get(stage=planning).outcome == StageResult.Outcome.CANCELLED


def test_a_skipped_task_cannot_be_retried(local_repository):
    skipped = services.task_skip(repository=local_repository, issue_number=5, title="x", reason="mallory cannot write")
    with pytest.raises(ValueError, match="skipped"):
        services.task_retry(task=skipped, enqueue=False)
    skipped.refresh_from_db()
    assert skipped.status == Task.Status.SKIPPED and not skipped.stages.exists()
