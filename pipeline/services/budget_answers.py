"""Answering a budget pause (see `budget_pauses`): a person raises the limit (the stage runs again
where it stopped) or ends the task; nobody answering ends it after `BUDGET_PAUSE_SECONDS`.

Who may answer is the caller's business (the dashboard and the API check `pipeline.approve_task`;
`/tacx budget` on GitHub needs write access, as `/tacx approve`). Each answer is one conditional
UPDATE of the waiting pause, so two answers at once (a comment and a button) act once; the
second is told the task is no longer paused.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from .. import alerts, budgets
from ..models import BudgetPause, Stage, Task
from .events import event_status
from .progress import enqueue_stage_job, task_fail


class NotPaused(ValueError):
    """The task has no pause waiting for an answer (never paused, answered already, or still
    being paused)."""


def _waiting(task: Task) -> BudgetPause:
    pause = BudgetPause.objects.filter(task=task, status__in=BudgetPause.OPEN).order_by("-id").first()
    task.refresh_from_db(fields=["status"])
    if pause is None:
        raise NotPaused(f"task {task.pk} is {task.get_status_display()}, not paused by a budget: there is nothing to answer")
    if pause.status == BudgetPause.Status.STOPPING:
        raise NotPaused(f"task {task.pk} is still being paused (its agent's work is being kept); answer in a few seconds")
    return pause


def raise_refusal(pause: BudgetPause, *, usd: Decimal | None, tokens: int | None) -> str:
    """Why this raise cannot answer `pause`, or "": the budget has no limit in that unit, or the
    raised limit would still be reached (the stage would pause again at once)."""
    what = f"the {pause.scope} budget" + (f" of stage {pause.stage_name}" if pause.stage_name else "")
    if usd is not None:
        if pause.limit_usd is None:
            return f"{what} has no USD limit (it counts tokens): raise it with `/tacx budget +N tokens`"
        new = pause.limit_usd + usd
        if new >= budgets.MAX_RAISE_USD:
            return f"{what} cannot go above {budgets.money(budgets.MAX_RAISE_USD)}"
        if pause.spent_usd >= new:
            return f"{what} would be {budgets.money(new)}, still reached ({budgets.money(pause.spent_usd)} spent): raise it by more than {budgets.money(pause.spent_usd - pause.limit_usd)}"
        if pause.limit_tokens is not None and pause.spent_tokens >= pause.limit_tokens:
            return f"{what} was reached in tokens ({pause.spent_tokens:,} of {pause.limit_tokens:,}): raise it with `/tacx budget +N tokens`"
    if tokens is not None:
        if pause.limit_tokens is None:
            return f"{what} has no token limit (it counts US dollars): raise it with `/tacx budget +2.00`"
        new_tokens = pause.limit_tokens + tokens
        if pause.spent_tokens >= new_tokens:
            return f"{what} would be {new_tokens:,} tokens, still reached ({pause.spent_tokens:,} spent): raise it by more than {pause.spent_tokens - pause.limit_tokens:,} tokens"
        if pause.limit_usd is not None and pause.spent_usd >= pause.limit_usd:
            return f"{what} was reached in US dollars ({budgets.money(pause.spent_usd)} of {budgets.money(pause.limit_usd)}): raise it with `/tacx budget +2.00`"
    return ""


def budget_raise(*, task: Task, by: str, source: str, usd: Decimal | None = None, tokens: int | None = None, enqueue: bool = True) -> BudgetPause:
    """Raise the budget that paused `task` by `usd` or `tokens` (one of them) and run its stage
    again from where it stopped: paused → running, the stage queued (the next attempt resumes
    the CLI session where the provider can, else starts on the kept work with a note in its
    prompt: `pipeline.attempt`). Raises `NotPaused` or ValueError with the reason."""
    if (usd is None) == (tokens is None):
        raise ValueError("give a raise in US dollars or in tokens (one of them)")
    if (usd is not None and usd <= 0) or (tokens is not None and tokens <= 0):
        raise ValueError("a raise must be more than zero")
    pause = _waiting(task)
    if refusal := raise_refusal(pause, usd=usd, tokens=tokens):
        raise ValueError(refusal)
    amount = budgets.money(usd) if usd is not None else f"{tokens:,} tokens"
    with transaction.atomic():
        answered = BudgetPause.objects.filter(pk=pause.pk, status=BudgetPause.Status.WAITING).update(
            status=BudgetPause.Status.RAISED, raise_usd=usd, raise_tokens=tokens, answered_by=by[:100], answer_source=source[:20], answered_at=timezone.now()
        )
        if not answered or not Task.objects.filter(pk=task.pk, status=Task.Status.PAUSED).update(status=Task.Status.RUNNING, status_reason=""):
            raise NotPaused(f"task {task.pk} was answered or changed meanwhile; reload and try again")
        Stage.objects.filter(pk=pause.stage_id, status=Stage.Status.PAUSED).update(status=Stage.Status.QUEUED, queued_at=Now(), finished_at=None, error="")
        task.refresh_from_db()
        pause.refresh_from_db()
        stage_name = pause.stage.name
        event_status(task, f"budget raised by {amount} by {by} ({source}): stage {stage_name} goes on", stage=stage_name, stage_status="queued", budget_pause=pause.pk)
        alerts.budget_pause_answered(pause=pause)
        if enqueue:
            stage_id = pause.stage_id
            transaction.on_commit(lambda: enqueue_stage_job(stage_id))
    return pause


def budget_stop(*, task: Task, by: str, source: str) -> BudgetPause:
    """End the paused `task` (status budget_exceeded; its work stays on the branch). Raises
    `NotPaused` when there is no pause to answer."""
    pause = _waiting(task)
    reason = f"ended at the budget pause by {by}: {pause.reason.removeprefix('budget exceeded: ')}"
    return _end(pause, status=BudgetPause.Status.STOPPED, by=by, source=source, reason=reason)


def budget_pause_expire(*, now=None, limit: int = 20) -> list[BudgetPause]:
    """End the tasks whose budget pause nobody answered by its `expires_at` (the coordinator's
    periodic step). Returns the pauses it ended."""
    now = now or timezone.now()
    ended = []
    for pause in BudgetPause.objects.filter(status=BudgetPause.Status.WAITING, expires_at__lte=now).order_by("expires_at")[:limit]:
        waited = _hours((now - pause.paused_at).total_seconds()) if pause.paused_at else "its time"
        reason = f"nobody answered the budget pause within {waited}: {pause.reason.removeprefix('budget exceeded: ')}"
        try:
            ended.append(_end(pause, status=BudgetPause.Status.EXPIRED, by="", source="timeout", reason=reason, now=now))
        except NotPaused:
            continue  # answered meanwhile
    return ended


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.0f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def _end(pause: BudgetPause, *, status: str, by: str, source: str, reason: str, now=None) -> BudgetPause:
    with transaction.atomic():
        answered = BudgetPause.objects.filter(pk=pause.pk, status=BudgetPause.Status.WAITING).update(
            status=status, answered_by=by[:100], answer_source=source[:20], answered_at=now or timezone.now()
        )
        if not answered:
            raise NotPaused(f"task {pause.task_id} was answered or changed meanwhile; reload and try again")
        Stage.objects.filter(pk=pause.stage_id, status=Stage.Status.PAUSED).update(status=Stage.Status.FAILED, finished_at=Now())
        task = Task.objects.select_related("repository").get(pk=pause.task_id)
        # Its own alert says who answered; task_fail's "budget_exceeded" alert would say it twice.
        task_fail(task=task, reason=reason, status=Task.Status.BUDGET_EXCEEDED, alert=False)
        pause.refresh_from_db()
        alerts.budget_pause_answered(pause=pause)
    return pause
