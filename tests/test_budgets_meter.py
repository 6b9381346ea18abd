"""The budget meter and the waiting rule, against the real database (no agent needed): which
spend counts against which budget, the refusal before start, the stop on the event that reaches
a limit, and the daily reset at midnight UTC (pinned clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from pipeline import budgets
from pipeline.models import Repository, Stage, StageResult, Task
from pipeline.providers import Usage
from pipeline.workflow import load_workflow_text

pytestmark = pytest.mark.django_db

NOON = datetime(2031, 5, 6, 12, 0, tzinfo=UTC)
WORKFLOW = """
budget: {usd: 2.00}
stages:
  - name: planning
    budget: {usd: 0.50, tokens: 100000}
  - name: building
  - name: pr_creation
"""


@pytest.fixture
def repo():
    return Repository.objects.create(kind="local", full_name="budgeted")


def started_task(repo: Repository, issue: int = 1, workflow: str = WORKFLOW) -> Task:
    wf = load_workflow_text(workflow)
    task = Task.objects.create(repository=repo, issue_number=issue, title="t", status="running", workflow=wf.to_json())
    for i, cfg in enumerate(wf.stages):
        Stage.objects.create(task=task, name=cfg.name, position=i, provider=cfg.provider, model=cfg.model)
    return task


def attempt(task: Task, stage: str, usd: str = "0", tokens: int = 0, *, outcome: str = "failed", started_at: datetime | None = None) -> StageResult:
    s = task.stages.get(name=stage)
    return StageResult.objects.create(
        stage=s,
        task=task,
        attempt=s.results.count() + 1,
        outcome=outcome,
        cost_usd=Decimal(usd),
        input_tokens=tokens,
        started_at=started_at or NOON,
    )


def meter(task: Task, stage: str = "planning") -> budgets.Meter:
    from pipeline.workflow import Workflow

    workflow = Workflow.from_json(task.workflow)
    return budgets.Meter.for_attempt(task=task, stage_cfg=workflow.stage(stage), workflow=workflow)


def usage(usd: str | None, tokens: int = 0, model: str = "claude-sonnet-4-5") -> Usage:
    return Usage(input_tokens=tokens, cost_usd=None if usd is None else Decimal(usd), model=model)


def test_the_first_event_that_reaches_the_stage_budget_stops_the_agent_with_the_figures(repo):
    task = started_task(repo)
    attempt(task, "planning", outcome="running")  # this attempt
    m = meter(task)

    assert m.refusal() is None
    assert m.check(usage("0.499999", 10)) is None
    stop = m.check(usage("0.50", 20))
    assert stop is not None and stop.outcome == "budget_exceeded"
    assert stop.reason == "budget exceeded: stage budget $0.50 reached ($0.50 spent); this attempt spent $0.50 and 20 tokens"


def test_earlier_attempts_of_the_stage_count_so_a_retry_cannot_spend_the_budget_again(repo):
    task = started_task(repo)
    attempt(task, "planning", "0.30", 40000)
    attempt(task, "planning", outcome="running")
    m = meter(task)

    assert m.check(usage("0.19", 1000)) is None
    assert "stage budget $0.50 reached ($0.50 spent)" in m.check(usage("0.20", 1000)).reason
    # Tokens too: 40000 before + 60000 now reaches 100000.
    assert "stage budget of 100000 tokens reached" in m.check(usage("0.01", 60000)).reason


def test_a_used_up_budget_refuses_the_start(repo):
    task = started_task(repo)
    attempt(task, "planning", "0.50")
    attempt(task, "planning", outcome="running")
    assert meter(task).refusal() == "budget exceeded before start: stage budget $0.50 reached ($0.50 spent)"

    other = started_task(repo, issue=2)
    attempt(other, "building", "2.10", outcome="succeeded")
    assert meter(other, "building").refusal() == "budget exceeded before start: task budget $2.00 reached ($2.10 spent)"


def test_the_task_budget_counts_every_stage_of_the_task(repo):
    task = started_task(repo)
    attempt(task, "planning", "0.45", outcome="succeeded")
    attempt(task, "building", "1.00", outcome="failed")
    attempt(task, "building", outcome="running")
    m = meter(task, "building")  # building has no stage budget of its own

    assert [limit.scope for limit in m.limits] == ["task"]
    assert m.check(usage("0.54")) is None
    assert "task budget $2.00 reached ($2.00 spent)" in m.check(usage("0.55")).reason


def test_daily_budgets_see_what_other_workers_spend_while_the_attempt_runs(repo, settings, monkeypatch):
    settings.TACX = {**settings.TACX, "DAILY_BUDGET_TOKENS": "50000"}
    Repository.objects.filter(pk=repo.pk).update(daily_budget_usd=Decimal(5))
    repo.refresh_from_db()
    task = started_task(repo, workflow="stages:\n  - name: planning\n  - name: pr_creation\n")
    attempt(task, "planning", outcome="running", started_at=datetime.now(UTC))
    m = meter(task)
    assert [limit.scope for limit in m.limits] == ["repository daily", "global daily"]
    assert m.check(usage("0.10", 30000)) is None

    # Another task of another repository spends 25000 tokens meanwhile.
    elsewhere = started_task(Repository.objects.create(kind="local", full_name="other"), issue=9)
    attempt(elsewhere, "planning", "0.05", 25000, started_at=datetime.now(UTC))
    monkeypatch.setattr(budgets, "REFRESH_SECONDS", 0.0)
    stop = m.check(usage("0.10", 30000))
    assert stop is not None and "global daily budget of 50000 tokens reached (55000 tokens spent)" in stop.reason


def test_a_money_budget_with_a_model_that_has_no_price_refuses_rather_than_guesses(repo):
    task = started_task(repo, workflow="stages:\n  - name: planning\n    model: mystery-model-9\n    budget: {usd: 1}\n  - name: pr_creation\n")
    attempt(task, "planning", outcome="running")
    m = meter(task)
    assert "no price is known for model 'mystery-model-9'" in m.refusal()
    stop = m.check(usage(None, 10, model="mystery-model-9"))
    assert stop is not None and stop.outcome == "budget_exceeded"
    # A token budget alone needs no price.
    tokens_only = started_task(repo, issue=3, workflow="stages:\n  - name: planning\n    model: mystery-model-9\n    budget: {tokens: 100}\n  - name: pr_creation\n")
    attempt(tokens_only, "planning", outcome="running")
    assert meter(tokens_only).refusal() is None
    assert meter(tokens_only).check(usage(None, 99, model="mystery-model-9")) is None


def test_a_used_up_daily_budget_makes_tasks_wait_until_midnight_utc(repo, settings):
    Repository.objects.filter(pk=repo.pk).update(daily_budget_usd=Decimal("1.00"))
    repo.refresh_from_db()
    spender = started_task(repo)
    attempt(spender, "planning", "0.60", started_at=NOON - timedelta(hours=2))
    attempt(spender, "building", "0.40", started_at=NOON - timedelta(hours=1))
    waiting = Task.objects.create(repository=repo, issue_number=2, title="next")

    reason = budgets.repository_waiting_reason(waiting, now=NOON)
    assert reason == "repository daily budget used up: $1.00 of $1.00 spent today; waits until 2031-05-07 00:00 UTC"
    assert budgets.repository_waiting_reason(waiting, now=NOON.replace(hour=23, minute=59)) == reason
    assert budgets.repository_waiting_reason(waiting, now=NOON + timedelta(hours=12)) == ""

    # The global daily budget (settings) holds every repository.
    Repository.objects.filter(pk=repo.pk).update(daily_budget_usd=None)
    waiting.refresh_from_db()
    settings.TACX = {**settings.TACX, "DAILY_BUDGET_USD": "0.75"}
    assert budgets.repository_waiting_reason(waiting, now=NOON).startswith("global daily budget used up: $1.00 of $0.75")


@pytest.mark.parametrize(("value", "text"), [("0.5", "$0.50"), ("12", "$12.00"), ("0.123456", "$0.123456"), ("1.2000001", "$1.20")])
def test_money_is_shown_with_cents_and_no_noise(value, text):
    assert budgets.money(Decimal(value)) == text


PAUSING = """
budget: {usd: 2.00, on_exceed: pause}
stages:
  - name: planning
    budget: {usd: 0.50}
  - name: building
    budget: {usd: 1.00, on_exceed: pause}
  - name: pr_creation
