"""The live stream's own lines: status events, and pruning old transcripts."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from .. import live
from ..models import AgentEvent, Task


def event_status(task: Task, message: str, **data) -> AgentEvent:
    event = AgentEvent.objects.create(
        task=task,
        kind=AgentEvent.Kind.STATUS,
        data={"message": message, "task_status": task.status, **data},
    )
    live.notify_after_commit(task.pk, event.pk)
    return event


def events_prune(*, older_than_days: float, limit: int = 5000) -> int:
    """Delete up to `limit` transcript events (everything but status events) of tasks finished
    more than `older_than_days` ago; returns how many. The tasks, attempts and their totals
    stay; a finished task's page then shows its timeline without the transcript."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    ids = list(
        AgentEvent.objects.filter(task__status__in=Task.FINISHED, task__finished_at__lt=cutoff)
        .exclude(kind=AgentEvent.Kind.STATUS)
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    if not ids:
        return 0
    deleted, _ = AgentEvent.objects.filter(pk__in=ids).delete()
    return deleted
