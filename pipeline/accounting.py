"""Selectors for spend: token and cost totals grouped any way, spend against budget, run
fingerprints. Read-only; the numbers come from ``StageResult`` rows (one per attempt, running
ones included with their live usage), whose token semantics are Claude's for every CLI: input
excludes cache reads and writes (the providers' parsers normalise Codex and Gemini).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import TruncDate

from . import budgets
from .models import Repository, StageResult, Task
from .workflow import Workflow, WorkflowError

# A dimension name → what the rows are grouped by.
DIMENSIONS = {
    "stage": "stage__name",
    "task": "task_id",
    "repository": "task__repository__full_name",
    "provider": "provider",
    "model": "model",
    "day": TruncDate("started_at", tzinfo=UTC),
}
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def usage_totals(
    *,
    by: Sequence[str] = (),
    results: QuerySet[StageResult] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict]:
    """Totals of ``results`` (default: all attempts) that started in [since, until), grouped by
    the dimensions ``by`` (keys of ``DIMENSIONS``; "day" is the UTC date the attempt started).

    Each row: the dimension values under their names, then ``input_tokens``, ``output_tokens``,
    ``cache_read_tokens``, ``cache_write_tokens``, ``total_tokens``, ``cost_usd`` (Decimal) and
    ``attempts``; rows are ordered by the dimensions. ``by=()`` gives one row, the grand total.
    """
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension {unknown[0]!r} (known: {', '.join(DIMENSIONS)})")
    results = StageResult.objects.all() if results is None else results
    if since is not None:
        results = results.filter(started_at__gte=since)
    if until is not None:
        results = results.filter(started_at__lt=until)
    sums = {name: Sum(name) for name in TOKEN_FIELDS}
    sums.update(cost_usd=Sum("cost_usd"), attempts=Count("pk"))
    if not by:
        rows = [results.aggregate(**sums)]
    else:
        # Aliased ("_stage") because a dimension name may clash with a model field ("model").
        groups = {f"_{d}": F(DIMENSIONS[d]) if isinstance(DIMENSIONS[d], str) else DIMENSIONS[d] for d in by}
        rows = list(results.order_by().annotate(**groups).values(*groups).annotate(**sums).order_by(*groups))
    out = []
    for row in rows:
        item = {d: row[f"_{d}"] for d in by}
        for name in TOKEN_FIELDS:
            item[name] = row[name] or 0
        item["total_tokens"] = sum(item[name] for name in TOKEN_FIELDS)
        item["cost_usd"] = row["cost_usd"] or Decimal(0)
        item["attempts"] = row["attempts"]
        out.append(item)
    return out


def task_usage_by_stage(task: Task) -> list[dict]:
    """Totals per stage of one task (every attempt and round), in pipeline order."""
    rows = {row["stage"]: row for row in usage_totals(by=["stage"], results=StageResult.objects.filter(task=task))}
    order = list(task.stages.order_by("position").values_list("name", flat=True))
    return [rows[name] for name in order if name in rows]


def repository_usage_by_day(repository: Repository, *, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
    return usage_totals(by=["day"], results=StageResult.objects.filter(task__repository=repository), since=since, until=until)


@dataclass(frozen=True)
class BudgetLine:
    """One budget that applies to a task, and what has been spent against it."""

    scope: str  # "stage", "task", "repository daily", "global daily"
    stage: str  # the stage name for scope "stage", else ""
    usd: Decimal | None
    tokens: int | None
    spent_usd: Decimal
    spent_tokens: int
    on_exceed: str = "fail"
    raised_usd: Decimal = Decimal(0)  # already in ``usd``: what people added at a pause
    raised_tokens: int = 0

    @property
    def fraction(self) -> float:
        """The larger of spend/budget in USD and in tokens (1.0 = used up)."""
        parts = []
        if self.usd:
            parts.append(float(self.spent_usd / self.usd))
        elif self.usd is not None:
            parts.append(1.0)
        if self.tokens:
            parts.append(self.spent_tokens / self.tokens)
        elif self.tokens is not None:
            parts.append(1.0)
        return max(parts, default=0.0)

    @property
    def used_up(self) -> bool:
        return (self.usd is not None and self.spent_usd >= self.usd) or (self.tokens is not None and self.spent_tokens >= self.tokens)


def task_budget_lines(task: Task, *, now: datetime | None = None) -> list[BudgetLine]:
    """Spend against every budget configured for ``task``: its stages' and its own (from the
    workflow snapshot taken when it started), its repository's daily one and the global daily
    one (today's spend, UTC). Budgets that are not configured are left out. The limits are the
    ones in force for this task: what people raised them by at a pause is included
    (``budgets.raises_of``)."""
    lines: list[BudgetLine] = []
    workflow = None
    if task.workflow:
        try:
            workflow = Workflow.from_json(task.workflow)
        except WorkflowError:
            workflow = None

    def line(scope: str, stage: str, usd: Decimal | None, tokens: int | None, results, on_exceed: str) -> BudgetLine:
        spent = budgets.spend_of(results)
        more_usd, more_tokens = budgets.raises_of(task=task, scope=scope, stage_name=stage, now=now)
        usd = usd + more_usd if usd is not None else None
        tokens = tokens + more_tokens if tokens is not None else None
        return BudgetLine(scope, stage, usd, tokens, spent.usd, spent.tokens, on_exceed, more_usd, more_tokens)

    if workflow is not None:
        for cfg in workflow.stages:
            if cfg.budget.configured:
                lines.append(line("stage", cfg.name, cfg.budget.usd, cfg.budget.tokens, StageResult.objects.filter(task=task, stage__name=cfg.name), cfg.budget.on_exceed))
        if workflow.budget.configured:
            lines.append(line("task", "", workflow.budget.usd, workflow.budget.tokens, StageResult.objects.filter(task=task), workflow.budget.on_exceed))
    repo = task.repository
    if repo.daily_budget_usd is not None or repo.daily_budget_tokens is not None:
        results = budgets.daily_results(repository=repo, now=now)
        lines.append(line("repository daily", "", repo.daily_budget_usd, repo.daily_budget_tokens, results, repo.daily_budget_on_exceed))
    usd, tokens = budgets.global_daily()
    if usd is not None or tokens is not None:
        lines.append(line("global daily", "", usd, tokens, budgets.daily_results(now=now), budgets.global_on_exceed()))
    return lines


def budget_markdown(task: Task) -> list[str]:
    """Spend against each budget of the task as markdown table lines ([] when it has none);
    shown in the PR body and the issue's progress comment."""
    budget_lines = task_budget_lines(task)
    if not budget_lines:
        return []
    rows = ["| Budget | Spent (USD) | Limit (USD) | Spent (tokens) | Limit (tokens) |", "|---|---|---|---|---|"]
    for b in budget_lines:
        usd_limit = f"{b.usd:.4f}" if b.usd is not None else "—"
        tok_limit = f"{b.tokens:,}" if b.tokens is not None else "—"
        rows.append(f"| {f'{b.scope} {b.stage}'.strip()} | {b.spent_usd:.4f} | {usd_limit} | {b.spent_tokens:,} | {tok_limit} |")
    return rows


FINGERPRINT_FIELDS = ("cli_version", "model", "prompt_hash", "base_commit")


def task_fingerprints(task: Task) -> list[dict]:
    """What each attempt of ``task`` ran with, in order: stage, attempt, round, provider, outcome,
    and the fingerprint: CLI version, model, SHA-256 of the prompt, commit it started from (and
    ``head_commit``, where it ended)."""
    return list(
        StageResult.objects.filter(task=task)
        .order_by("id")
        .values("id", "stage__name", "attempt", "round", "provider", "outcome", *FINGERPRINT_FIELDS, "head_commit")
    )


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[midnight, next midnight) of a UTC day, for ``since``/``until``."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, budgets.next_day(start)