"""


def test_a_budget_that_fails_wins_over_one_that_pauses_when_both_are_reached(repo):
    task = started_task(repo, workflow=PAUSING)
    attempt(task, "building", "1.50")  # the task budget has $0.50 left
    attempt(task, "planning", outcome="running")
    m = meter(task, "planning")
    stop = m.check(usage("0.50"))  # planning's $0.50 (fails) and the task's $2.00 (pauses) at once
    assert stop is not None and m.reached.scope == "stage" and not m.reached.pauses
    assert m.reached.spent == budgets.Spend(Decimal("0.50"), 0)


def test_a_pausing_budget_says_so_with_its_figures_at_the_stop_and_before_the_start(repo):
    task = started_task(repo, workflow=PAUSING)
    attempt(task, "building", outcome="running")
    m = meter(task, "building")
    assert m.check(usage("1.20", 5000)) is not None
    assert (m.reached.scope, m.reached.stage_name, m.reached.usd, m.reached.pauses) == ("stage", "building", Decimal("1.00"), True)
    assert m.reached.spent == budgets.Spend(Decimal("1.20"), 5000)
    attempt(task, "building", "1.20")
    m = meter(task, "building")
    assert m.refusal().startswith("budget exceeded before start: stage budget $1.00 reached") and m.reached.pauses


def test_a_raise_is_added_to_its_budget_and_a_daily_raise_counts_on_its_day_only(repo, settings):
    from pipeline.models import BudgetPause

    settings.TACX = {**settings.TACX, "DAILY_BUDGET_USD": "3", "DAILY_BUDGET_ON_EXCEED": "pause"}
    task = started_task(repo, workflow=PAUSING)
    stopped = attempt(task, "building", "1.20", outcome="budget_exceeded")
    building = task.stages.get(name="building")
    for scope, stage_name, when in (("stage", "building", NOON), ("global daily", "", NOON - timedelta(days=1)), ("global daily", "", NOON)):
        BudgetPause.objects.create(
            task=task, stage=building, result=stopped, status="raised", scope=scope, stage_name=stage_name, raise_usd=Decimal("2"), answered_at=when
        )
    limits = {limit.scope: limit for limit in budgets.attempt_limits(task=task, stage_name="building", workflow=load_workflow_text(PAUSING), now=NOON)}
    assert limits["stage"].usd == Decimal("3.00") and limits["task"].usd == Decimal("2.00")  # the task budget was not raised
    assert limits["global daily"].usd == Decimal("5") and limits["global daily"].on_exceed == "pause"  # yesterday's raise is gone
    assert [limits[s].on_exceed for s in ("stage", "task")] == ["pause", "pause"]


@pytest.mark.parametrize(
    "text, usd, tokens",
    [("+2.00", Decimal("2.00"), None), ("+$2", Decimal("2"), None), ("2 usd", Decimal("2"), None), ("+.5", Decimal(".5"), None),
     ("+50000 tokens", None, 50000), ("+50k tokens", None, 50000), ("+1m token", None, 1_000_000)],
)
def test_a_raise_is_read_in_dollars_or_tokens(text, usd, tokens):
    assert budgets.parse_raise(text) == (usd, tokens)


@pytest.mark.parametrize(
    "text, problem",
    [("+lots", "cannot read the amount"), ("+0", "more than zero"), ("+$5 tokens", "both dollars and tokens"), ("+1.5 tokens", "whole numbers"),
     ("+1000000", "is more than"), ("+0.0000001", "at most 6 decimal places"), ("-2", "cannot read the amount")],
)
def test_a_raise_that_cannot_be_read_says_why(text, problem):
    with pytest.raises(ValueError, match=problem):
        budgets.parse_raise(text)


def test_the_estimate_goes_by_the_successful_attempts_of_each_stage_left(repo):
    other = started_task(repo, issue=2, workflow=PAUSING)
    for usd in ("0.40", "0.60"):
        attempt(other, "building", usd, 1000, outcome="succeeded")
    attempt(other, "building", "9.00", outcome="failed")  # a failed attempt does not count
    StageResult.objects.filter(task=other, outcome="succeeded").update(success=True, provider="claude")
    task = started_task(repo, workflow=PAUSING)
    estimate = budgets.rest_estimate(task=task, workflow=load_workflow_text(PAUSING), stage_name="planning")
    assert estimate["stages"] == [
        {"stage": "planning", "usd": None, "tokens": None, "samples": 0, "from": ""},
        {"stage": "building", "usd": "0.500000", "tokens": 1000, "samples": 2, "from": "repository"},
    ]
    assert (estimate["usd"], estimate["tokens"], estimate["unknown"]) == ("0.500000", 1000, ["planning"])
    assert budgets.estimate_sentence(estimate) == "≈ $0.50 (1,000 tokens) for building; unknown for planning (no earlier successful attempt to go by)"


def test_what_the_daily_budgets_do_when_reached_is_checked_where_they_are_configured(repo):
    from django.core.exceptions import ImproperlyConfigured, ValidationError

    from tacx_site import settings as site

    assert site._on_exceed(" Pause ", "TACX_DAILY_BUDGET_ON_EXCEED") == "pause"
    assert site._on_exceed("", "TACX_DAILY_BUDGET_ON_EXCEED") == "fail"
    with pytest.raises(ImproperlyConfigured, match=r"TACX_DAILY_BUDGET_ON_EXCEED must be 'fail' .* or 'pause' .*, got 'ask'"):
        site._on_exceed("ask", "TACX_DAILY_BUDGET_ON_EXCEED")
    repo.daily_budget_on_exceed = "ask"
    with pytest.raises(ValidationError, match="daily_budget_on_exceed"):
        repo.full_clean()
