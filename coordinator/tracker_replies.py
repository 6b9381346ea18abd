"""The reply to a round started by a comment on a Linear or Jira issue, posted as a comment on
that issue (GitHub's loop, `coordinator.replies`, and the GitLab one, `forge_replies`, post on
their own forges; a Linear- or Jira-tracked repository's code is on one of them, but the comment
that started the round was the tracker's).

Claimed by a conditional UPDATE and posted once: a coordinator that died after posting and
before recording it finds the round's marker among the issue's comments instead of posting
again. These trackers have no reactions TAC-X uses, so there is no 👀.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from pipeline.models import Round
from pipeline.trackers import TrackerError, tracker_named

from .replies import FINAL, REPLY_CLAIM_SECONDS, reply_body, round_marker

KINDS = ("linear", "jira")


def configured_kinds() -> list[str]:
    return [kind for kind in KINDS if tracker_named(kind).configured()]


def reply_one() -> bool:
    """Post the reply of one finished round whose comment was on a Linear or Jira issue."""
    kinds = configured_kinds()
    if not kinds:
        return False
    now = timezone.now()
    stale = now - timedelta(seconds=REPLY_CLAIM_SECONDS)
    round_ = (
        Round.objects.filter(
            status__in=FINAL, replied_at__isnull=True, task__repository__tracker_kind__in=kinds, context__has_key="reply_to"
        )
        .filter(Q(reply_claimed_at__isnull=True) | Q(reply_claimed_at__lt=stale))
        .select_related("task__repository")
        .order_by("id")
        .first()
    )
    if round_ is None:
        return False
    claimed_before = round_.reply_claimed_at
    if not Round.objects.filter(pk=round_.pk, replied_at__isnull=True, reply_claimed_at=claimed_before).update(
        reply_claimed_at=now
    ):
        return True  # another coordinator got there first
    task = round_.task
    tracker = tracker_named(task.repository.tracker_kind)
    try:
        if claimed_before is not None:
            for comment in tracker.comments(task=task):
                if round_marker(round_) in comment["body"]:
                    Round.objects.filter(pk=round_.pk).update(replied_at=now)
                    return True
        tracker.comment_create(task=task, body=reply_body(round_))
    except TrackerError:
        Round.objects.filter(pk=round_.pk).update(reply_claimed_at=claimed_before)
        raise
    Round.objects.filter(pk=round_.pk).update(replied_at=timezone.now())
    return True
