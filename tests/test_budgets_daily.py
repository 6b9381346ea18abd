"""A repository's daily budget, used up by a real Claude Code run (which it stops), holds its new tasks `waiting`
with the reason until the next UTC day (clock pinned), through the coordinator's dispatch."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from coordinator.dispatch import Dispatcher
from pipeline import accounting, budgets, jobs, services
from pipeline.models import AgentEvent, Repository, StageResult, Task
from tests.conftest import commit_workflow, point_claude_at

pytestmark = [pytest.mark.cli, pytest.mark.django_db(transaction=True)]

SCRIPT = {
    "conversations": [
        {
            "name": "planning",
            "turns": [
                {"tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n\nSay hello.\n"}}], "usage": {"input_tokens": 5000, "output_tokens": 500}},
                {"text": "Planned.", "usage": {"input_tokens": 5100, "output_tokens": 20}},
            ],
        }
    ]
}


@pytest.fixture
def model_server(monkeypatch, start_model_server):
    server = start_model_server(SCRIPT)
    point_claude_at(monkeypatch, server)
    return server


def pin_clock(monkeypatch, when) -> None:
    monkeypatch.setattr(timezone, "now", lambda: when)


def test_a_used_up_daily_budget_holds_new_tasks_until_the_next_day(local_repository, origin_and_clone, model_server, monkeypatch):
    _, clone = origin_and_clone
    commit_workflow(clone, "stages:\n  - name: planning\n  - name: pr_creation\n")
    Repository.objects.filter(pk=local_repository.pk).update(daily_budget_usd=Decimal("0.02"))
    first, _ = services.task_create(repository=local_repository, issue_number=1, title="Say hello", trigger_source="cli")
    services.task_dispatch(task=first, enqueue=False)
    first = jobs.task_run_inline(task=first)
    # The run itself is stopped by the daily budget on its first turn ($0.0225 at Sonnet prices).
    assert first.status == Task.Status.BUDGET_EXCEEDED
    assert "repository daily budget $0.02 reached ($0.0225 spent)" in first.status_reason
    spent = StageResult.objects.get(task=first, stage__name="planning")

    today = spent.started_at
    pin_clock(monkeypatch, today + timedelta(seconds=1))
    second, _ = services.task_create(repository=local_repository, issue_number=2, title="Say goodbye", trigger_source="cli")
    dispatcher = Dispatcher(waiting_recheck=0)
    while dispatcher.dispatch_one_task():
        pass
    second.refresh_from_db()
    assert second.status == Task.Status.WAITING
    tomorrow = budgets.next_day(today)
    assert second.status_reason == (
        f"repository daily budget used up: {budgets.money(spent.cost_usd)} of $0.02 spent today; waits until {tomorrow:%Y-%m-%d} 00:00 UTC"
    )
    assert AgentEvent.objects.filter(task=second, data__message=f"waiting: {second.status_reason}").exists()
    (line,) = accounting.task_budget_lines(second, now=today)
    assert line.scope == "repository daily" and line.used_up and line.spent_usd == spent.cost_usd

    pin_clock(monkeypatch, tomorrow + timedelta(seconds=1))
    assert budgets.repository_waiting_reason(second) == ""
    while dispatcher.dispatch_one_task():
        pass
    second.refresh_from_db()
    assert second.status == Task.Status.RUNNING and second.status_reason == ""
    assert second.started_at == tomorrow + timedelta(seconds=1)


@pytest.mark.django_db
def test_the_pr_body_and_the_progress_comment_show_spend_against_budget(local_repository):
    from decimal import Decimal as D

    from coordinator.progress import progress_body
    from pipeline import services
    from pipeline.models import StageResult
    from pipeline.pulls import pull_request_body
    from pipeline.workflow import load_workflow_text

    local_repository.daily_budget_usd = D("2.50")
    local_repository.save()
    task, _ = services.task_create(repository=local_repository, issue_number=5, title="Budgeted")
    services.task_start(task=task, workflow=load_workflow_text("budget: {usd: 1.25}\n"), enqueue=False)
    stage = task.stages.get(name="planning")
    StageResult.objects.create(stage=stage, task=task, attempt=1, outcome="succeeded", success=True, cost_usd=D("0.40"), input_tokens=1000)
    for text in (pull_request_body(task), progress_body(task)):
        assert "| task | 0.4000 | 1.2500 | 1,000 | — |" in text
        assert "| repository daily | 0.4000 | 2.5000 |" in text
