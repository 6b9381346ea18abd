"""What became of a task's pull request: opened, then merged, closed unmerged, or open again.

The coordinator learns it twice over, from the `pull_request` webhook (`closed`, `reopened`)
and from the conversation poller (`GET /pulls/{n}`), in any order, any number of times. Both
report GitHub's state with GitHub's time of it, and `pull_outcome_record` keeps the latest one
by that time with one conditional UPDATE:

- the same outcome again (a redelivery, the poll after the webhook) changes nothing, so an
  outcome is recorded and announced once;
- a merge is final (GitHub cannot reopen a merged pull request);
- an older observation never overwrites a newer one: a poll that read "open" just before the
  close and writes just after it loses to the close (its `updated_at` is not later than
  `closed_at`); a reopening is newer than the close it undoes, so the task goes back to open.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import Task
from .events import event_status


def pull_opened_record(*, task: Task, url: str, number: int | None) -> None:
    """The pull request TAC-X just opened (or updated) for `task`. Its first opening is kept
    (`pr_opened_at`, for trigger → first PR); a pull request with another number than the
    task's (the old one was closed, so pr_creation opened a new one) starts open."""
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(pr_url=url)
        if number is not None:  # None: a local repository, a branch in its origin and no PR
            Task.objects.filter(pk=task.pk).exclude(pr_number=number).update(
                pr_number=number, pr_outcome=Task.PullOutcome.OPEN, pr_outcome_at=None, pr_outcome_source=""
            )
            Task.objects.filter(pk=task.pk, pr_outcome="").update(pr_outcome=Task.PullOutcome.OPEN)
            Task.objects.filter(pk=task.pk, pr_opened_at__isnull=True).update(pr_opened_at=timezone.now())
    task.refresh_from_db(fields=["pr_url", "pr_number", "pr_opened_at", "pr_outcome", "pr_outcome_at", "pr_outcome_source"])


def pull_outcome_of(*, state: str, merged: bool) -> str:
    """GitHub's (`state`, `merged`) as an outcome; ValueError for a state GitHub does not send."""
    if merged:
        return Task.PullOutcome.MERGED
    if state == "closed":
        return Task.PullOutcome.CLOSED
    if state == "open":
        return Task.PullOutcome.OPEN
    raise ValueError(f"state must be open or closed, not {state!r}")


def pull_outcome_record(*, task: Task, number: int, state: str, merged: bool, at: datetime, source: str) -> bool:
    """Record GitHub's word on pull request `number` of `task`: `state` and `merged` as GitHub
    gives them, `at` GitHub's time of that state (merged_at, closed_at, or updated_at for an
    open one), `source` webhook or poll. Returns True when it changed the outcome (then a status
    event says so), False when it was already known, older than what is recorded, or about
    another pull request than the task's."""
    outcome = pull_outcome_of(state=state, merged=merged)
    rows = (
        Task.objects.filter(pk=task.pk, pr_number=number).exclude(pr_outcome=outcome).exclude(pr_outcome=Task.PullOutcome.MERGED)
    )
    if outcome == Task.PullOutcome.OPEN:
        # Undoing a close needs a strictly later time: a poll's stale "open" may carry the
        # same second as the close it missed (GitHub's times are whole seconds).
        rows = rows.filter(Q(pr_outcome_at__isnull=True) | Q(pr_outcome_at__lt=at))
    else:
        rows = rows.filter(Q(pr_outcome_at__isnull=True) | Q(pr_outcome_at__lte=at))
    if not rows.update(pr_outcome=outcome, pr_outcome_at=at, pr_outcome_source=source):
        return False
    task.refresh_from_db(fields=["pr_outcome", "pr_outcome_at", "pr_outcome_source", "status"])
    said = {"merged": "was merged", "closed": "was closed without merging", "open": "was reopened"}[outcome]
    event_status(task, f"pull request #{number} {said} (seen by the {source})", pr_outcome=outcome)
    return True
