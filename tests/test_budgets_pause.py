"""Budgets that pause and ask (`on_exceed: pause`), through the real pipeline: a looping agent
(tests/agents/scripted_agent.py `spend`, run by the `command` provider in the sandbox with Claude's
stream format, priced as claude-sonnet-4-5) reaches its budget; the task pauses with the work
committed and pushed to a real origin; a raise runs the stage again on the kept work with a note
in its prompt (this provider cannot resume a session); a stop or the pause's time ends the task;
a worker that dies while pausing is reaped into the pause, not into a retry; a cancel closes it.
The real `claude` CLI resuming its session is tests/test_budgets_pause_claude.py."""

from __future__ import annotations

import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from django.utils import timezone

from pipeline import alerts, jobs, services
from pipeline.attempt import RunResult, run_stage
from pipeline.models import AgentEvent, BudgetPause, Stage, StageResult, Task
from tests.conftest import commit_workflow, git

pytestmark = pytest.mark.django_db(transaction=True)

AGENT = str(Path(__file__).parent / "agents" / "scripted_agent.py")
STEP = Decimal("0.45")  # one `spend` step: 100,000 input + 10,000 output tokens of claude-sonnet-4-5


def workflow(budget: dict | None, *, steps: int = 5, where: str = "stage") -> str:
    building = {
        "name": "building",
        "provider": "command",
        "model": "claude-sonnet-4-5",
        "timeout": 60,
        "max_attempts": 2,
        "options": {"argv": [sys.executable, AGENT, "spend", str(steps), "0.4"], "format": "claude-stream-json"},
    }
    data: dict = {"stages": [building, {"name": "pr_creation"}]}
    if budget is not None:
        (building if where == "stage" else data)["budget"] = budget
    return yaml.safe_dump(data)


@pytest.fixture
def alerted(monkeypatch):
    sent: list[alerts.Alert] = []
    monkeypatch.setattr(alerts, "deliver", sent.append)
    return sent


