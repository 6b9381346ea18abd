"""Honest retries and stats: an error that cannot succeed on retry stops the stage at once; a
user's cancel is recorded as a cancel (not a failure) and counted apart in the stats; a stage's
model is the one it really ran."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard import stats
from harness import fake_runner
from pipeline import git, jobs, services
from pipeline.attempt import Attempt, RunResult, finish_attempt
from pipeline.models import Stage, StageResult, Task, Worker
from pipeline.workflow import Workflow, load_workflow_text
from tests.test_runner_processes import command_stage, commit_workflow


def test_git_errors_that_a_retry_cannot_fix_are_permanent():
    assert git.is_permanent("fatal: 'deadbeef' is not a valid branch point.")
    assert git.is_permanent("fatal: not a git repository (or any of the parent directories): .git")
    assert git.is_permanent("fatal: Authentication failed for 'https://github.com/o/r.git/'")
    assert not git.is_permanent("fatal: unable to access 'https://github.com/o/r.git/': Could not resolve host: github.com")
    assert not git.is_permanent("fatal: Unable to create '/repo/.git/index.lock': File exists.")


@pytest.mark.django_db(transaction=True)
def test_a_permanent_error_fails_the_stage_at_its_first_attempt(local_repository, clone):
    planning = command_stage("planning", "plan") | {"max_attempts": 3}
    commit_workflow(clone, [planning, {"name": "pr_creation"}])
    task, _ = services.task_create(repository=local_repository, issue_number=5, title="Plan", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    # What an interrupted demo used to leave behind: a base commit the repository does not have.
    Task.objects.filter(pk=task.pk).update(base_commit="0123456789abcdef0123456789abcdef01234567")
    task = jobs.task_run_inline(task=Task.objects.get(pk=task.pk))
    assert task.status == Task.Status.FAILED
    stage = task.stages.get(name="planning")
    assert (stage.status, stage.attempts, stage.failed_attempts) == ("failed", 1, 1)
    assert StageResult.objects.filter(task=task).count() == 1
    assert "not a valid" in task.status_reason or "invalid reference" in task.status_reason or "is not in" in task.status_reason


@pytest.mark.django_db(transaction=True)
def test_a_transient_failure_is_still_retried_up_to_the_limit(local_repository, clone):
    commit_workflow(clone, [command_stage("planning", "fail") | {"max_attempts": 2}, {"name": "pr_creation"}])
    task, _ = services.task_create(repository=local_repository, issue_number=6, title="Plan", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.FAILED
    assert task.stages.get(name="planning").attempts == 2


def _open_attempt(task: Task, name: str) -> Attempt:
    result = fake_runner.stage_claim(task, name)
    stage = Stage.objects.get(pk=result.stage_id)
    workflow = Workflow.from_json(task.workflow)
    worker = Worker.objects.get(pk=result.worker_id)
    return Attempt(
        stage=stage, task=task, cfg=workflow.stage(name), workflow=workflow, result=result, owner=stage.lease_owner, worker=worker
    )


def test_an_attempt_ended_by_a_cancel_is_a_cancel_and_leaves_the_attempts_alone(local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=8)
    attempt = _open_attempt(task, "planning")
    services.task_cancel(task=task, reason="cancelled by alice")
    # The killed agent's last words were an error: it is still the user's cancel.
    attempt.result.outcome, attempt.result.error = StageResult.Outcome.FAILED, "agent exited with code -15"
    assert finish_attempt(attempt, permanent=False, enqueue_next=False) == RunResult.CANCELLED
    result = StageResult.objects.get(pk=attempt.result.pk)
    assert result.outcome == StageResult.Outcome.CANCELLED and not result.success
    assert "agent exited with code -15" in result.error
    stage = Stage.objects.get(pk=attempt.stage.pk)
    assert (stage.status, stage.failed_attempts) == ("cancelled", 0)
    # Retrying gives the stage its whole attempt budget again.
    services.task_retry(task=Task.objects.get(pk=task.pk), enqueue=False)
    assert Stage.objects.get(pk=stage.pk).status == Stage.Status.QUEUED


def test_stats_count_cancels_apart_and_list_stages_in_pipeline_order(local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=9)
    fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), output_text="# Plan")
    building = fake_runner.stage_claim(task, "building")
    fake_runner.attempt_finish(building, success=False, error="no diff", retry=True)
    cancelled = fake_runner.stage_claim(task, "building")
    StageResult.objects.filter(pk=cancelled.pk).update(outcome=StageResult.Outcome.CANCELLED, completed_at=timezone.now())
    figures = stats.stats_compute(days=1)
    assert [r.key for r in figures.by_stage] == ["planning", "building"]  # not alphabetical
    building_rate = figures.by_stage[1]
    assert (building_rate.attempts, building_rate.succeeded, building_rate.cancelled) == (1, 0, 1)
    assert building_rate.rate == 0.0


def test_stats_count_a_branch_pushed_to_a_local_origin_as_a_result(local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=10)
    for name in ("planning", "building", "reviewing", "pr_creation"):
        fake_runner.attempt_finish(fake_runner.stage_claim(task, name), output_text="ok", verdict="APPROVE" if name == "reviewing" else "")
    Task.objects.filter(pk=task.pk).update(triggered_at=timezone.now() - timedelta(minutes=2))
    assert Task.objects.get(pk=task.pk).status == Task.Status.SUCCEEDED
    figures = stats.stats_compute(days=1)
    assert (figures.results, figures.pull_requests, figures.branches) == (1, 0, 1)
    assert figures.median_trigger_to_pr_seconds is not None and figures.median_trigger_to_pr_seconds >= 100


def test_a_command_stage_does_not_inherit_the_default_claude_model():
    workflow = load_workflow_text(
        "stages:\n  - name: planning\n    provider: command\n    options: {argv: [echo, hi]}\n"
        "  - name: building\n  - name: pr_creation\n"
    )
    assert workflow.stage("planning").model == ""
    assert workflow.stage("building").model == "claude-sonnet-4-5"  # same provider: inherited
    codex = load_workflow_text("stages:\n  - name: planning\n    provider: codex\n  - name: pr_creation\n")
    assert codex.stage("planning").model == ""




def test_the_task_page_does_not_count_a_cancelled_attempt_against_the_limit(client, alice, local_repository):
    from django.urls import reverse

    task = fake_runner.task_running(repository=local_repository, issue_number=11)
    attempt = _open_attempt(task, "planning")
    services.task_cancel(task=task, reason="cancelled by alice")
    attempt.result.outcome = StageResult.Outcome.CANCELLED
    finish_attempt(attempt, permanent=False, enqueue_next=False)
    services.task_retry(task=Task.objects.get(pk=task.pk), enqueue=False)
    client.force_login(alice)
    html = client.get(reverse("dashboard:task-summary", args=[task.pk])).content.decode()
    planning = html.split('data-stage="planning"')[1].split("</li>")[0]
    assert "attempts 0/3" in planning
