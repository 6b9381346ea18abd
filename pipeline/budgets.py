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

What a reached budget does (its ``on_exceed``): ``fail`` (the default) ends the task as
``budget_exceeded``; ``pause`` stops the agent at the same point, keeps its work and parks the task
until a person raises the limit or ends it (``pipeline.services.pauses``). When several budgets are
reached at once and one of them fails, the task fails. Workflow budgets say it in the workflow
(``budget: {usd: 5, on_exceed: pause}``), the repository's daily budget in
``Repository.daily_budget_on_exceed``, the global one in ``TACX_DAILY_BUDGET_ON_EXCEED``. A raise
(a ``BudgetPause`` answered ``raised``) is added to its budget's limit for every later attempt of
that task; a daily budget's raise counts on the day it was given only.

``rest_estimate(...)`` is what a pause shows as the cost of the rest of the workflow.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import QuerySet, Sum
from django.utils import timezone

from .agent_process import StopAgent
from .lib.pricing import price_for
from .models import BudgetPause, StageResult, Task
from .workflow import StageConfig, Workflow

ZERO = Decimal(0)
REFRESH_SECONDS = 2.0  # how often a running attempt re-reads the daily spend of the others
ESTIMATE_SAMPLES = 20  # successful attempts per stage the estimate of a pause averages


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


def global_on_exceed() -> str:
    return settings.TACX.get("DAILY_BUDGET_ON_EXCEED") or "fail"


def raises_of(*, task: Task, scope: str, stage_name: str = "", now: datetime | None = None) -> tuple[Decimal, int]:
    """What people added to one budget of ``task`` by answering its pauses (USD, tokens); a
    daily budget's raises count on the day they were given only."""
    raised = BudgetPause.objects.filter(task=task, scope=scope, status=BudgetPause.Status.RAISED)
    if scope == "stage":
        raised = raised.filter(stage_name=stage_name)
    if scope.endswith("daily"):
        raised = raised.filter(answered_at__gte=start_of_day(now))
    totals = raised.aggregate(usd=Sum("raise_usd"), tokens=Sum("raise_tokens"))
    return totals["usd"] or ZERO, totals["tokens"] or 0


@dataclass
class Limit:
    """One budget that applies to an attempt, with what others already spent against it. ``usd``
    and ``tokens`` are the limits in force: the configured ones plus what people raised them by."""

    scope: str  # "stage", "task", "repository daily", "global daily"
    usd: Decimal | None
    tokens: int | None
    others: QuerySet[StageResult]  # the spend that counts besides this attempt's own
    spent: Spend = field(default_factory=Spend)
    on_exceed: str = "fail"  # "fail" or "pause"
    stage_name: str = ""  # for scope "stage"

    def __post_init__(self) -> None:
        self.refresh()

    def with_raises(self, task: Task, now: datetime | None = None) -> Limit:
        usd, tokens = raises_of(task=task, scope=self.scope, stage_name=self.stage_name, now=now)
        if self.usd is not None:
            self.usd += usd
        if self.tokens is not None:
            self.tokens += tokens
        return self

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
    if stage_budget.configured:
        stage_spend = others(StageResult.objects.filter(task=task, stage__name=stage_name))
        limits.append(Limit("stage", stage_budget.usd, stage_budget.tokens, stage_spend, on_exceed=stage_budget.on_exceed, stage_name=stage_name))
    if workflow.budget.configured:
        limits.append(Limit("task", workflow.budget.usd, workflow.budget.tokens, others(StageResult.objects.filter(task=task)), on_exceed=workflow.budget.on_exceed))
    repo = task.repository
    if repo.daily_budget_usd is not None or repo.daily_budget_tokens is not None:
        repo_spend = others(daily_results(repository=repo, now=now))
        limits.append(Limit("repository daily", repo.daily_budget_usd, repo.daily_budget_tokens, repo_spend, on_exceed=repo.daily_budget_on_exceed))
    usd, tokens = global_daily()
    if usd is not None or tokens is not None:
        limits.append(Limit("global daily", usd, tokens, others(daily_results(now=now)), on_exceed=global_on_exceed()))
    return [limit.with_raises(task, now) for limit in limits]


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


@dataclass(frozen=True)
class Reached:
    """The budget that stopped (or refused to start) an attempt, with the figures a pause shows."""

    scope: str
    stage_name: str
    on_exceed: str
    usd: Decimal | None  # the limit in force
    tokens: int | None
    spent: Spend  # spend against it, this attempt's included
    reason: str  # the meter's sentence

    @property
    def pauses(self) -> bool:
        return self.on_exceed == "pause"


