"""Linear as a tracker (the seam's `Tracker`, kind "linear"): issues of a Linear team become
tasks of a repository whose code lives on its forge (GitHub or GitLab).

A repository names its Linear issues in `tracker_settings` (checked by `settings_of`):

    {"team": "ENG",                  required: the team's key (issue identifiers ENG-123)
     "repository_label": "api",      optional: only issues that also carry this label (several
                                     repositories sharing one team)
     "state": "Ready for agent"}     optional: moving an issue into this workflow state triggers
                                     too (a team/state trigger)

The trigger label is the repository's `trigger_label`. An issue assigned or delegated to
TAC-X's Linear user (`TACX_LINEAR_USER_ID`) triggers like the label (issue 27 §1).

Who may trigger (`permission`): an active member of the workspace who is not a guest and is a
member of the repository's team, or a workspace admin. App users and integrations are bots
(`Actor.type` "Bot"): refused unless listed in TACX_ALLOWED_BOTS. The actor's login is their
Linear user id.

Progress goes back as one comment on the issue (created, then edited), and the pull request is
attached to the issue as a link attachment (`attachmentLinkURL`, idempotent by URL).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from django.conf import settings
from django.utils.dateparse import parse_datetime

from ..models import Repository, Task
from .base import Actor, PayloadError, Permission, Tracker, TrackerError, TrackerEvent, TrackerIssue, WebhookRefused, register
from .linear_api import LinearClient, LinearError, LinearIssue
from .linear_webhooks import BadPayload, LinearEvent, Refused, already_started, parse, verified_payload
from .secrets import SecretMissing, secret_value

KIND = "linear"


def settings_of(repository: Repository) -> dict:
    """The repository's Linear settings, checked; TrackerError (permanent) naming the field."""
    data = repository.tracker_settings or {}
    where = f"{repository.full_name}: tracker_settings"
    if not isinstance(data, dict):
        raise TrackerError(f'{where} must be an object such as {{"team": "ENG"}}', permanent=True)
    team = data.get("team")
    if not isinstance(team, str) or not team.strip():
        raise TrackerError(f'{where}.team: the Linear team key is required (e.g. "ENG")', permanent=True)
    for key in ("repository_label", "state"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise TrackerError(f"{where}.{key} must be a string", permanent=True)
    unknown = set(data) - {"team", "repository_label", "state"}
    if unknown:
        raise TrackerError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: team, repository_label, state)", permanent=True
        )
    return {"team": team.strip(), "repository_label": data.get("repository_label") or "", "state": data.get("state") or ""}


def number_of(identifier: str) -> int:
    tail = identifier.rsplit("-", 1)[-1]
    if not tail.isdigit():
        raise PayloadError(f"{identifier!r} is not a Linear issue identifier such as ENG-123")
    return int(tail)


def wrapped(exc: LinearError) -> TrackerError:
    return TrackerError(
        str(exc), permanent=exc.permanent, retry_after=exc.retry_after, status=404 if exc.code == "ENTITY_NOT_FOUND" else None
    )


