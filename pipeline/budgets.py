"""Money and token budgets: per stage, per task, per repository per day, global per day.

Scopes and what counts against them (spend = the ``cost_usd`` and the four token counts of
``StageResult`` rows, running attempts included: the runner stores their live usage as it goes):

* **stage** (workflow ``stages[].budget``): every attempt of that stage of the task, retries and
  review rounds included, so a retried or re-run stage cannot spend its budget twice;
* **task** (workflow ``budget``): every attempt of the task;
* **repository daily** (``Repository.daily_budget_usd`` / ``daily_budget_tokens``) and **global
  daily** (``settings.TACX["DAILY_BUDGET_USD"]`` / ``["DAILY_BUDGET_TOKENS"]``): attempts that
  started that UTC day. A budget is used up once spend reaches it.

Before an agent starts, ``Meter.refusal()`` says whether a budget is already used up (or cannot be
metered: a USD budget and a model without a price). While it runs, ``Meter.check(usage)`` is
called on every usage event the agent streams with the attempt's running totals: the first event
that reaches a limit stops the agent, so the overshoot is at most that one event. Daily scopes
are re-read from the database every ``REFRESH_SECONDS`` while the attempt runs, so attempts
running in parallel on other workers count too (to within that refresh and their own last flush).

``repository_waiting_reason(task)`` is what the coordinator asks before starting a task: "" or why
it must wait (a daily budget is used up); it starts again the next UTC day.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import QuerySet, Sum
from django.utils import timezone

from .agent_process import StopAgent
from .lib.pricing import price_for
from .models import StageResult, Task
from .workflow import StageConfig, Workflow

ZERO = Decimal(0)
REFRESH_SECONDS = 2.0  # how often a running attempt re-reads the daily spend of the others


@dataclass(frozen=True)
class Spend:
    usd: Decimal = ZERO
    tokens: int = 0


def start_of_day(now: datetime | None = None) -> datetime:
    """Midnight UTC of the day of ``now`` (default: the current time). Daily budgets reset here."""
    now = now or timezone.now()
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def next_day(now: datetime | None = None) -> datetime:
    return start_of_day(now) + timedelta(days=1)


def spend_of(results: QuerySet[StageResult]) -> Spend:
    """Cost and tokens (input + output + cache read + cache write) of some attempts."""
    totals = results.aggregate(
        usd=Sum("cost_usd"), i=Sum("input_tokens"), o=Sum("output_tokens"), cr=Sum("cache_read_tokens"), cw=Sum("cache_write_tokens")
    )
    return Spend(totals["usd"] or ZERO, sum(totals[k] or 0 for k in ("i", "o", "cr", "cw")))


def money(value: Decimal | None) -> str:
    """"$0.50", "$0.123456": two decimals at least, more when the figure has them."""
    if value is None:
        return "$?"
    text = f"{value.quantize(Decimal('0.000001')).normalize():f}"
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def global_daily() -> tuple[Decimal | None, int | None]:
    """The global daily budget from settings (None where unset)."""
    usd = settings.TACX.get("DAILY_BUDGET_USD")
    tokens = settings.TACX.get("DAILY_BUDGET_TOKENS")
    return (Decimal(str(usd)) if usd not in (None, "") else None, int(tokens) if tokens not in (None, "") else None)


def daily_results(*, repository=None, now: datetime | None = None) -> QuerySet[StageResult]:
    """Attempts that count against a daily budget today: of one repository, or all (global)."""
    results = StageResult.objects.filter(started_at__gte=start_of_day(now))
    return results.filter(task__repository=repository) if repository is not None else results


@dataclass
class Limit:
    """One budget that applies to an attempt, with what others already spent against it."""

    scope: str  # "stage", "task", "repository daily", "global daily"
    usd: Decimal | None
    tokens: int | None
    others: QuerySet[StageResult]  # the spend that counts besides this attempt's own
    spent: Spend = field(default_factory=Spend)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.spent = spend_of(self.others)

    def used_up(self, usd: Decimal, tokens: int) -> str:
        """A sentence when spend ``usd``/``tokens`` (others' included) reaches this budget, else ""."""
        if self.usd is not None and usd >= self.usd:
            return f"{self.scope} budget {money(self.usd)} reached ({money(usd)} spent)"
        if self.tokens is not None and tokens >= self.tokens:
            return f"{self.scope} budget of {self.tokens} tokens reached ({tokens} tokens spent)"
        return ""


def attempt_limits(*, task: Task, stage_name: str, workflow: Workflow, exclude_result_id: int | None = None, now: datetime | None = None) -> list[Limit]:
    """Every budget that applies to an attempt of stage ``stage_name`` of ``task`` (configured
    ones only), each with the spend of the other attempts counting against it."""

    def others(results: QuerySet[StageResult]) -> QuerySet[StageResult]:
        return results.exclude(pk=exclude_result_id) if exclude_result_id else results

    limits: list[Limit] = []
    stage_budget = workflow.stage(stage_name).budget
    if stage_budget.usd is not None or stage_budget.tokens is not None:
        limits.append(Limit("stage", stage_budget.usd, stage_budget.tokens, others(StageResult.objects.filter(task=task, stage__name=stage_name))))
    if workflow.budget.usd is not None or workflow.budget.tokens is not None:
        limits.append(Limit("task", workflow.budget.usd, workflow.budget.tokens, others(StageResult.objects.filter(task=task))))
    repo = task.repository
    if repo.daily_budget_usd is not None or repo.daily_budget_tokens is not None:
        limits.append(Limit("repository daily", repo.daily_budget_usd, repo.daily_budget_tokens, others(daily_results(repository=repo, now=now))))
    usd, tokens = global_daily()
    if usd is not None or tokens is not None:
        limits.append(Limit("global daily", usd, tokens, others(daily_results(now=now))))
    return limits


def repository_waiting_reason(task: Task, now: datetime | None = None) -> str:
    """Why ``task`` may not start now, or "": its repository's daily budget or the global daily
    budget is used up. It may start from the next UTC midnight."""
    checks = [("repository daily", task.repository.daily_budget_usd, task.repository.daily_budget_tokens, task.repository)]
    checks.append(("global daily", *global_daily(), None))
    for scope, usd, tokens, repository in checks:
        if usd is None and tokens is None:
            continue
        spent = spend_of(daily_results(repository=repository, now=now))
        if usd is not None and spent.usd >= usd:
            used = f"{money(spent.usd)} of {money(usd)}"
        elif tokens is not None and spent.tokens >= tokens:
            used = f"{spent.tokens} of {tokens} tokens"
        else:
            continue
        return f"{scope} budget used up: {used} spent today; waits until {next_day(now):%Y-%m-%d %H:%M} UTC"
    return ""


@dataclass
class Meter:
    """The budgets of one running attempt (see the module docstring)."""

    limits: list[Limit]
    model: str = ""
    _refreshed: float = field(default_factory=time.monotonic)

    @classmethod
    def for_attempt(cls, *, task: Task, stage_cfg: StageConfig, workflow: Workflow, result: StageResult | None = None) -> Meter:
        """The meter for the attempt of ``stage_cfg`` that is running now (``result``; found as
        the task's open attempt of that stage when not given)."""
        if result is None:
            result = (
                StageResult.objects.filter(task=task, stage__name=stage_cfg.name, outcome=StageResult.Outcome.RUNNING).order_by("-id").first()
            )
        limits = attempt_limits(task=task, stage_name=stage_cfg.name, workflow=workflow, exclude_result_id=result.pk if result else None)
        return cls(limits, model=stage_cfg.model)

    def refusal(self) -> str | None:
        """Why the attempt must not start, or None."""
        for limit in self.limits:
            if reason := limit.used_up(limit.spent.usd, limit.spent.tokens):
                return f"budget exceeded before start: {reason}"
        if self.model and any(limit.usd is not None for limit in self.limits):
            if price_for(self.model) is None:
                return f"budget cannot be enforced: no price is known for model {self.model!r} (add it to TACX['PRICES'])"
        return None

    def check(self, usage) -> StopAgent | None:
        """``StopAgent(budget_exceeded)`` when the attempt's running ``usage`` (a providers
        ``Usage``) makes any budget reached, else None."""
        if not self.limits:
            return None
        tokens = usage.input_tokens + usage.output_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        cost = usage.cost_usd
        if cost is None:
            if tokens and any(limit.usd is not None for limit in self.limits):
                # Spend that cannot be priced cannot be held to a money budget: stop rather than guess.
                return StopAgent(
                    StageResult.Outcome.BUDGET_EXCEEDED,
                    f"budget cannot be enforced: no price is known for model {usage.model!r} (add it to TACX['PRICES']); stopped after {tokens} tokens",
                )
            cost = ZERO
        now = time.monotonic()
        if now - self._refreshed >= REFRESH_SECONDS:
            self._refreshed = now
            for limit in self.limits:
                if limit.scope.endswith("daily"):
                    limit.refresh()
        for limit in self.limits:
            if reason := limit.used_up(limit.spent.usd + cost, limit.spent.tokens + tokens):
                return StopAgent(
                    StageResult.Outcome.BUDGET_EXCEEDED,
                    f"budget exceeded: {reason}; this attempt spent {money(cost)} and {tokens} tokens",
                )
        return None
