"""Totals per stage, task, repository, provider, model and day, from attempts whose usage comes
from the accounting fixtures (so every figure below is derived, not typed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from pipeline import accounting, budgets
from pipeline.models import Repository, Stage, StageResult, Task
from pipeline.workflow import load_workflow_text
from tests.test_accounting_fixtures import EXPECTED, TOKENS, parse

pytestmark = pytest.mark.django_db

DAY1 = datetime(2031, 3, 4, 10, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
CLAUDE = "claude-2.1.197.partial-messages.jsonl"
CODEX = "codex-0.169.0.two-responses.jsonl"
CODEX_CUMULATIVE = "codex-hand-built.two-turns-cumulative.jsonl"
GEMINI = "gemini-hand-built.cached-input.jsonl"


def record(task: Task, stage_name: str, fixture: str, started_at: datetime) -> StageResult:
    """An attempt whose usage is what the runner stores after running the fixture's agent."""
    usage = parse(fixture)[0].finish(exit_code=0).usage
    stage, _ = Stage.objects.get_or_create(
        task=task, name=stage_name, defaults={"position": task.stages.count(), "provider": EXPECTED[fixture]["provider"]}
    )
    return StageResult.objects.create(
        stage=stage,
        task=task,
        attempt=stage.results.count() + 1,
        outcome="succeeded",
        started_at=started_at,
        completed_at=started_at + timedelta(minutes=2),
        provider=EXPECTED[fixture]["provider"],
        model=usage.model,
        cost_usd=usage.cost_usd.quantize(Decimal("0.000001")),
        **{k: getattr(usage, k) for k in TOKENS},
    )


def expected(*fixtures: str) -> dict:
    rows = [StageResult(**EXPECTED[f]["tokens"]) for f in fixtures]
    return {k: sum(getattr(r, k) for r in rows) for k in TOKENS}


def cost(*fixtures: str) -> Decimal:
    total = Decimal(0)
    for f in fixtures:
        usage = parse(f)[0].finish(exit_code=0).usage
        total += usage.cost_usd.quantize(Decimal("0.000001"))
    return total


@pytest.fixture
def spend():
    alpha = Repository.objects.create(kind="local", full_name="alpha", daily_budget_usd=Decimal("0.05"))
    beta = Repository.objects.create(kind="local", full_name="beta")
    one = Task.objects.create(repository=alpha, issue_number=1, title="one", status="succeeded")
    two = Task.objects.create(repository=beta, issue_number=2, title="two", status="succeeded")
    record(one, "planning", CLAUDE, DAY1)
    record(one, "building", CODEX, DAY1 + timedelta(hours=1))
    record(two, "planning", GEMINI, DAY2)
    record(two, "building", CODEX_CUMULATIVE, DAY2 + timedelta(hours=1))
    return alpha, beta, one, two


def pick(row: dict) -> dict:
    return {k: row[k] for k in TOKENS}


def test_totals_per_provider_and_model_add_up_the_fixtures(spend):
    by_provider = {r["provider"]: r for r in accounting.usage_totals(by=["provider"])}
    assert list(by_provider) == ["claude", "codex", "gemini"]
    assert pick(by_provider["codex"]) == expected(CODEX, CODEX_CUMULATIVE)
    assert by_provider["codex"]["cost_usd"] == cost(CODEX, CODEX_CUMULATIVE)
    assert by_provider["codex"]["attempts"] == 2

    by_model = {r["model"]: r for r in accounting.usage_totals(by=["provider", "model"])}
    assert set(by_model) == {"claude-sonnet-4-5", "gpt-5", "gpt-5-codex", "gemini-2.5-flash"}
    assert pick(by_model["gemini-2.5-flash"]) == expected(GEMINI)
    assert by_model["gpt-5-codex"]["cost_usd"] == cost(CODEX_CUMULATIVE)


def test_totals_per_day_repository_task_and_stage(spend):
    alpha, _, one, two = spend
    days = accounting.usage_totals(by=["day"])
    assert [r["day"] for r in days] == [DAY1.date(), DAY2.date()]
    assert pick(days[0]) == expected(CLAUDE, CODEX) and days[0]["cost_usd"] == cost(CLAUDE, CODEX)

    repos = {r["repository"]: r for r in accounting.usage_totals(by=["repository"])}
    assert pick(repos["beta"]) == expected(GEMINI, CODEX_CUMULATIVE)

    tasks = {r["task"]: r for r in accounting.usage_totals(by=["task"])}
    assert tasks[one.pk]["total_tokens"] == sum(expected(CLAUDE, CODEX).values())

    stages = accounting.task_usage_by_stage(two)
    assert [r["stage"] for r in stages] == ["planning", "building"]
    assert pick(stages[1]) == expected(CODEX_CUMULATIVE)

    start, end = accounting.day_bounds(DAY2.date())
    (only,) = accounting.usage_totals(since=start, until=end)
    assert pick(only) == expected(GEMINI, CODEX_CUMULATIVE)
    (everything,) = accounting.usage_totals()
    assert everything["cost_usd"] == cost(CLAUDE, CODEX, GEMINI, CODEX_CUMULATIVE)
    assert accounting.repository_usage_by_day(alpha)[0]["day"] == DAY1.date()


def test_an_unknown_dimension_is_refused(spend):
    with pytest.raises(ValueError, match="unknown dimension 'colour'"):
        accounting.usage_totals(by=["colour"])


def test_budget_lines_show_spend_against_each_configured_budget(spend):
    _, _, one, _ = spend
    workflow = load_workflow_text("budget: {usd: 0.10}\nstages:\n  - name: planning\n    budget: {tokens: 15000}\n  - name: pr_creation\n")
    Task.objects.filter(pk=one.pk).update(workflow=workflow.to_json())
    one.refresh_from_db()

    lines = {line.scope: line for line in accounting.task_budget_lines(one, now=DAY1 + timedelta(hours=5))}

    assert set(lines) == {"stage", "task", "repository daily"}
    assert lines["stage"].stage == "planning" and lines["stage"].spent_tokens == sum(expected(CLAUDE).values())
    assert lines["stage"].used_up and lines["stage"].fraction > 1  # 16510 tokens of 15000
    assert lines["task"].spent_usd == cost(CLAUDE, CODEX) and not lines["task"].used_up
    assert lines["repository daily"].spent_usd == cost(CLAUDE, CODEX)
    assert lines["repository daily"].fraction == pytest.approx(float(cost(CLAUDE, CODEX) / Decimal("0.05")))
    # Another day: nothing spent against the daily budget yet.
    later = {line.scope: line for line in accounting.task_budget_lines(one, now=DAY2 + timedelta(days=3))}
    assert later["repository daily"].spent_usd == 0
    assert budgets.repository_waiting_reason(one, now=DAY2 + timedelta(days=3)) == ""
