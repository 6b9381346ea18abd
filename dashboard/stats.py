"""Figures for the Stats page and ``/api/stats/``: success rates of finished attempts, tokens and
cost per day, how long an issue waits from its trigger to its pull request, and what became
of the pull requests of GitHub tasks (merge rate, $ per merged PR, time to the first PR, rounds
per merged PR), per workflow and per building provider."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import Avg, Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from pipeline.models import ZERO, Repository, Round, Stage, StageResult, Task
from pipeline.workflow import fingerprint_of


@dataclass
class Rate:
    """Attempts that ended, of one stage, provider or model. A cancelled one is neither a
    success nor a failure: ``attempts`` (and the rate) leave it out, ``ended`` counts it, so
    ``ended == succeeded + failed + cancelled`` always adds up."""

    key: str
    attempts: int  # succeeded + failed: what the rate is of
    succeeded: int
    cancelled: int = 0
    label: str = ""  # what the page shows ("no model (command, tacx)" for the key "(none)")

    def __post_init__(self) -> None:
        self.label = self.label or self.key

    @property
    def failed(self) -> int:
        return self.attempts - self.succeeded

    @property
    def ended(self) -> int:
        return self.attempts + self.cancelled

    @property
    def rate(self) -> float | None:
        return self.succeeded / self.attempts if self.attempts else None


def rates_total(rates: list[Rate]) -> Rate:
    """The sum of a table's rows (each attempt is in exactly one row of each table)."""
    return Rate(
        key="total",
        attempts=sum(r.attempts for r in rates),
        succeeded=sum(r.succeeded for r in rates),
        cancelled=sum(r.cancelled for r in rates),
    )


NONE = "(none)"  # the key of attempts with no value for the grouping (no model, say)


@dataclass
class Day:
    day: date
    tokens: int
    cost_usd: Decimal
    attempts: int  # started that day, running ones included


@dataclass
class Outcomes:
    """What a group of GitHub tasks (triggered in the period, skipped ones left out) came to.

    `merge_rate` is merged over decided (merged + closed unmerged): a PR still open has no
    outcome yet. `cost_per_merged_usd` is what the whole group cost (failed tasks and PRs
    closed unmerged included) over its merged PRs, like $ per resolved instance."""

    key: str
    tasks: int = 0
    pull_requests: int = 0
    merged: int = 0
    closed: int = 0
    open: int = 0
    cost_usd: Decimal = ZERO
    merged_rounds: int = 0  # conversation rounds (reviews, comments, CI fixes) that ran on merged PRs
    median_trigger_to_first_pr_seconds: float | None = None

    @property
    def merge_rate(self) -> float | None:
        decided = self.merged + self.closed
        return self.merged / decided if decided else None

    @property
    def cost_per_merged_usd(self) -> Decimal | None:
        return (self.cost_usd / self.merged).quantize(Decimal("0.000001")) if self.merged else None

    @property
    def rounds_per_merged(self) -> float | None:
        return self.merged_rounds / self.merged if self.merged else None


@dataclass
class Stats:
    days: int
    since: date
    by_stage: list[Rate] = field(default_factory=list)
    by_provider: list[Rate] = field(default_factory=list)
    by_model: list[Rate] = field(default_factory=list)
    per_day: list[Day] = field(default_factory=list)
    tasks_by_status: dict[str, int] = field(default_factory=dict)
    median_trigger_to_pr_seconds: float | None = None
    results: int = 0  # tasks that delivered: a pull request, or a pushed branch
    pull_requests: int = 0
    branches: int = 0
    total_tokens: int = 0
    total_cost_usd: Decimal = ZERO
    pull_outcomes: Outcomes = field(default_factory=lambda: Outcomes(key="all"))
    outcomes_by_workflow: list[Outcomes] = field(default_factory=list)
    outcomes_by_provider: list[Outcomes] = field(default_factory=list)


def stats_compute(*, days: int = 30) -> Stats:
    """Figures over the last ``days`` days (attempts by start, tasks by trigger time)."""
    today = timezone.now().date()
    since = today - timedelta(days=days - 1)
    start = timezone.make_aware(timezone.datetime.combine(since, timezone.datetime.min.time()), timezone.get_current_timezone())
    finished = StageResult.objects.filter(started_at__gte=start).exclude(outcome=StageResult.Outcome.RUNNING)
    result = Stats(days=days, since=since)
    result.by_stage = _rates(finished, "stage__name", pipeline_order=True)
    result.by_provider = _rates(finished, "provider")
    result.by_model = _rates(finished, "model")
    for rate in result.by_model:
        if rate.key == NONE:
            # Stages that run no model: command programs and TAC-X's own pr_creation.
            providers = sorted(set(finished.filter(model="").values_list("provider", flat=True)) - {""})
            rate.label = "no model" + (f" ({', '.join(providers)})" if providers else "")

    tokens = F("input_tokens") + F("output_tokens") + F("cache_read_tokens") + F("cache_write_tokens")
    rows = (
        StageResult.objects.filter(started_at__gte=start)
        .annotate(day=TruncDate("started_at"))
        .values("day")
        .annotate(tokens=Sum(tokens), cost=Sum("cost_usd"), attempts=Count("id"))
        .order_by("day")
    )
    by_day = {r["day"]: r for r in rows}
    for i in range(days):
        d = since + timedelta(days=i)
        r = by_day.get(d)
        result.per_day.append(
            Day(
                day=d,
                tokens=int(r["tokens"] or 0) if r else 0,
                cost_usd=(r["cost"] or ZERO) if r else ZERO,
                attempts=r["attempts"] if r else 0,
            )
        )
    result.total_tokens = sum(d.tokens for d in result.per_day)
    result.total_cost_usd = sum((d.cost_usd for d in result.per_day), ZERO)

    tasks = Task.objects.filter(triggered_at__gte=start)
    result.tasks_by_status = {r["status"]: r["n"] for r in tasks.values("status").annotate(n=Count("id")).order_by("status")}
    durations = _trigger_to_pr_seconds(tasks)
    # A result: a successful pr_creation, or the branch a finished task's stages pushed
    # (selectors.branch_pushed: a `publish: none` workflow, or work pushed before a failure).
    pushed = Q(status__in=Task.FINISHED, branch__gt="") & ~Q(head_commit="") & ~Q(head_commit=F("base_commit"))
    delivered = tasks.filter(Q(pk__in=_delivered(tasks)) | pushed)
    result.results = delivered.count()
    result.pull_requests = delivered.exclude(pr_url="").count()
    result.branches = result.results - result.pull_requests
    result.median_trigger_to_pr_seconds = statistics.median(durations) if durations else None
    result.pull_outcomes, result.outcomes_by_workflow, result.outcomes_by_provider = _pull_outcomes(tasks)
    return result


