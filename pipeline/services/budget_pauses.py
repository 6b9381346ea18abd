"""Pausing a task at a budget (`on_exceed: pause`): the record written when the meter stops the
agent, and the step that parks the task.

The order keeps the database true wherever a process dies:

1. the meter stops the agent; `budget_pause_begin` writes a `stopping` BudgetPause for the open
   attempt at once (the agent's work is not committed or pushed yet);
2. the attempt keeps the work (commit and push, as a budget stop always did) and `finish_attempt`
   records the attempt as `budget_exceeded`, sets the stage `paused` and calls
   `budget_pause_wait` in the same transaction: the task becomes `paused`, the pause `waiting`.

A worker that dies between 1 and 2 leaves a running stage with an open attempt and a `stopping`
pause: when its lease expires the reaper (`services.stage_reap_expired`) closes the attempt as
`budget_exceeded` ("worker lost while pausing") and pauses the task the same way, instead of
retrying the stage. A worker that dies before 1 is an ordinary lost worker: the retried attempt
finds the budget used up and pauses before it starts.

Answers (raise, stop, expiry) are in `budget_answers`.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_UP, Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Now
from django.utils import timezone

from .. import alerts, budgets
from ..models import BudgetPause, Stage, StageResult, Task
from ..workflow import Workflow
from .events import event_status


def budget_pause_begin(*, task: Task, stage: Stage, result: StageResult, reached: budgets.Reached) -> BudgetPause | None:
    """Record that `reached` (a budget that pauses) stopped the attempt `result`: a `stopping`
    pause. None when the task already has an open pause (the attempt then fails as a budget
    stop always did: a second pause would hide the first)."""
    try:
        with transaction.atomic():
            return BudgetPause.objects.create(
                task=task,
                stage=stage,
                result=result,
                scope=reached.scope,
                stage_name=reached.stage_name,
                reason=reached.reason[:4000],
                limit_usd=reached.usd,
                limit_tokens=reached.tokens,
                spent_usd=reached.spent.usd,
                spent_tokens=reached.spent.tokens,
            )
    except IntegrityError:
        return BudgetPause.objects.filter(task=task, result=result, status__in=BudgetPause.OPEN).first()


def budget_pause_wait(*, pause: BudgetPause, stage: Stage, now=None) -> bool:
    """The stopped attempt is recorded and its stage is `paused`: the task goes `running` →
    `paused` and the pause `stopping` → `waiting`, with the estimate of the rest of the workflow
    and the time it ends unanswered. Conditional on both; call it inside the transaction that
    paused the stage. False (and the stage and the pause closed as cancelled) when the task
    stopped running meanwhile (a cancel)."""
    now = now or timezone.now()
    task = Task.objects.select_related("repository").get(pk=pause.task_id)
    try:
        workflow = Workflow.from_json(task.workflow)
        estimate = budgets.rest_estimate(task=task, workflow=workflow, stage_name=stage.name)
    except (KeyError, ValueError):
        estimate = {"usd": None, "tokens": None, "stages": [], "unknown": []}
    expires = now + timedelta(seconds=float(settings.TACX.get("BUDGET_PAUSE_SECONDS") or 0))
    reason = pause_sentence(pause, estimate=estimate, expires=expires)
    paused = Task.objects.filter(pk=task.pk, status=Task.Status.RUNNING).update(status=Task.Status.PAUSED, status_reason=reason[:4000])
    if not paused:
        Stage.objects.filter(pk=stage.pk, status=Stage.Status.PAUSED).update(status=Stage.Status.CANCELLED, finished_at=Now())
        BudgetPause.objects.filter(pk=pause.pk, status__in=BudgetPause.OPEN).update(status=BudgetPause.Status.CANCELLED, answered_at=now)
        return False
    BudgetPause.objects.filter(pk=pause.pk).update(
        status=BudgetPause.Status.WAITING,
        paused_at=now,
        expires_at=expires,
        estimate=estimate,
        estimate_usd=estimate["usd"],
        estimate_tokens=estimate["tokens"],
    )
    pause.refresh_from_db()
    task.refresh_from_db()
    event_status(task, reason, stage=stage.name, stage_status="paused", budget_pause=pause.pk)
    alerts.budget_paused(pause=pause)
    return True


def pause_sentence(pause: BudgetPause, *, estimate: dict, expires) -> str:
    """The task's status reason while it waits: what was reached, the rest's estimate, how to
    answer and when it ends."""
    return (
        f"paused: budget: {pause.reason.removeprefix('budget exceeded: ').removeprefix('budget exceeded before start: ')}; "
        f"the rest of the workflow: {budgets.estimate_sentence(estimate)}. "
        f"Raise the limit (`/tacx budget +{suggested_raise(pause, estimate)}`) or end the task (`/tacx budget stop`); "
        f"it ends by itself at {expires:%Y-%m-%d %H:%M} UTC if nobody answers"
    )


def suggested_raise(pause: BudgetPause, estimate: dict) -> str:
    """A raise that would cover the estimate: "2.00" (USD) or "50000 tokens"."""
    if pause.limit_usd is not None and (pause.limit_tokens is None or pause.spent_usd >= pause.limit_usd):
        over = max(pause.spent_usd - pause.limit_usd, Decimal(0))
        wanted = over + (Decimal(estimate["usd"]) if estimate.get("usd") else pause.limit_usd)
        return f"{max(wanted, Decimal('0.01')).quantize(Decimal('0.01'), rounding=ROUND_UP)}"
    over = max(pause.spent_tokens - (pause.limit_tokens or 0), 0)
    wanted = over + (estimate.get("tokens") or pause.limit_tokens or 1)
    return f"{max(wanted, 1)} tokens"


def budget_pause_drop(*, pause: BudgetPause | None) -> None:
    """The attempt that began `pause` did not end in a pause (the task was cancelled meanwhile):
    close it so it does not stay open."""
    if pause is not None:
        BudgetPause.objects.filter(pk=pause.pk, status=BudgetPause.Status.STOPPING).update(
            status=BudgetPause.Status.CANCELLED, answered_at=timezone.now()
        )


def open_pause(task: Task) -> BudgetPause | None:
    return BudgetPause.objects.filter(task=task, status__in=BudgetPause.OPEN).order_by("-id").first()


def pause_continued(*, stage: Stage, result: StageResult) -> BudgetPause | None:
    """The raised pause that attempt `result` goes on from: the stage's previous attempt was
    stopped by a budget that pauses, and a person raised it."""
    previous = StageResult.objects.filter(stage=stage, id__lt=result.pk).order_by("-id").first()
    if previous is None:
        return None
    return BudgetPause.objects.filter(result=previous, status=BudgetPause.Status.RAISED).select_related("result").first()
