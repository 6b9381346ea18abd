"""Money and token budgets: per stage, per task, per repository per day, global per day.

Before an agent starts, `Meter.refusal()` says whether any budget is already used up. While it
runs, `Meter.check(usage)` is called on every usage event the agent streams: the first event
that reaches a limit stops the agent (overshoot is at most that one event).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from decimal import Decimal

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from .agent_process import StopAgent
from .models import StageResult, Task
from .workflow import StageConfig, Workflow


def start_of_day(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)


def spent_since(since: datetime, **filters) -> tuple[Decimal, int]:
    totals = StageResult.objects.filter(started_at__gte=since, **filters).aggregate(
        usd=Sum("cost_usd"), i=Sum("input_tokens"), o=Sum("output_tokens"), cr=Sum("cache_read_tokens"), cw=Sum("cache_write_tokens")
    )
    tokens = sum(totals[k] or 0 for k in ("i", "o", "cr", "cw"))
    return totals["usd"] or Decimal("0"), tokens


@dataclass
class Limit:
    scope: str  # "stage", "task", "repository daily", "global daily"
    usd: Decimal | None  # remaining for this attempt
    tokens: int | None
    usd_total: Decimal | None  # the configured figure, for messages
    tokens_total: int | None


def global_daily() -> tuple[Decimal | None, int | None]:
    usd = settings.TACX.get("DAILY_BUDGET_USD")
    tokens = settings.TACX.get("DAILY_BUDGET_TOKENS")
    return (Decimal(str(usd)) if usd not in (None, "") else None, int(tokens) if tokens not in (None, "") else None)


def repository_waiting_reason(task: Task, now: datetime | None = None) -> str:
    """Why a task may not start now (a daily budget is used up), or ""."""
    since = start_of_day(now)
    repo = task.repository
    checks = [("repository daily", repo.daily_budget_usd, repo.daily_budget_tokens, {"task__repository": repo})]
    gusd, gtok = global_daily()
    checks.append(("global daily", gusd, gtok, {}))
    for scope, usd, tokens, filters in checks:
        if usd is None and tokens is None:
            continue
        spent_usd, spent_tokens = spent_since(since, **filters)
        if usd is not None and spent_usd >= usd:
            return f"{scope} budget used up: ${spent_usd:.4f} of ${usd}; starts again after midnight UTC"
        if tokens is not None and spent_tokens >= tokens:
            return f"{scope} budget used up: {spent_tokens} of {tokens} tokens; starts again after midnight UTC"
    return ""


@dataclass
class Meter:
    limits: list[Limit]

    @classmethod
    def for_attempt(cls, *, task: Task, stage_cfg: StageConfig, workflow: Workflow) -> Meter:
        limits: list[Limit] = []
        b = stage_cfg.budget
        if b.usd is not None or b.tokens is not None:
            limits.append(Limit("stage", b.usd, b.tokens, b.usd, b.tokens))
        b = workflow.budget
        if b.usd is not None or b.tokens is not None:
            task.refresh_from_db(fields=["cost_usd", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"])
            limits.append(
                Limit(
                    "task",
                    None if b.usd is None else b.usd - task.cost_usd,
                    None if b.tokens is None else b.tokens - task.total_tokens,
                    b.usd,
                    b.tokens,
                )
            )
        since = start_of_day()
        repo = task.repository
        if repo.daily_budget_usd is not None or repo.daily_budget_tokens is not None:
            usd, tokens = spent_since(since, task__repository=repo)
            limits.append(_daily("repository daily", repo.daily_budget_usd, repo.daily_budget_tokens, usd, tokens))
        gusd, gtok = global_daily()
        if gusd is not None or gtok is not None:
            usd, tokens = spent_since(since)
            limits.append(_daily("global daily", gusd, gtok, usd, tokens))
        return cls(limits)

    def refusal(self) -> str | None:
        for limit in self.limits:
            if limit.usd is not None and limit.usd <= 0:
                return f"budget exceeded before start: {limit.scope} budget ${limit.usd_total} is used up"
            if limit.tokens is not None and limit.tokens <= 0:
                return f"budget exceeded before start: {limit.scope} budget of {limit.tokens_total} tokens is used up"
        return None

    def check(self, usage) -> StopAgent | None:
        if not self.limits:
            return None
        cost = usage.cost_usd if usage.cost_usd is not None else Decimal("0")
        tokens = usage.input_tokens + usage.output_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        for limit in self.limits:
            if limit.usd is not None and cost >= limit.usd:
                return StopAgent(
                    StageResult.Outcome.BUDGET_EXCEEDED,
                    f"budget exceeded: {limit.scope} budget ${limit.usd_total} reached (this attempt spent ${cost:.6f}, {tokens} tokens)",
                )
            if limit.tokens is not None and tokens >= limit.tokens:
                return StopAgent(
                    StageResult.Outcome.BUDGET_EXCEEDED,
                    f"budget exceeded: {limit.scope} budget of {limit.tokens_total} tokens reached (this attempt used {tokens} tokens, ${cost:.6f})",
                )
        return None


def _daily(scope: str, usd: Decimal | None, tokens: int | None, spent_usd: Decimal, spent_tokens: int) -> Limit:
    return Limit(scope, None if usd is None else usd - spent_usd, None if tokens is None else tokens - spent_tokens, usd, tokens)