def start(repository, text: str) -> Task:
    commit_workflow(Path(repository.local_path), text)
    task, _ = services.task_create(repository=repository, issue_number=7, title="Loop and spend", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return jobs.task_run_inline(task=task)


def paused_task(local_repository) -> Task:
    task = start(local_repository, workflow({"usd": "1.00", "on_exceed": "pause"}))
    assert task.status == Task.Status.PAUSED, task.status_reason
    return task


def test_a_pausing_budget_stops_the_agent_keeps_its_work_and_parks_the_task(local_repository, origin_and_clone, alerted):
    origin, _ = origin_and_clone
    task = paused_task(local_repository)

    (result,) = StageResult.objects.filter(task=task)
    assert result.outcome == "budget_exceeded" and not result.success
    assert result.cost_usd == 3 * STEP  # stopped on the usage event that reached $1.00, nothing after
    assert result.error.startswith("budget exceeded: stage budget $1.00 reached ($1.35 spent)")
    assert result.error.endswith("the task pauses until a person raises the limit or ends it")
    stage = task.stages.get(name="building")
    assert stage.status == Stage.Status.PAUSED and stage.failed_attempts == 0 and not stage.lease_owner
    assert task.stages.get(name="pr_creation").status == Stage.Status.PENDING
    # The work is committed and pushed, and the task's head is there for the stage to go on from.
    assert git(origin, "show", f"{task.branch}:work.txt").splitlines() == ["step 0", "step 1", "step 2"]
    assert "budget ran out" in git(origin, "log", "-1", "--format=%s", task.branch)
    assert result.head_commit == git(origin, "rev-parse", task.branch) == task.head_commit
    # What was spent, the limit, the estimate and the time it ends, in the record.
    pause = BudgetPause.objects.get(task=task)
    assert pause.status == BudgetPause.Status.WAITING and pause.result == result
    assert (pause.scope, pause.stage_name, pause.limit_usd, pause.spent_usd) == ("stage", "building", Decimal("1.00"), Decimal("1.35"))
    assert pause.spent_tokens == 330_000
    assert pause.estimate["unknown"] == ["building"] and pause.estimate_usd is None  # no successful building yet
    assert timedelta(hours=71) < pause.expires_at - pause.paused_at <= timedelta(hours=72)
    assert task.status_reason.startswith("paused: budget: stage budget $1.00 reached ($1.35 spent)")
    # Suggested: the overshoot ($0.35) plus, with no estimate to go by, the limit once more.
    assert "/tacx budget +1.35" in task.status_reason and "/tacx budget stop" in task.status_reason
    assert AgentEvent.objects.filter(task=task, kind="status", data__task_status="paused", data__budget_pause=pause.pk).exists()
    assert [a.kind for a in alerted] == ["budget_paused"]
    assert "stage budget $1.00 reached" in alerted[0].message


def test_a_raise_runs_the_stage_again_on_the_kept_work_with_a_note_and_it_finishes(local_repository, origin_and_clone, alerted):
    origin, _ = origin_and_clone
    task = paused_task(local_repository)
    stopped = StageResult.objects.get(task=task)

    pause = services.budget_raise(task=task, by="alice", source="dashboard", usd=Decimal("2.00"))
    assert pause.status == BudgetPause.Status.RAISED and pause.raise_usd == Decimal("2.00") and pause.answered_by == "alice"
    task.refresh_from_db()
    assert task.status == Task.Status.RUNNING and task.stages.get(name="building").status == Stage.Status.QUEUED
    with pytest.raises(services.NotPaused):
        services.budget_raise(task=task, by="bob", source="api", usd=Decimal("1"))  # answered once

    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    again = StageResult.objects.get(task=task, stage__name="building", attempt=2)
    assert again.success and again.cost_usd == 2 * STEP and again.resumed_session_id == ""  # the command provider starts cold
    assert "BUDGET PAUSE ANSWERED" in again.prompt and "raised the limit by $2.00" in again.prompt
    assert f"commit {stopped.head_commit[:10]}" in again.prompt
    # It went on from the kept lines instead of starting over, and the branch has all of it.
    assert git(origin, "show", f"{task.branch}:work.txt").splitlines() == [f"step {i}" for i in range(5)]
    assert task.cost_usd == 5 * STEP
    assert [a.kind for a in alerted] == ["budget_paused", "budget_pause_answered"]
    assert "raised by $2.00 by alice (dashboard)" in alerted[1].message


def test_a_raise_that_leaves_the_budget_reached_or_names_the_wrong_unit_is_refused(local_repository):
    task = paused_task(local_repository)
    with pytest.raises(ValueError, match=r"would be \$1.20, still reached \(\$1.35 spent\): raise it by more than \$0.35"):
        services.budget_raise(task=task, by="alice", source="api", usd=Decimal("0.20"))
    with pytest.raises(ValueError, match="has no token limit"):
        services.budget_raise(task=task, by="alice", source="api", tokens=50_000)
    assert Task.objects.get(pk=task.pk).status == Task.Status.PAUSED
    assert BudgetPause.objects.get(task=task).status == BudgetPause.Status.WAITING


def test_a_person_ends_the_paused_task_and_one_alert_says_who(local_repository, alerted):
    task = paused_task(local_repository)
    pause = services.budget_stop(task=task, by="mo", source="github")
    task.refresh_from_db()
    assert pause.status == BudgetPause.Status.STOPPED and pause.answered_by == "mo" and pause.answer_source == "github"
    assert task.status == Task.Status.BUDGET_EXCEEDED and task.finished_at
    assert task.status_reason.startswith("ended at the budget pause by mo: stage budget $1.00 reached")
    assert task.stages.get(name="building").status == Stage.Status.FAILED
    assert task.stages.get(name="pr_creation").status == Stage.Status.CANCELLED
    assert [a.kind for a in alerted] == ["budget_paused", "budget_pause_answered"]  # no second budget_exceeded alert
    with pytest.raises(services.NotPaused, match="not paused by a budget"):
        services.budget_stop(task=task, by="mo", source="github")


def test_an_unanswered_pause_ends_after_its_time(local_repository, settings, alerted):
    task = paused_task(local_repository)
    pause = BudgetPause.objects.get(task=task)
    assert services.budget_pause_expire(now=pause.expires_at - timedelta(seconds=1)) == []
    assert Task.objects.get(pk=task.pk).status == Task.Status.PAUSED

    (ended,) = services.budget_pause_expire(now=pause.expires_at + timedelta(seconds=1))
    task.refresh_from_db()
    assert ended.pk == pause.pk and ended.status == BudgetPause.Status.EXPIRED and ended.answer_source == "timeout"
    assert task.status == Task.Status.BUDGET_EXCEEDED
    assert task.status_reason.startswith("nobody answered the budget pause within 72 h: stage budget $1.00 reached")
    assert alerted[-1].kind == "budget_pause_answered" and len(alerted) == 2


def test_the_coordinator_ends_a_pause_whose_time_is_up(local_repository):
    from coordinator.loop import Coordinator

    task = paused_task(local_repository)
    coordinator = Coordinator(sources={}, tick=0)
    BudgetPause.objects.filter(task=task).update(expires_at=timezone.now() + timedelta(hours=1))
    assert not coordinator.expire_one_pause()
    BudgetPause.objects.filter(task=task).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert coordinator.expire_one_pause()
    assert Task.objects.get(pk=task.pk).status == Task.Status.BUDGET_EXCEEDED


def test_a_cancel_while_paused_closes_the_pause_and_the_stage(local_repository):
    task = paused_task(local_repository)
    with pytest.raises(ValueError, match="is paused at a budget: raise the limit or end it"):
        services.task_retry(task=task)
    assert services.task_cancel(task=task, reason="cancelled by ada")
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED
    assert task.stages.get(name="building").status == Stage.Status.CANCELLED
    assert BudgetPause.objects.get(task=task).status == BudgetPause.Status.CANCELLED
    with pytest.raises(services.NotPaused):
        services.budget_raise(task=task, by="ada", source="api", usd=Decimal("1"))


def test_a_daily_budget_that_pauses_refuses_the_stage_before_it_starts_and_goes_on_when_raised(local_repository):
    """The repository's daily budget (its own `daily_budget_on_exceed`) is used up by another
    task after this one started: its stage is refused at the start, which pauses too (nothing
    ran, so no note); a raise counts for this task, today."""
    commit_workflow(Path(local_repository.local_path), workflow(None, steps=2))
    task, _ = services.task_create(repository=local_repository, issue_number=9, title="Late in the day", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    other = Task.objects.create(repository=local_repository, issue_number=10, title="other", status=Task.Status.SUCCEEDED)
    done = Stage.objects.create(task=other, name="building", position=0, provider="command", status=Stage.Status.SUCCEEDED)
    StageResult.objects.create(task=other, stage=done, attempt=1, outcome="succeeded", success=True, cost_usd=Decimal("0.90"), provider="command")
    type(local_repository).objects.filter(pk=local_repository.pk).update(daily_budget_usd=Decimal("0.90"), daily_budget_on_exceed="pause")

    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.PAUSED, task.status_reason
    refused = StageResult.objects.get(task=task)
    assert refused.outcome == "budget_exceeded" and refused.error.startswith("budget exceeded before start: repository daily budget $0.90 reached ($0.90 spent)")
    pause = BudgetPause.objects.get(task=task)
    assert (pause.scope, pause.stage_name, pause.spent_usd, pause.limit_usd) == ("repository daily", "", Decimal("0.90"), Decimal("0.90"))
    # The estimate goes by the successful attempts on record: the other task's building.
    assert pause.estimate_usd == Decimal("0.90") and pause.estimate["stages"] == [{"stage": "building", "usd": "0.900000", "tokens": 0, "samples": 1, "from": "repository"}]

    services.budget_raise(task=task, by="alice", source="api", usd=Decimal("1.00"))
    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    again = StageResult.objects.get(task=task, attempt=2)
    assert again.success and again.cost_usd == 2 * STEP and "BUDGET PAUSE ANSWERED" not in again.prompt


def test_a_budget_that_fails_still_fails(local_repository):
    task = start(local_repository, workflow({"usd": "1.00"}))
    assert task.status == Task.Status.BUDGET_EXCEEDED and not BudgetPause.objects.exists()
    assert task.stages.get(name="building").status == Stage.Status.FAILED


def test_a_worker_lost_while_pausing_is_reaped_into_the_pause_not_into_a_retry(local_repository, alerted):
    """The worker dies after the meter stopped the agent (the `stopping` record is written) and
    before the attempt was recorded: the reaper closes the attempt and pauses the task."""
    from harness import fake_runner

    commit_workflow(Path(local_repository.local_path), workflow({"usd": "1.00", "on_exceed": "pause"}))
    task, _ = services.task_create(repository=local_repository, issue_number=8, title="Dies while pausing", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    result = fake_runner.stage_claim(task, "building")
    stage = result.stage
    from pipeline import budgets

    reached = budgets.Reached("stage", "building", "pause", Decimal("1.00"), None, budgets.Spend(Decimal("1.35"), 330_000), "stage budget $1.00 reached ($1.35 spent)")
    services.budget_pause_begin(task=task, stage=stage, result=result, reached=reached)
    Stage.objects.filter(pk=stage.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=5))

    (reaped,) = services.stage_reap_expired(enqueue=False)
    reaped.refresh_from_db()
    task.refresh_from_db()
    stage.refresh_from_db()
    assert reaped.pk == result.pk and reaped.outcome == "budget_exceeded"
    assert "the worker was lost while keeping the work" in reaped.error
    assert stage.status == Stage.Status.PAUSED and stage.failed_attempts == 0 and not stage.lease_owner
    assert task.status == Task.Status.PAUSED
    assert BudgetPause.objects.get(task=task).status == BudgetPause.Status.WAITING
    assert not Stage.objects.filter(status__in=[Stage.Status.RUNNING, Stage.Status.QUEUED]).exists()
    assert [a.kind for a in alerted] == ["budget_paused"]


def test_a_paused_stage_is_not_claimed_by_a_late_job(local_repository):
    task = paused_task(local_repository)
    stage = task.stages.get(name="building")
    assert run_stage(stage.pk, enqueue_next=False) == RunResult.NOT_CLAIMED  # a paused stage is not claimed
    assert BudgetPause.objects.get(task=task).status == BudgetPause.Status.WAITING


def test_a_task_cancelled_while_its_worker_died_pausing_ends_cancelled_with_nothing_left_open(local_repository, alerted):
    from harness import fake_runner
    from pipeline import budgets

    commit_workflow(Path(local_repository.local_path), workflow({"usd": "1.00", "on_exceed": "pause"}))
    task, _ = services.task_create(repository=local_repository, issue_number=8, title="Dies while pausing", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    result = fake_runner.stage_claim(task, "building")
    reached = budgets.Reached("stage", "building", "pause", Decimal("1.00"), None, budgets.Spend(Decimal("1.35"), 0), "stage budget $1.00 reached")
    services.budget_pause_begin(task=task, stage=result.stage, result=result, reached=reached)
    services.task_cancel(task=task, reason="cancelled by ada")
    Stage.objects.filter(pk=result.stage_id).update(lease_expires_at=timezone.now() - timedelta(seconds=5))

    services.stage_reap_expired(enqueue=False)
    assert Task.objects.get(pk=task.pk).status == Task.Status.CANCELLED
    assert Stage.objects.get(pk=result.stage_id).status == Stage.Status.CANCELLED
    assert StageResult.objects.get(pk=result.pk).outcome == "budget_exceeded"
    assert BudgetPause.objects.get(task=task).status == BudgetPause.Status.CANCELLED
    assert alerted == []  # it never paused
