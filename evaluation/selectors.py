"""Reading evaluations: a run's figures, runs side by side, and the export."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from django.db.models import Count, Q, Sum

from .models import EvalResult, EvalRun

Outcome = EvalResult.Outcome


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class RunSummary:
    """A run's figures. `resolve_rate` is resolved / instances (instances that could not be
    evaluated count as not resolved, as SWE-bench's report does); the $ figures are over the
    instances that are done; times are the tasks' wall times."""

    run_id: int
    instances: int
    done: int
    resolved: int
    outcomes: dict[str, int] = field(default_factory=dict)
    cost_usd: Decimal = Decimal("0")
    tokens: int = 0
    resolve_rate: float | None = None
    cost_per_instance: Decimal | None = None
    cost_per_resolved: Decimal | None = None
    median_seconds: float | None = None
    p90_seconds: float | None = None

    def progress(self) -> str:
        """ "37/120 done, 14 resolved, $3.20" """
        return f"{self.done}/{self.instances} done, {self.resolved} resolved, ${self.cost_usd:.2f}"

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("cost_usd", "cost_per_instance", "cost_per_resolved"):
            data[key] = None if data[key] is None else str(data[key])
        return data


def run_summary(run: EvalRun) -> RunSummary:
    results = EvalResult.objects.filter(run=run)
    counts = results.aggregate(
        instances=Count("id"),
        done=Count("id", filter=Q(status=EvalResult.Status.DONE)),
        resolved=Count("id", filter=Q(outcome=Outcome.RESOLVED)),
        cost=Sum("cost_usd", filter=Q(status=EvalResult.Status.DONE)),
        input=Sum("input_tokens"),
        output=Sum("output_tokens"),
        cache_read=Sum("cache_read_tokens"),
        cache_write=Sum("cache_write_tokens"),
    )
    outcomes = dict(results.filter(status=EvalResult.Status.DONE).values_list("outcome").annotate(n=Count("id")).order_by())
    cost = counts["cost"] or Decimal("0")
    done, resolved, instances = counts["done"], counts["resolved"], counts["instances"]
    times = [t for t in results.filter(status=EvalResult.Status.DONE, wall_seconds__isnull=False).values_list("wall_seconds", flat=True)]
    return RunSummary(
        run_id=run.pk,
        instances=instances,
        done=done,
        resolved=resolved,
        outcomes=outcomes,
        cost_usd=cost,
        tokens=sum(counts[k] or 0 for k in ("input", "output", "cache_read", "cache_write")),
        resolve_rate=resolved / instances if instances else None,
        cost_per_instance=(cost / done).quantize(Decimal("0.000001")) if done else None,
        cost_per_resolved=(cost / resolved).quantize(Decimal("0.000001")) if resolved else None,
        median_seconds=_percentile(times, 50),
        p90_seconds=_percentile(times, 90),
    )


def runs_compared(runs: Iterable[EvalRun]) -> tuple[list[str], dict[tuple[int, str], EvalResult]]:
    """The instance ids of the runs (in order of first appearance) and each run's result per
    instance, for a side-by-side table."""
    runs = list(runs)
    order: dict[str, None] = {}
    cells: dict[tuple[int, str], EvalResult] = {}
    for result in EvalResult.objects.filter(run__in=runs).order_by("position", "run_id").defer("diff", "instance"):
        order.setdefault(result.instance_id, None)
        cells[(result.run_id, result.instance_id)] = result
    return list(order), cells


def export_lines(run: EvalRun) -> Iterable[str]:
    """One JSON line per instance in SWE-bench's predictions shape (``instance_id``,
    ``model_name_or_path``, ``model_patch``) with the outcome and OpenHands-style metrics."""
    model = f"tacx-{run.workflow_fingerprint[:12]}"
    for result in EvalResult.objects.filter(run=run).order_by("position"):
        yield json.dumps(
            {
                "instance_id": result.instance_id,
                "model_name_or_path": model,
                "model_patch": result.diff,
                "outcome": result.outcome or result.status,
                "resolved": result.outcome == Outcome.RESOLVED,
                "reason": result.reason,
                "tests_status": result.tests,
                "metrics": {
                    "accumulated_cost": float(result.cost_usd),
                    "input_tokens": result.input_tokens,
                    "output_tokens": result.output_tokens,
                    "cache_read_tokens": result.cache_read_tokens,
                    "cache_write_tokens": result.cache_write_tokens,
                },
                "wall_seconds": result.wall_seconds,
                "attempts": result.attempts,
                "rounds": result.rounds,
                "workflow_fingerprint": run.workflow_fingerprint,
            },
            ensure_ascii=False,
        )


def run_report(run: EvalRun) -> dict:
    """SWE-bench's report shape (ids per outcome) plus the run's figures."""
    by_outcome: dict[str, list[str]] = {o.value: [] for o in Outcome}
    for instance_id, outcome in EvalResult.objects.filter(run=run, status=EvalResult.Status.DONE).values_list("instance_id", "outcome"):
        by_outcome.setdefault(outcome, []).append(instance_id)
    summary = run_summary(run)
    return {
        "total_instances": summary.instances,
        "completed_instances": summary.done,
        "resolved_instances": summary.resolved,
        "resolved_ids": by_outcome[Outcome.RESOLVED],
        "unresolved_ids": by_outcome[Outcome.UNRESOLVED],
        "empty_patch_ids": by_outcome[Outcome.EMPTY_PATCH],
        "error_ids": by_outcome[Outcome.ERROR] + by_outcome[Outcome.AGENT_ERROR],
        "summary": summary.to_json(),
    }
