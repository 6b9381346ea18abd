"""GitHub webhook deliveries: recorded by the webhook view, handled by the coordinator.

`delivery_record` runs inside the request: it keeps only deliveries that can change something
(an `issues` event of a registered repository with the trigger label involved, an
assignment/unassignment of TAC-X's login, TACX_GITHUB_LOGIN, or a `pull_request` closed or
reopened that is a task's), stores them
under GitHub's unique delivery id (a redelivery is answered "duplicate" and does nothing) and
returns at once. The coordinator's `delivery_handle_one` then does what needs GitHub (the
labeler's permission) and calls the trigger services.

Why the coordinator and not the request or a django-q2 job: the q2 workers run agent stages
for up to hours (`queue_limit` == workers), so a q2 job could wait behind them for as long;
asking GitHub inside the request would tie the answer (and the trigger) to GitHub's API being
quick and up. The delivery row is a durable queue: nothing is lost when a process dies or
GitHub's API fails (the row is retried with back-off), and deliveries of one issue are handled
in the order received (labeled then unlabeled must not end with a running task).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from pipeline.github import GitHubClient, GitHubError
from pipeline.models import Repository
from pipeline.trackers import TrackerError

from . import conversation, conversation_intake, pull_outcomes, tracker_flow, wakeup
from .backoff import Backoff
from .lookups import repository_for
from .models import WebhookDelivery
from .triggers import ASSIGNMENT_SOURCE, IssueTrigger, is_own_login, own_login, trigger_handle, unassign_handle, untrigger_handle

log = logging.getLogger(__name__)

TRIGGER_ACTIONS = ("labeled", "opened", "reopened")
CANCEL_ACTIONS = ("unlabeled", "closed")
ASSIGN_ACTIONS = ("assigned", "unassigned")  # only when the assignee is TAC-X's login
# A claim older than this belongs to a coordinator that died while handling the delivery.
CLAIM_SECONDS = 120
MAX_ATTEMPTS = 20
RETRY_CAP_SECONDS = 600


@dataclass(frozen=True)
class Answer:
    status: int
    text: str


def label_names(issue: dict) -> list[str]:
    return [str(label.get("name", "")) for label in issue.get("labels") or [] if isinstance(label, dict)]


def same_label(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()  # GitHub label names are case-insensitive


MAX_ISSUE_NUMBER = 2**31 - 1  # the database column; GitHub's numbers are far below
MAX_LOGIN = 100  # GitHub logins are at most 39 characters


def payload_problem(payload: dict) -> str | None:
    """What makes a (correctly signed) `issues` payload unusable, or None. Checked before any
    field is used, so a forged or garbled shape is a 400 with the reason, never a 500."""
    for key in ("repository", "issue", "sender", "label", "assignee"):
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            return f"{key} must be an object"
    if not isinstance(payload.get("action", ""), str):
        return "action must be a string"
    issue = payload.get("issue") or {}
    if "number" in issue:
        number = issue["number"]
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_ISSUE_NUMBER:
            return f"issue.number must be a whole number from 1 to {MAX_ISSUE_NUMBER}"
    for key in ("title", "body", "html_url", "state", "updated_at"):
        if issue.get(key) is not None and not isinstance(issue[key], str):
            return f"issue.{key} must be a string"
    if issue.get("labels") is not None and not isinstance(issue["labels"], list):
        return "issue.labels must be a list"
    sender = payload.get("sender") or {}
    login = sender.get("login", "")
    if not isinstance(login, str) or len(login) > MAX_LOGIN:
        return f"sender.login must be a string of at most {MAX_LOGIN} characters"
    if not isinstance(sender.get("type", ""), str):
        return "sender.type must be a string"
    for key, field in (("repository", "full_name"), ("label", "name"), ("assignee", "login")):
        value = (payload.get(key) or {}).get(field, "")
        if not isinstance(value, str) or len(value) > 200:
            return f"{key}.{field} must be a string of at most 200 characters"
    return None


def relevance(event: str, payload: dict) -> tuple[Repository | None, str]:
    """The registered repository the delivery concerns, or None and why it is ignored."""
    if event != "issues":
        return None, f"ignored: {event} events start nothing"
    action = str(payload.get("action", ""))
    if action not in TRIGGER_ACTIONS + CANCEL_ACTIONS + ASSIGN_ACTIONS:
        return None, f"ignored: issues.{action}"
    if action in ASSIGN_ACTIONS:
        assignee = str((payload.get("assignee") or {}).get("login", ""))
        if not own_login():
            return None, f"ignored: issues.{action} (TACX_GITHUB_LOGIN is not set)"
        if not is_own_login(assignee):
            return None, f"ignored: {action} {assignee or 'nobody'}, not {own_login()}"
    issue = payload.get("issue") or {}
    if not isinstance(issue, dict) or "number" not in issue or "pull_request" in issue:
        return None, "ignored: not an issue"
    full_name = str((payload.get("repository") or {}).get("full_name", ""))
    repository = repository_for(full_name)
    if repository is None:
        return None, f"ignored: {full_name or 'the repository'} is not registered (or disabled)"
    if repository.tracker != Repository.Kind.GITHUB:
        return None, f"ignored: {full_name}'s issues come from {repository.get_tracker_kind_display()}"
    label = str((payload.get("label") or {}).get("name", ""))
    if action in ("labeled", "unlabeled") and not same_label(label, repository.trigger_label):
        return None, f"ignored: label {label!r} is not the trigger label"
    if action in ("opened", "reopened") and not any(same_label(n, repository.trigger_label) for n in label_names(issue)):
        return None, f"ignored: issue {action} without the trigger label"
    return repository, ""


def payload_summary(payload: dict) -> dict:
    """What the coordinator needs later, and nothing else."""
    issue = payload.get("issue") or {}
    sender = payload.get("sender") or {}
    return {
        "action": payload.get("action", ""),
        "repository": (payload.get("repository") or {}).get("full_name", ""),
        "label": (payload.get("label") or {}).get("name", ""),
        "assignee": (payload.get("assignee") or {}).get("login", ""),
        "sender": {"login": sender.get("login", ""), "type": sender.get("type", "")},
        "issue": {
            "number": issue.get("number"),
            "title": issue.get("title") or "",
            "body": issue.get("body") or "",
            "html_url": issue.get("html_url") or "",
            "state": issue.get("state") or "",
            "updated_at": issue.get("updated_at") or "",
            "labels": label_names(issue),
        },
    }


def delivery_record(*, delivery_id: str, event: str, payload: dict) -> Answer:
    """Record a verified delivery for the coordinator (or say why it is ignored).

    Never calls GitHub; a redelivery (same id) is answered "duplicate" and changes nothing.
    """
    if WebhookDelivery.objects.filter(delivery_id=delivery_id).exists():
        return Answer(200, "duplicate")
    if event in conversation.EVENTS:
        # Reviews, comments and checks on a task's PR or issue: rounds (coordinator.conversation).
        try:
            repository, number, ignored = conversation_intake.relevance(event, payload)
            summary = conversation_intake.payload_summary(event, payload) if repository is not None else {}
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            return Answer(400, f"bad payload: {type(exc).__name__}")
    elif event == "pull_request":
        # What became of a task's pull request: merged, closed unmerged, reopened.
        if str(payload.get("action", "")) in pull_outcomes.ACTIONS and (problem := pull_outcomes.payload_problem(payload)):
            return Answer(400, f"bad payload: {problem}")
        repository, number, ignored = pull_outcomes.relevance(payload)
        summary = pull_outcomes.payload_summary(payload) if repository is not None else {}
    else:
        if event == "issues" and (problem := payload_problem(payload)):
            return Answer(400, f"bad payload: {problem}")
        repository, ignored = relevance(event, payload)
        summary = payload_summary(payload) if repository is not None else {}
        number = summary.get("issue", {}).get("number")
    if repository is None:
        return Answer(200, ignored)
    try:
        with transaction.atomic():
            WebhookDelivery.objects.create(
                delivery_id=delivery_id,
                event=event,
                action=summary["action"],
                repository_full_name=repository.full_name,
                issue_number=number,
                sender=summary["sender"]["login"],
                payload=summary,
            )
            transaction.on_commit(wakeup.wake_coordinators)  # look now, not at the next tick
    except IntegrityError:
        return Answer(200, "duplicate")  # the same delivery raced in twice
    return Answer(202, "accepted")


# --- handling, in the coordinator ---------------------------------------------------------------


def next_delivery(now) -> WebhookDelivery | None:
    """The oldest delivery that is due and has no older unfinished delivery for its issue."""
    stale = now - timedelta(seconds=CLAIM_SECONDS)
    earlier = WebhookDelivery.objects.filter(
        repository_full_name=OuterRef("repository_full_name"),
        issue_number=OuterRef("issue_number"),
        id__lt=OuterRef("id"),
        status__in=[WebhookDelivery.Status.PENDING, WebhookDelivery.Status.PROCESSING],
    )
    return (
        WebhookDelivery.objects.filter(
            Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
            | Q(status=WebhookDelivery.Status.PROCESSING, claimed_at__lt=stale)
        )
        .exclude(Exists(earlier))
        .order_by("id")
        .first()
    )


def delivery_handle_one(client: GitHubClient, *, owner: str, backoff: Backoff | None = None) -> bool:
    """Claim the next due delivery (conditional UPDATE) and act on it.

    Returns True when a delivery was claimed or lost to another coordinator (call again at
    once), False when none is due. A GitHub failure puts the delivery back with a growing
    delay (GitHub's Retry-After when it gives one); after MAX_ATTEMPTS it is marked failed.
    """
    now = timezone.now()
    delivery = next_delivery(now)
    if delivery is None:
        return False
    claimed = WebhookDelivery.objects.filter(pk=delivery.pk, status=delivery.status, claimed_at=delivery.claimed_at).update(
        status=WebhookDelivery.Status.PROCESSING, claimed_by=owner, claimed_at=now, attempts=F("attempts") + 1
    )
    if not claimed:
        return True  # another coordinator got there first
    delivery.refresh_from_db()
    mine = WebhookDelivery.objects.filter(pk=delivery.pk, claimed_by=owner, status=WebhookDelivery.Status.PROCESSING)
    try:
        task, result, status = delivery_act(client, delivery)
    except Exception as exc:
        retry_after = exc.retry_after if isinstance(exc, (GitHubError, TrackerError)) else None
        if not isinstance(exc, (GitHubError, TrackerError)):
            log.exception("webhook delivery %s crashed", delivery.delivery_id)
        delay = min(RETRY_CAP_SECONDS, max(retry_after or 0, 2 ** min(delivery.attempts, 10)))
        if backoff is not None and retry_after and isinstance(exc, GitHubError):
            backoff.hold("github", retry_after)
        exhausted = delivery.attempts >= MAX_ATTEMPTS
        mine.update(
            status=WebhookDelivery.Status.FAILED if exhausted else WebhookDelivery.Status.PENDING,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            result=f"attempt {delivery.attempts} failed: {exc}"[:2000],
            processed_at=timezone.now() if exhausted else None,
        )
        return True
    mine.update(status=status, result=result[:2000], task=task, processed_at=timezone.now())
    return True


def delivery_act(client: GitHubClient, delivery: WebhookDelivery):
    """What the delivery asks for. Returns (task or None, result text, final status)."""
    if delivery.payload.get("tracker"):
        return tracker_flow.delivery_act(delivery)  # GitLab, Linear, Jira (coordinator.tracker_webhooks)
    if delivery.event in conversation.EVENTS:
        return conversation.delivery_act(client, delivery)
    if delivery.event == "pull_request":
        return pull_outcomes.delivery_act(delivery)
    data = delivery.payload
    issue = data.get("issue") or {}
    repository = repository_for(delivery.repository_full_name)
    if repository is None:
        return None, "ignored: the repository is no longer registered or is disabled", WebhookDelivery.Status.IGNORED
    sender = data.get("sender") or {}
    action = delivery.action
    if action in CANCEL_ACTIONS:
        what = "the trigger label was removed" if action == "unlabeled" else "the issue was closed"
        task, result = untrigger_handle(
            repository=repository,
            number=int(issue["number"]),
            reason=f"{what} by {sender.get('login') or 'someone'}",
            label_only=action == "unlabeled",
        )
        return task, result, WebhookDelivery.Status.DONE
    if action == "unassigned":
        task, result = unassign_handle(repository=repository, number=int(issue["number"]), by=str(sender.get("login") or ""))
        return task, result, WebhookDelivery.Status.DONE
    if issue.get("state") and issue.get("state") != "open":
        return None, "ignored: the issue is not open", WebhookDelivery.Status.IGNORED
    # The label event's own time is not in the payload; the issue's updated_at is GitHub's
    # time of the change, and the receipt time bounds it from above on our clock. The later of
    # the two is what the poller compares its `labeled` event with, so it won't start it again.
    updated_at = parse_datetime(issue.get("updated_at") or "")
    triggered_at = max(filter(None, [delivery.received_at, updated_at]))
    assigned = action == "assigned"
    trigger = IssueTrigger.of_issue(
        repository, issue, actor=sender, number=int(issue["number"]), labels=tuple(issue.get("labels") or ()), triggered_at=triggered_at,
        source=ASSIGNMENT_SOURCE if assigned else "webhook", via="assignment" if assigned else "label",
    )
    task, result = trigger_handle(client, trigger)
    return task, result, WebhookDelivery.Status.DONE