@dataclass
class Meter:
    """The budgets of one running attempt (see the module docstring). After ``refusal()`` or
    ``check()`` said stop, ``reached`` names the budget (None for a stop no budget's
    ``on_exceed`` covers: a model without a price)."""

    limits: list[Limit]
    model: str = ""
    _refreshed: float = field(default_factory=time.monotonic)
    reached: Reached | None = None

    def _first_reached(self, spend: list[tuple[Limit, Decimal, int]]) -> tuple[Limit, str, Decimal, int] | None:
        """The budget to act on among those ``spend`` reaches: one that fails wins over one
        that pauses (a pause must never hide a failure)."""
        found = [(limit, reason, usd, tokens) for limit, usd, tokens in spend if (reason := limit.used_up(usd, tokens))]
        if not found:
            return None
        failing = [hit for hit in found if hit[0].on_exceed != "pause"]
        limit, reason, usd, tokens = (failing or found)[0]
        self.reached = Reached(limit.scope, limit.stage_name, limit.on_exceed, limit.usd, limit.tokens, Spend(usd, tokens), reason)
        return limit, reason, usd, tokens

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
        if hit := self._first_reached([(limit, limit.spent.usd, limit.spent.tokens) for limit in self.limits]):
            return f"budget exceeded before start: {hit[1]}"
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
        if hit := self._first_reached([(limit, limit.spent.usd + cost, limit.spent.tokens + tokens) for limit in self.limits]):
            return StopAgent(StageResult.Outcome.BUDGET_EXCEEDED, f"budget exceeded: {hit[1]}; this attempt spent {money(cost)} and {tokens} tokens")
        return None


