"""What TAC-X says back about rounds on forges other than GitHub (GitLab), through the seams:
👀 (an award emoji) on the note that started a round, and the reply of a finished round, in
the note's discussion when it was a thread on the diff, else on the merge request (or the issue,
for a note on the issue). The same claim rules as `coordinator.replies`: a reply is claimed by
a conditional UPDATE and posted once.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from pipeline.forges import forge_named
from pipeline.models import Repository, Round
from pipeline.trackers import TrackerError, tracker_named

from .replies import FINAL, REPLY_CLAIM_SECONDS, reply_body

KINDS = (Repository.Kind.GITLAB,)


def configured_kinds() -> list[str]:
    """The forge kinds here with credentials: none means no query at all (an idle coordinator)."""
    return [kind for kind in KINDS if forge_named(kind).configured()]


def react_one() -> bool:
    """👀 on the note of a round that was picked up (not refused). One per call."""
    kinds = configured_kinds()
    if not kinds:
        return False
    round_ = (
        Round.objects.filter(reacted_at__isnull=True, task__repository__kind__in=kinds)
        .exclude(status=Round.Status.REFUSED)
        .filter(context__has_key="react")
        .exclude(context__react=None)
        .select_related("task__repository")
        .order_by("id")
        .first()
    )
    if round_ is None or not forge_named(round_.task.repository.kind).configured():
        return False
    if not Round.objects.filter(pk=round_.pk, reacted_at__isnull=True).update(reacted_at=timezone.now()):
        return True
    try:
        forge_named(round_.task.repository.kind).reaction_create(task=round_.task, target=round_.context["react"])
    except TrackerError as exc:
        if exc.status not in (404, 410):
            Round.objects.filter(pk=round_.pk).update(reacted_at=None)
            raise
    return True


def reply_one() -> bool:
    """Post the reply of one finished round (claimed first, so it is posted once)."""
    kinds = configured_kinds()
    if not kinds:
        return False
    now = timezone.now()
    stale = now - timedelta(seconds=REPLY_CLAIM_SECONDS)
    round_ = (
        Round.objects.filter(
            status__in=FINAL, replied_at__isnull=True, task__repository__kind__in=kinds, context__has_key="reply_to"
        )
        .filter(Q(reply_claimed_at__isnull=True) | Q(reply_claimed_at__lt=stale))
        .select_related("task__repository")
        .order_by("id")
        .first()
    )
    if round_ is None or not forge_named(round_.task.repository.kind).configured():
        return False
    claimed_before = round_.reply_claimed_at
    if not Round.objects.filter(pk=round_.pk, replied_at__isnull=True, reply_claimed_at=claimed_before).update(
        reply_claimed_at=now
    ):
        return True
    task, context = round_.task, round_.context or {}
    on_mr = bool((context.get("react") or {}).get("mr")) or round_.kind in (Round.Kind.CI_FIX, Round.Kind.REVIEW)
    try:
        if on_mr:
            comment_id = forge_named(task.repository.kind).comment_reply(
                task=task, body=reply_body(round_), thread=str(context.get("discussion_id") or "")
            )
        else:
            comment_id = tracker_named(task.repository.tracker).comment_create(task=task, body=reply_body(round_))
    except TrackerError:
        Round.objects.filter(pk=round_.pk).update(reply_claimed_at=claimed_before)
        raise
    Round.objects.filter(pk=round_.pk).update(
        replied_at=timezone.now(), reply_comment_id=int(comment_id) if comment_id.isdigit() else None
    )
    return True
