"""What a tracker's events become: tasks, cancellations and rounds, from its webhook
deliveries (`tracker_webhooks`) and from polling (`TrackerSource`), for every tracker but
GitHub (whose older paths are `deliveries` and `github_source`).

Both paths end in `event_act`, which uses the same services as GitHub's paths:
`triggers.trigger_handle` (authorization by the tracker's `permission`, one active task per
issue or key), `untrigger_handle`, `unassign_handle`, and `conversation.comment_handle` for a
comment addressed to TAC-X (one round per comment id). A comment or pipeline event that a
forge module knows better (GitLab merge requests: `coordinator.gitlab_rounds`) is handed to
the handler registered for its tracker kind in `ROUND_HANDLERS`.

Exactly once across webhook, redelivery and poll: a redelivery has the same delivery id (one
row); a poll creates a task only for a trigger newer than the issue's latest task (as the GitHub
poller does), and the active-task constraint holds under races.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db.models import Max
from django.utils import timezone

from pipeline import services
from pipeline.models import Repository, Task
from pipeline.trackers import TRACKERS, Tracker, TrackerError, TrackerEvent, tracker_named

from . import conversation, gitlab_rounds
from .lookups import task_for_issue
from .models import WebhookDelivery
from .sources import IssueSource, SourceUnavailable
from .triggers import ASSIGNMENT_SOURCE, IssueTrigger, trigger_handle, unassign_handle, untrigger_handle

log = logging.getLogger(__name__)

# tracker kind -> handler(tracker, repository, event, source) -> (task, text) for the events
# "comment" on a merge request and "pipeline" (registered by the forge's module).
ROUND_HANDLERS: dict[str, Callable[[Tracker, Repository, TrackerEvent, str], tuple[Task | None, str]]] = {
    Repository.Kind.GITLAB: gitlab_rounds.event_act,
}


def trigger_of(repository: Repository, event: TrackerEvent, *, source: str, received_at=None) -> IssueTrigger:
    """The trigger of an event. A delivery's trigger time is the later of the event's time and
    its receipt (as for GitHub): the poller's label event may be a moment after the issue's
    `updated_at`, and must not look newer than the task the delivery started."""
    issue = event.issue
    return IssueTrigger(
        repository=repository,
        number=issue.number,
        key=issue.key,
        title=issue.title,
        body=issue.body,
        url=issue.url,
        labeler=event.actor.login,
        labeler_type=event.actor.type,
        source=ASSIGNMENT_SOURCE if event.via == "assignment" else source,
        triggered_at=max(filter(None, [event.at_time, received_at])) if (event.at_time or received_at) else timezone.now(),
        labels=issue.labels,
        via=event.via,
    )


def issue_tasks(repository: Repository, event: TrackerEvent):
    issue = event.issue
    if issue.key:
        return Task.objects.filter(repository=repository, tracker_issue_key=issue.key)
    return Task.objects.filter(repository=repository, issue_number=issue.number, tracker_issue_key="")


def event_act(
    tracker: Tracker, repository: Repository, event: TrackerEvent, *, source: str, received_at=None
) -> tuple[Task | None, str]:
    """Do what one event asks (see the module docstring). `source`: webhook or poll. Raises
    TrackerError when the tracker cannot answer now (the delivery or poll is retried)."""
    issue = event.issue
    if event.action == "trigger":
        if issue.state != "open":
            return None, "ignored: the issue is not open"
        if source == "poll":
            tasks = issue_tasks(repository, event)
            if tasks.filter(status__in=Task.ACTIVE).exists():
                return None, "an unfinished task exists"
            latest = tasks.aggregate(at=Max("triggered_at"))["at"]
            at = event.at_time
            if latest is not None and (at is None or at <= latest):
                return None, "that trigger already had its task"
        return trigger_handle(tracker, trigger_of(repository, event, source=source, received_at=received_at))
    if event.action == "untrigger":
        return untrigger_handle(
            repository=repository,
            number=issue.number,
            key=issue.key,
            reason=event.reason or "the trigger was removed",
            label_only=event.via == "label",
        )
    if event.action == "unassign":
        return unassign_handle(
            repository=repository, number=issue.number, key=issue.key, by=event.actor.login, login=tracker.own_user()
        )
    if (
        event.action in ROUND_HANDLERS_ACTIONS
        and tracker.kind in ROUND_HANDLERS
        and (event.detail.get("mr") or event.action == "pipeline")
    ):
        return ROUND_HANDLERS[tracker.kind](tracker, repository, event, source)
    if event.action == "comment":
        task = issue_tasks(repository, event).exclude(status=Task.Status.SKIPPED).order_by("-id").first()
        if task is None and not issue.key:
            task = task_for_issue(repository, issue.number)
        if task is None:
            return None, "ignored: no TAC-X task for this issue"
        d = event.detail
        comment = {
            "id": d.get("id"),
            "user": event.actor.login,
            "user_type": event.actor.type,
            "body": d.get("body", ""),
            "created_at": event.at,
            "html_url": d.get("url", ""),
        }
        return task, conversation.comment_handle(
            tracker, task=task, comment=comment, reply_to=issue.number, source=source, frozen=True
        )
    return None, f"ignored: {event.action} events do nothing here"


ROUND_HANDLERS_ACTIONS = ("comment", "pipeline")


def delivery_act(delivery: WebhookDelivery) -> tuple[Task | None, str, str]:
    """Act on a recorded tracker delivery. Returns (task, what happened, final status)."""
    kind = delivery.payload.get("tracker", delivery.event)
    tracker = tracker_named(kind)
    task, results = None, []
    for data in delivery.payload.get("events") or []:
        event = TrackerEvent.from_json(data)
        repository = Repository.objects.filter(pk=event.repository_id, enabled=True).first()
        if repository is None or repository.tracker != kind:
            results.append("ignored: the repository is no longer registered for this tracker, or is disabled")
            continue
        found, what = event_act(tracker, repository, event, source="webhook", received_at=delivery.received_at)
        task = found or task
        results.append(what)
    status = WebhookDelivery.Status.DONE if task is not None else WebhookDelivery.Status.IGNORED
    return task, "; ".join(results) or "nothing to do", status


class TrackerSource(IssueSource):
    """Polling one tracker kind: the safety net behind its webhooks."""

    def __init__(self, kind: str):
        self.kind = kind
        self.tracker = tracker_named(kind)

    def poll(self, repository: Repository) -> str:
        try:
            events = self.tracker.issues_triggered(repository)
        except TrackerError as exc:
            if exc.retry_after is not None:
                raise SourceUnavailable(str(exc), retry_after=exc.retry_after) from exc
            raise
        created = 0
        for event in events:
            _, what = event_act(self.tracker, repository, event, source="poll")
            created += what.endswith("created")
        services.repository_poll_succeeded(repository=repository)
        return f"{len(events)} triggered issue(s), {created} task(s) created"


def tracker_sources() -> dict[str, IssueSource]:
    """A polling source for each registered, configured tracker other than GitHub."""
    return {kind: TrackerSource(kind) for kind in TRACKERS if kind != Repository.Kind.GITHUB and tracker_named(kind).configured()}
