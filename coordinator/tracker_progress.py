"""The progress comment on trackers other than GitHub (GitLab notes, Linear and Jira comments):
one comment per task on its issue, edited in place, through the `Tracker` seam.

The same rules as `coordinator.progress` (whose body, marker and retry rules it reuses): a sync
when a status event is newer than the comment; create claimed by a conditional UPDATE; a
coordinator that died between posting and recording the id is covered by looking for the
task's marker first. The comment id is kept as text (`ProgressComment.comment_key`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from pipeline.models import AgentEvent, Repository, Task
from pipeline.trackers import TRACKERS, TrackerError, tracker_for, tracker_named

from .models import ProgressComment
from .progress import CREATE_CLAIM_SECONDS, MIN_EDIT_SECONDS, RECENT, RETRY_CAP_SECONDS, marker, progress_body

log = logging.getLogger(__name__)


def configured_kinds() -> list[str]:
    return [kind for kind in TRACKERS if kind != Repository.Kind.GITHUB and tracker_named(kind).configured()]


def tasks_needing_sync(now, kinds: list[str]):
    last_status = AgentEvent.objects.filter(task=OuterRef("pk"), kind=AgentEvent.Kind.STATUS).order_by("-id").values("id")[:1]
    return (
        Task.objects.filter(Q(repository__tracker_kind__in=kinds) | Q(repository__tracker_kind="", repository__kind__in=kinds))
        .exclude(status=Task.Status.SKIPPED)
        .filter(Q(status__in=Task.ACTIVE) | Q(finished_at__gte=now - RECENT))
        .annotate(last_status=Subquery(last_status))
        .filter(Q(progress_comment__isnull=True) | Q(last_status__gt=F("progress_comment__last_event_id")))
        .filter(
            Q(progress_comment__isnull=True) | Q(progress_comment__retry_at__isnull=True) | Q(progress_comment__retry_at__lte=now)
        )
        .select_related("repository")
        .order_by("last_status")
    )


def sync_one_tracker_comment(*, min_edit_seconds: float = MIN_EDIT_SECONDS) -> bool:
    """Bring one task's progress comment up to date. True when one was looked at."""
    kinds = configured_kinds()
    if not kinds:
        return False
    now = timezone.now()
    task = tasks_needing_sync(now, kinds).first()
    if task is None:
        return False
    progress, _ = ProgressComment.objects.get_or_create(task=task)
    try:
        sync(task, progress, now, min_edit_seconds=min_edit_seconds)
    except TrackerError as exc:
        delay = min(RETRY_CAP_SECONDS, max(exc.retry_after or 0, 2 ** min(progress.failures, 12)))
        ProgressComment.objects.filter(pk=progress.pk).update(
            failures=F("failures") + 1, retry_at=now + timedelta(seconds=delay), last_error=str(exc)[:2000]
        )
        log.warning("task %s: progress comment not written (retry in %.0f s): %s", task.pk, delay, exc)
    return True


def sync(task: Task, progress: ProgressComment, now, *, min_edit_seconds: float) -> None:
    tracker = tracker_for(task.repository)
    body = progress_body(task)
    done = {"last_event_id": task.last_status or 0, "synced_at": now, "failures": 0, "last_error": "", "retry_at": None}
    if progress.comment_key and body == progress.body:
        ProgressComment.objects.filter(pk=progress.pk).update(**done)
        return
    key = progress.comment_key
    if not key:
        key = create(tracker, task, progress, body, now)
        if not key:
            ProgressComment.objects.filter(pk=progress.pk).update(retry_at=now + timedelta(seconds=5))
            return
    else:
        try:
            tracker.comment_update(task=task, comment_id=key, body=body)
        except TrackerError as exc:
            if exc.status != 404:
                raise
            ProgressComment.objects.filter(pk=progress.pk).update(comment_key="", create_attempted_at=None, body="")
            return
    ProgressComment.objects.filter(pk=progress.pk).update(
        comment_key=key,
        body=body,
        writes=F("writes") + 1,
        **{**done, "retry_at": now + timedelta(seconds=min_edit_seconds) if min_edit_seconds else None},
    )


def create(tracker, task: Task, progress: ProgressComment, body: str, now) -> str:
    """Post the comment once; returns its id ("" when another coordinator is at it)."""
    attempted = progress.create_attempted_at
    if attempted is not None:
        if attempted > now - timedelta(seconds=CREATE_CLAIM_SECONDS):
            return ""
        for comment in tracker.comments(task=task):
            if marker(task) in comment["body"]:
                tracker.comment_update(task=task, comment_id=comment["id"], body=body)
                ProgressComment.objects.filter(pk=progress.pk).update(comment_key=comment["id"])
                return comment["id"]
    claimed = ProgressComment.objects.filter(pk=progress.pk, comment_key="", create_attempted_at=attempted).update(
        create_attempted_at=now
    )
    if not claimed:
        return ""
    key = tracker.comment_create(task=task, body=body)
    ProgressComment.objects.filter(pk=progress.pk).update(comment_key=key)
    return key