def rest_estimate(*, task: Task, workflow: Workflow, stage_name: str) -> dict:
    """What the rest of the workflow may cost from stage ``stage_name`` on, for a pause to show.

    Method: that stage once more (it resumes where it stopped, so this leans high) and every agent
    stage after it, each at the mean cost and tokens of its last ``ESTIMATE_SAMPLES`` successful
    attempts (same stage name and provider) in this repository, or in all repositories when this
    one has none. A stage without any is "unknown" and left out of the sum. One pass: rounds a
    review or a failing test sends back are not counted. Returns ``{"usd", "tokens"}`` (strings
    and ints; None when no stage is known), ``"stages"`` (per stage: usd, tokens, samples, from)
    and ``"unknown"`` (stage names)."""
    names = [s.name for s in workflow.stages]
    start = names.index(stage_name) if stage_name in names else 0
    stages, unknown = [], []
    usd_total, tokens_total, known = ZERO, 0, 0
    for cfg in workflow.stages[start:]:
        if not cfg.is_agent:
            continue
        done = StageResult.objects.filter(stage__name=cfg.name, provider=cfg.provider, success=True)
        where = "repository"
        rows = list(done.filter(task__repository=task.repository).order_by("-id").values("cost_usd", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")[:ESTIMATE_SAMPLES])
        if not rows:
            where = "all repositories"
            rows = list(done.order_by("-id").values("cost_usd", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")[:ESTIMATE_SAMPLES])
        if not rows:
            unknown.append(cfg.name)
            stages.append({"stage": cfg.name, "usd": None, "tokens": None, "samples": 0, "from": ""})
            continue
        usd = (sum((r["cost_usd"] or ZERO for r in rows), ZERO) / len(rows)).quantize(Decimal("0.000001"))
        tokens = sum(r["input_tokens"] + r["output_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"] for r in rows) // len(rows)
        stages.append({"stage": cfg.name, "usd": str(usd), "tokens": tokens, "samples": len(rows), "from": where})
        usd_total += usd
        tokens_total += tokens
        known += 1
    return {
        "usd": str(usd_total) if known else None,
        "tokens": tokens_total if known else None,
        "stages": stages,
        "unknown": unknown,
    }


def estimate_sentence(estimate: dict) -> str:
    """"≈ $1.35 (40,000 tokens) for building, reviewing; unknown for testing" and the like."""
    known = [s["stage"] for s in estimate.get("stages", []) if s.get("usd") is not None]
    unknown = estimate.get("unknown") or []
    parts = []
    if known:
        parts.append(f"≈ {money(Decimal(estimate['usd']))} ({estimate['tokens']:,} tokens) for {', '.join(known)}")
    if unknown:
        parts.append(f"unknown for {', '.join(unknown)} (no earlier successful attempt to go by)")
    return "; ".join(parts) or "nothing left to run"


MAX_RAISE_USD = Decimal(10) ** 6 - 1  # what the limit columns hold (12 digits, 6 after the point)
MAX_RAISE_TOKENS = 10**15
_RAISE = re.compile(r"^\+?\s*(\$)?\s*(\d+(?:\.\d+)?|\.\d+)\s*(k|m)?\s*(usd|\$|dollars?|tokens?)?$", re.I)


def parse_raise(text: str) -> tuple[Decimal | None, int | None]:
    """``+2.00``, ``+$2``, ``2 usd`` → (Decimal("2.00"), None); ``+50000 tokens``, ``+50k tokens``
    → (None, 50000). Raises ValueError with what is wrong and what would do."""
    found = _RAISE.match((text or "").strip())
    if not found:
        raise ValueError("cannot read the amount: write +2.00 (US dollars) or +50000 tokens")
    dollar, number, scale, unit = found.groups()
    unit = (unit or "").lower()
    tokens = unit.startswith("token")
    if tokens and dollar:
        raise ValueError("the amount names both dollars and tokens: write +2.00 or +50000 tokens")
    amount = Decimal(number) * {"": 1, "k": 1000, "m": 1_000_000}[(scale or "").lower()]
    if amount <= 0:
        raise ValueError("a raise must be more than zero")
    if tokens:
        if amount != amount.to_integral_value():
            raise ValueError(f"tokens are whole numbers, got {amount}")
        if amount > MAX_RAISE_TOKENS:
            raise ValueError(f"a raise of {amount} tokens is more than {MAX_RAISE_TOKENS}")
        return None, int(amount)
    if amount > MAX_RAISE_USD:
        raise ValueError(f"a raise of ${amount} is more than ${MAX_RAISE_USD}")
    if amount != amount.quantize(Decimal("0.000001")):
        raise ValueError(f"US dollars have at most 6 decimal places here, got {amount}")
    return amount, None


def candidate_estimate(*, task: Task, stage_name: str, provider: str) -> tuple[Decimal | None, int]:
    """The mean cost of the last ESTIMATE_SAMPLES successful attempts of `stage_name` by
    `provider` in this repository (else in all), and how many there were; (None, 0) when none."""
    done = StageResult.objects.filter(stage__name=stage_name, provider=provider, success=True, cost_usd__isnull=False)
    rows = list(
        done.filter(task__repository=task.repository).order_by("-id").values_list("cost_usd", flat=True)[:ESTIMATE_SAMPLES]
    )
    if not rows:
        rows = list(done.order_by("-id").values_list("cost_usd", flat=True)[:ESTIMATE_SAMPLES])
    if not rows:
        return None, 0
    return (sum(rows, ZERO) / len(rows)).quantize(Decimal("0.000001")), len(rows)


def candidates_refusal(*, task: Task, workflow: Workflow, stage_cfg: StageConfig, specs) -> str:
    """Why `specs` (a stage's candidates, pipeline.lib.candidates) may not start: a sentence with
    the arithmetic when the task's (or the stage's) USD budget cannot pay for all of them at the
    estimated cost of each (candidate_estimate), else "". A candidate with no estimate counts
    nothing (it is named)."""
    estimates = [candidate_estimate(task=task, stage_name=stage_cfg.name, provider=spec.provider) for spec in specs]
    known = [usd for usd, _ in estimates if usd is not None]
    if not known:
        return ""
    need = sum(known, ZERO)
    unknown = [f"c{i + 1}" for i, (usd, _) in enumerate(estimates) if usd is None]
    parts = [
        f"c{i + 1} {spec.provider} ≈{money(usd)} (mean of {n})"
        for i, (spec, (usd, n)) in enumerate(zip(specs, estimates, strict=True))
        if usd is not None
    ]
    for limit in attempt_limits(task=task, stage_name=stage_cfg.name, workflow=workflow):
        if limit.scope not in ("task", "stage") or limit.usd is None:
            continue
        spent = spend_of(limit.others).usd
        if spent + need > limit.usd:
            return (
                f"{len(specs)} candidates would exceed the {limit.scope} budget {money(limit.usd)}: {money(spent)} spent + "
                f"{' + '.join(parts)} = {money(spent + need)} > {money(limit.usd)}"
                + (f" (no estimate for {', '.join(unknown)}, counted as $0)" if unknown else "")
                + "; refused before start"
            )
    return ""