NO_PROVIDER = "(no building stage)"
NOT_STARTED = "(not started)"


def workflow_key(source: str, snapshot: dict) -> str:
    """A workflow as people can tell it apart: where it was read from and the first characters
    of its fingerprint (the same as an evaluation run's of the same workflow)."""
    if not snapshot:
        return NOT_STARTED
    return f"{source or 'workflow'} · {fingerprint_of(snapshot)[:8]}"


def _pull_outcomes(tasks) -> tuple[Outcomes, list[Outcomes], list[Outcomes]]:
    """Outcomes of the GitHub tasks among `tasks`: all together, per workflow, per provider of
    the building stage."""
    github = tasks.filter(repository__kind=Repository.Kind.GITHUB).exclude(status=Task.Status.SKIPPED)
    ran = Q(rounds__started_at__isnull=False) & ~Q(rounds__kind=Round.Kind.COMMAND)
    rows = list(
        github.annotate(rounds_ran=Count("rounds", filter=ran)).values(
            "id", "workflow", "workflow_source", "cost_usd", "triggered_at", "pr_opened_at", "pr_outcome", "rounds_ran"
        )
    )
    providers = dict(Stage.objects.filter(task__in=github, name="building", parent__isnull=True).values_list("task_id", "provider"))
    everything = Outcomes(key="all")
    by_workflow: dict[str, Outcomes] = {}
    by_provider: dict[str, Outcomes] = {}
    waits: dict[int, list[float]] = {}
    for row in rows:
        groups = [
            everything,
            by_workflow.setdefault(k := workflow_key(row["workflow_source"], row["workflow"]), Outcomes(key=k)),
            by_provider.setdefault(p := providers.get(row["id"]) or NO_PROVIDER, Outcomes(key=p)),
        ]
        for group in groups:
            group.tasks += 1
            group.cost_usd += row["cost_usd"] or ZERO
            if row["pr_outcome"]:
                group.pull_requests += 1
            if row["pr_outcome"] == Task.PullOutcome.MERGED:
                group.merged += 1
                group.merged_rounds += row["rounds_ran"]
            elif row["pr_outcome"] == Task.PullOutcome.CLOSED:
                group.closed += 1
            elif row["pr_outcome"] == Task.PullOutcome.OPEN:
                group.open += 1
            if row["pr_opened_at"] and row["triggered_at"]:
                waits.setdefault(id(group), []).append((row["pr_opened_at"] - row["triggered_at"]).total_seconds())
    for group in [everything, *by_workflow.values(), *by_provider.values()]:
        if found := waits.get(id(group)):
            group.median_trigger_to_first_pr_seconds = statistics.median(found)
    return everything, _by_key(by_workflow), _by_key(by_provider)


def _by_key(groups: dict[str, Outcomes]) -> list[Outcomes]:
    return sorted(groups.values(), key=lambda g: g.key)


def _rates(qs, key: str, *, pipeline_order: bool = False) -> list[Rate]:
    """Success rates grouped by `key`; stages in the order a pipeline runs them (their mean
    position, so planning comes before building), anything else alphabetically."""
    cancelled = Q(outcome=StageResult.Outcome.CANCELLED)
    rows = qs.values(key).annotate(
        attempts=Count("id", filter=~cancelled),
        succeeded=Count("id", filter=Q(success=True)),
        cancelled=Count("id", filter=cancelled),
        position=Avg("stage__position"),
    ).order_by()
    ordered = sorted(rows, key=lambda r: (r["position"], r[key] or "") if pipeline_order else (r[key] or ""))
    return [Rate(key=r[key] or NONE, attempts=r["attempts"], succeeded=r["succeeded"], cancelled=r["cancelled"]) for r in ordered]


def _delivered(tasks):
    return StageResult.objects.filter(task__in=tasks, stage__name="pr_creation", success=True).values("task_id")


def _trigger_to_pr_seconds(tasks) -> list[float]:
    """Trigger to the end of the successful pr_creation attempt (the moment the PR, or the
    branch in a local repository's origin, existed)."""
    opened = (
        StageResult.objects.filter(task__in=tasks, stage__name="pr_creation", success=True)
        .values_list("task_id", "task__triggered_at", "completed_at")
        .order_by("task_id", "completed_at")
    )
    first: dict[int, float] = {}
    for task_id, triggered_at, completed_at in opened:
        if task_id not in first and triggered_at and completed_at:
            first[task_id] = (completed_at - triggered_at).total_seconds()
    return list(first.values())