@register
class LinearTracker(Tracker):
    kind = KIND
    label = "Linear"

    def __init__(self, client: LinearClient | None = None):
        self._client = client
        self._issue_ids: dict[str, str] = {}  # identifier -> Linear's id
        self._attached: set[tuple[int, str]] = set()  # (task, PR URL) attached by this process

    @property
    def client(self) -> LinearClient:
        try:
            return self._client or LinearClient()
        except LinearError as exc:
            raise wrapped(exc) from None

    def configured(self) -> bool:
        try:
            return bool(secret_value("LINEAR_API_KEY") and secret_value("LINEAR_WEBHOOK_SECRET"))
        except SecretMissing:
            return False

    def own_user(self) -> str:
        return settings.TACX_LINEAR_USER_ID

    # --- issues -------------------------------------------------------------------------------

    def tracker_issue(self, issue: LinearIssue) -> TrackerIssue:
        return TrackerIssue(
            number=number_of(issue.identifier),
            key=issue.identifier,
            title=issue.title,
            body=issue.description,
            url=issue.url,
            state="open" if issue.is_open else "closed",
            labels=issue.labels,
            updated_at=issue.updated_at,
        )

    def matches(self, repository: Repository, team_key: str, labels: tuple[str, ...]) -> bool:
        conf = settings_of(repository)
        wanted = conf["repository_label"].casefold()
        return conf["team"].casefold() == team_key.casefold() and (not wanted or wanted in {n.casefold() for n in labels})

    def issues_triggered(self, repository: Repository) -> list[TrackerEvent]:
        conf = settings_of(repository)
        client = self.client
        found: dict[str, tuple[LinearIssue, str]] = {}
        try:
            for issue in client.issues(label=repository.trigger_label, team_key=conf["team"]):
                found.setdefault(issue.id, (issue, "label"))
            if conf["state"]:
                for issue in client.issues(team_key=conf["team"], state_name=conf["state"]):
                    found.setdefault(issue.id, (issue, "state"))
            if self.own_user():
                for issue in client.issues(team_key=conf["team"], assignee_id=self.own_user()):
                    found[issue.id] = (issue, "assignment")
            events = []
            for issue, why in found.values():
                if not self.matches(repository, issue.team_key, issue.labels):
                    continue
                actor, at = self.who_and_when(client, issue, why, repository.trigger_label)
                events.append(
                    TrackerEvent(
                        action="trigger",
                        repository_id=repository.pk,
                        issue=self.tracker_issue(issue),
                        actor=Actor(actor),
                        via="assignment" if why == "assignment" else "label",
                        at=at,
                    )
                )
            return events
        except LinearError as exc:
            raise wrapped(exc) from None

    def who_and_when(self, client: LinearClient, issue: LinearIssue, why: str, label: str) -> tuple[str, str]:
        """The latest history entry that applied the trigger: (actor id, time); ("", updatedAt)
        when the history does not say (a state trigger, or history beyond the first page)."""
        names = dict(zip(issue.label_ids, issue.labels, strict=False))
        for entry in client.history(issue.id):
            if why == "assignment" and entry.get("toAssigneeId") == self.own_user():
                return str(entry.get("actorId") or ""), str(entry.get("createdAt") or "")
            if why == "label" and entry.get("addedLabelIds"):
                if any(names.get(i, "").casefold() == label.casefold() for i in entry["addedLabelIds"]):
                    return str(entry.get("actorId") or ""), str(entry.get("createdAt") or "")
        return "", issue.updated_at

    def issue_fetch(self, repository: Repository, *, number: int = 0, key: str = "") -> TrackerIssue:
        try:
            issue = self.client.issue(key)
        except LinearError as exc:
            raise wrapped(exc) from None
        if issue is None:
            raise TrackerError(f"Linear has no issue {key}", status=404, permanent=True)
        return self.tracker_issue(issue)

    # --- people -------------------------------------------------------------------------------

    def permission(self, repository: Repository, login: str) -> Permission:
        team = settings_of(repository)["team"]
        required = f"an active, non-guest member of Linear team {team} (or a workspace admin)"
        try:
            member = self.client.member(login)
        except LinearError as exc:
            raise wrapped(exc) from None
        if member is None:
            return Permission(False, "no Linear user", required)
        if not member.active:
            return Permission(False, "a deactivated user", required)
        if member.app:
            return Permission(False, "an app user", required)
        if member.guest:
            return Permission(False, "guest", required)
        if member.admin:
            return Permission(True, "admin", required)
        if team.casefold() in {k.casefold() for k in member.team_keys}:
            return Permission(True, f"member of {team}", required)
        return Permission(False, f"member, not of team {team}", required)

    # --- comments -----------------------------------------------------------------------------

    def issue_id(self, task: Task) -> str:
        key = task.tracker_issue_key
        if key not in self._issue_ids:
            issue = self.client.issue(key)
            if issue is None:
                raise TrackerError(f"Linear has no issue {key}", status=404, permanent=True)
            self._issue_ids[key] = issue.id
        return self._issue_ids[key]

    def attach_pull_request(self, task: Task) -> None:
        if task.pr_url and (task.pk, task.pr_url) not in self._attached:
            title = f"Pull request: {task.title}"[:250]
            self.client.attach_link(issue_id=self.issue_id(task), url=task.pr_url, title=title)
            self._attached.add((task.pk, task.pr_url))

    def comment_create(self, *, task: Task, body: str) -> str:
        try:
            comment_id = self.client.comment_create(issue_id=self.issue_id(task), body=body)
            self.attach_pull_request(task)
            return comment_id
        except LinearError as exc:
            raise wrapped(exc) from None

    def comment_update(self, *, task: Task, comment_id: str, body: str) -> None:
        try:
            self.client.comment_update(comment_id=comment_id, body=body)
            self.attach_pull_request(task)
        except LinearError as exc:
            raise wrapped(exc) from None

    def comments(self, *, task: Task) -> list[dict]:
        try:
            return [{"id": str(c["id"]), "body": str(c.get("body") or "")} for c in self.client.comments(self.issue_id(task))]
        except LinearError as exc:
            raise wrapped(exc) from None

    # --- webhooks -----------------------------------------------------------------------------

    def webhook_verify(self, headers: Mapping[str, str], body: bytes) -> None:
        try:
            secret = secret_value("LINEAR_WEBHOOK_SECRET")
        except SecretMissing as exc:
            raise WebhookRefused(str(exc)) from None
        try:
            verified_payload(
                secret=secret, body=body, signature=headers.get("Linear-Signature", ""), now_ms=int(time.time() * 1000)
            )
        except Refused as exc:
            raise WebhookRefused(str(exc)) from None
        except BadPayload:
            pass  # authentic but not JSON: the view answers 400

    def webhook_delivery_id(self, headers: Mapping[str, str], payload: dict) -> str:
        delivery = headers.get("Linear-Delivery", "") or str(payload.get("webhookId") or "")
        if not delivery or len(delivery) > 90:
            raise PayloadError("the Linear-Delivery header (or webhookId) is missing or too long")
        return delivery

    def webhook_parse(self, headers: Mapping[str, str], payload: dict) -> tuple[list[TrackerEvent], str]:
        repositories = list(Repository.objects.filter(enabled=True, tracker_kind=KIND).order_by("id"))
        if not repositories:
            return [], "ignored: no repository takes its issues from Linear"
        events, ignored = [], ""
        for repository in repositories:
            try:
                conf = settings_of(repository)
                parsed = parse(
                    payload, trigger_label=repository.trigger_label, own_user_id=self.own_user(), trigger_state=conf["state"]
                )
            except BadPayload as exc:
                raise PayloadError(str(exc)) from None
            except TrackerError:
                continue  # a repository with broken settings: reported by its poll
            event = self.event_of(repository, parsed, payload)
            if event is not None and event.action == "trigger" and already_started(repository, event):
                ignored, event = "ignored: that trigger already had its task", None
            if event is None:
                ignored = ignored or f"ignored: {parsed.reason or 'not an issue of this repository'}"
            else:
                events.append(event)
        return events, ignored

    def event_of(self, repository: Repository, parsed: LinearEvent, payload: dict) -> TrackerEvent | None:
        if parsed.kind == "ignored":
            return None
        data = payload["data"]
        actor_type = "" if parsed.actor_type in ("", "user") else "Bot"
        if parsed.kind == "comment":
            task = (
                Task.objects.filter(repository=repository, tracker_issue_key=parsed.identifier).exists()
                if parsed.identifier
                else False
            )
            if not task:
                return None
            issue = TrackerIssue(number=number_of(parsed.identifier), key=parsed.identifier, title=parsed.title)
            return TrackerEvent(
                action="comment",
                repository_id=repository.pk,
                issue=issue,
                actor=Actor(parsed.actor_id, actor_type),
                at=str(data.get("createdAt") or ""),
                detail={"id": parsed.comment_id, "body": parsed.comment_body, "url": str(payload.get("url") or "")},
            )
        if not self.matches(repository, parsed.team_key, parsed.labels):
            return None
        state = data.get("state") if isinstance(data.get("state"), dict) else {}
        issue = TrackerIssue(
            number=number_of(parsed.identifier),
            key=parsed.identifier,
            title=parsed.title,
            body=str(data.get("description") or "")[:65536],
            url=str(data.get("url") or ""),
            state="closed" if state.get("type") in ("completed", "canceled") else "open",
            labels=parsed.labels,
            updated_at=str(data.get("updatedAt") or ""),
        )
        # The trigger's time is the change's own (`updatedAt`), which the issue's history gives the
        # poll too: the same change is then "not newer" than the task it started, either way round.
        changed = parse_datetime(data["updatedAt"]) if isinstance(data.get("updatedAt"), str) else None
        at = (changed or datetime.fromtimestamp(int(payload["webhookTimestamp"]) / 1000, tz=UTC)).isoformat()
        actor = Actor(parsed.actor_id, actor_type)
        if parsed.kind == "trigger":
            return TrackerEvent(action="trigger", repository_id=repository.pk, issue=issue, actor=actor, via="label", at=at)
        if parsed.kind == "assigned":
            return TrackerEvent(action="trigger", repository_id=repository.pk, issue=issue, actor=actor, via="assignment", at=at)
        if parsed.kind == "unassigned":
            return TrackerEvent(action="unassign", repository_id=repository.pk, issue=issue, actor=actor, via="assignment", at=at)
        if parsed.kind == "closed":
            return TrackerEvent(
                action="untrigger",
                repository_id=repository.pk,
                issue=issue,
                actor=actor,
                via="",
                at=at,
                reason=f"the issue was closed in Linear by {parsed.actor_name or parsed.actor_id or 'someone'}",
            )
        return TrackerEvent(
            action="untrigger",
            repository_id=repository.pk,
            issue=issue,
            actor=actor,
            via="label",
            at=at,
            reason=f"the trigger label was removed in Linear by {parsed.actor_name or parsed.actor_id or 'someone'}",
        )
