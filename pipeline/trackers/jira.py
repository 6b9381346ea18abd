"""Jira Cloud as a tracker (the seam's `Tracker`, kind "jira"): issues of a Jira project become
tasks of a repository whose code lives on its forge.

`tracker_settings` (checked by `settings_of`):

    {"project": "OPS",                       required: the project key (issue keys OPS-7)
     "jql": "project = OPS AND ...",         optional: the poll's trigger query instead of
                                             `project = OPS AND labels = "<trigger label>"`; with it,
                                             webhooks no longer trigger by label (Jira evaluates JQL,
                                             TAC-X cannot), they still bring @tacx, removals and
                                             unassignments
     "permissions": "EDIT_ISSUES,TRANSITION_ISSUES"}
                                             optional: the project permissions the person who
                                             triggers must hold (all of them)

An issue assigned to TAC-X's Jira account (`TACX_JIRA_ACCOUNT_ID`) triggers like the label.
Who triggered a polled issue, and when, comes from the issue's changelog. Progress is one ADF
comment on the issue; the pull request is also added as a remote link ("Web links").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from django.conf import settings
from django.utils.dateparse import parse_datetime

from ..models import Repository, Task
from .base import Actor, PayloadError, Permission, Tracker, TrackerError, TrackerEvent, TrackerIssue, WebhookRefused, register
from .jira_api import JiraClient, JiraError, JiraIssue, adf_text
from .jira_webhooks import JiraEvent, parse, verified_payload
from .linear_webhooks import BadPayload, Refused, already_started
from .secrets import SecretMissing, secret_value

KIND = "jira"
DEFAULT_PERMISSIONS = "EDIT_ISSUES,TRANSITION_ISSUES"
PERMISSION_KEY = re.compile(r"^[A-Z_]+(,[A-Z_]+)*$")
# Jira comments are ADF, which has no hidden text: the progress comment's marker is kept as a
# last line "(tacx:task:N)" and turned back into the marker when comments are read.
MARKER = re.compile(r"<!-- (tacx:(?:task|round):\d+) -->")
SHOWN_MARKER = re.compile(r"\((tacx:(?:task|round):\d+)\)")


def settings_of(repository: Repository) -> dict:
    data = repository.tracker_settings or {}
    where = f"{repository.full_name}: tracker_settings"
    if not isinstance(data, dict):
        raise TrackerError(f'{where} must be an object such as {{"project": "OPS"}}', permanent=True)
    project = data.get("project")
    if not isinstance(project, str) or not re.fullmatch(r"[A-Z][A-Z0-9_]+", project.strip()):
        raise TrackerError(f'{where}.project: the Jira project key is required (capital letters, e.g. "OPS")', permanent=True)
    jql = data.get("jql") or ""
    if not isinstance(jql, str):
        raise TrackerError(f"{where}.jql must be a string", permanent=True)
    permissions = data.get("permissions") or DEFAULT_PERMISSIONS
    if not isinstance(permissions, str) or not PERMISSION_KEY.match(permissions):
        raise TrackerError(
            f"{where}.permissions must be comma-separated permission keys such as {DEFAULT_PERMISSIONS}", permanent=True
        )
    unknown = set(data) - {"project", "jql", "permissions"}
    if unknown:
        raise TrackerError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: project, jql, permissions)", permanent=True
        )
    return {"project": project.strip(), "jql": jql.strip(), "permissions": permissions}


def number_of(key: str) -> int:
    tail = key.rsplit("-", 1)[-1]
    if not tail.isdigit():
        raise PayloadError(f"{key!r} is not a Jira issue key such as OPS-7")
    return int(tail)


def wrapped(exc: JiraError) -> TrackerError:
    return TrackerError(str(exc), status=exc.status, permanent=exc.permanent, retry_after=exc.retry_after)


def jql_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@register
class JiraTracker(Tracker):
    kind = KIND
    label = "Jira"

    def __init__(self, client: JiraClient | None = None):
        self._client = client
        self._linked: set[tuple[int, str]] = set()

    @property
    def client(self) -> JiraClient:
        try:
            return self._client or JiraClient()
        except JiraError as exc:
            raise wrapped(exc) from None

    def configured(self) -> bool:
        try:
            return bool(settings.JIRA_BASE_URL and secret_value("JIRA_API_TOKEN") and secret_value("JIRA_WEBHOOK_SECRET"))
        except SecretMissing:
            return False

    def own_user(self) -> str:
        return settings.TACX_JIRA_ACCOUNT_ID

    def tracker_issue(self, issue: JiraIssue) -> TrackerIssue:
        return TrackerIssue(
            number=number_of(issue.key),
            key=issue.key,
            title=issue.title,
            body=issue.description,
            url=issue.url,
            state="open" if issue.is_open else "closed",
            labels=issue.labels,
            updated_at=issue.updated,
        )

    # --- issues -------------------------------------------------------------------------------

    def issues_triggered(self, repository: Repository) -> list[TrackerEvent]:
        conf = settings_of(repository)
        client = self.client
        project = conf["project"]
        queries = [
            (
                conf["jql"]
                or f"project = {project} AND labels = {jql_quote(repository.trigger_label)} AND statusCategory != Done",
                "label",
            )
        ]
        if self.own_user():
            queries.append(
                (f"project = {project} AND assignee = {jql_quote(self.own_user())} AND statusCategory != Done", "assignment")
            )
        found: dict[str, tuple[JiraIssue, str]] = {}
        try:
            for jql, why in queries:
                for issue in client.search(jql):
                    if why == "assignment" or issue.key not in found:
                        found[issue.key] = (issue, why)
            events = []
            for issue, why in found.values():
                actor, at = self.who_and_when(client, issue, why, repository.trigger_label, bool(conf["jql"]))
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
        except JiraError as exc:
            raise wrapped(exc) from None

    def who_and_when(self, client: JiraClient, issue: JiraIssue, why: str, label: str, by_jql: bool) -> tuple[str, str]:
        """From the changelog, newest first: who added the label (or assigned TAC-X) and when.
        A JQL trigger has no single change to point at: it is credited to the latest change
        (the transition that put the issue into the query, typically), else to the reporter at
        the issue's creation."""
        for entry in client.changelog(issue.key):
            author = str((entry.get("author") or {}).get("accountId") or "")
            if by_jql:
                return author, str(entry.get("created") or "")
            for item in entry.get("items") or []:
                field = str(item.get("fieldId") or item.get("field") or "").lower()
                added = (
                    why == "label"
                    and field == "labels"
                    and label.casefold()
                    in {s.casefold() for s in str(item.get("toString") or "").split()}
                    - {s.casefold() for s in str(item.get("fromString") or "").split()}
                )
                assigned = why == "assignment" and field == "assignee" and item.get("to") == self.own_user()
                if added or assigned:
                    return author, str(entry.get("created") or "")
        return (issue.reporter_id if by_jql else ""), issue.created or issue.updated

    def issue_fetch(self, repository: Repository, *, number: int = 0, key: str = "") -> TrackerIssue:
        try:
            issue = self.client.issue(key)
        except JiraError as exc:
            raise wrapped(exc) from None
        if issue is None:
            raise TrackerError(f"Jira has no issue {key}", status=404, permanent=True)
        return self.tracker_issue(issue)

    # --- people -------------------------------------------------------------------------------

    def permission(self, repository: Repository, login: str) -> Permission:
        conf = settings_of(repository)
        required = f"the Jira permissions {conf['permissions']} in project {conf['project']}"
        try:
            allowed = self.client.has_permissions(account_id=login, project_key=conf["project"], permissions=conf["permissions"])
        except JiraError as exc:
            raise wrapped(exc) from None
        return Permission(allowed, conf["permissions"] if allowed else f"not all of {conf['permissions']}", required)

    # --- comments -----------------------------------------------------------------------------

    def link_pull_request(self, task: Task) -> None:
        if task.pr_url and (task.pk, task.pr_url) not in self._linked:
            self.client.remote_link(task.tracker_issue_key, url=task.pr_url, title=f"Pull request: {task.title}"[:250])
            self._linked.add((task.pk, task.pr_url))

    @staticmethod
    def shown(body: str) -> str:
        return MARKER.sub(r"(\1)", body).replace("**", "")

    def comment_create(self, *, task: Task, body: str) -> str:
        try:
            comment_id = self.client.comment_add(task.tracker_issue_key, self.shown(body))
            self.link_pull_request(task)
            return comment_id
        except JiraError as exc:
            raise wrapped(exc) from None

    def comment_update(self, *, task: Task, comment_id: str, body: str) -> None:
        try:
            self.client.comment_update(task.tracker_issue_key, comment_id, self.shown(body))
            self.link_pull_request(task)
        except JiraError as exc:
            raise wrapped(exc) from None

    def comments(self, *, task: Task) -> list[dict]:
        try:
            found = self.client.comments(task.tracker_issue_key)
        except JiraError as exc:
            raise wrapped(exc) from None
        return [{"id": c["id"], "body": SHOWN_MARKER.sub(r"<!-- \1 -->", c["body"])} for c in found]

    # --- webhooks -----------------------------------------------------------------------------

    def webhook_verify(self, headers: Mapping[str, str], body: bytes) -> None:
        try:
            secret = secret_value("JIRA_WEBHOOK_SECRET")
        except SecretMissing as exc:
            raise WebhookRefused(str(exc)) from None
        try:
            verified_payload(secret=secret, body=body, signature=headers.get("X-Hub-Signature", ""))
        except Refused as exc:
            raise WebhookRefused(str(exc)) from None
        except BadPayload:
            pass

    def webhook_delivery_id(self, headers: Mapping[str, str], payload: dict) -> str:
        delivery = headers.get("X-Atlassian-Webhook-Identifier", "")
        if not delivery or len(delivery) > 90:
            raise PayloadError("the X-Atlassian-Webhook-Identifier header is missing or too long")
        return delivery

    def webhook_parse(self, headers: Mapping[str, str], payload: dict) -> tuple[list[TrackerEvent], str]:
        repositories = list(Repository.objects.filter(enabled=True, tracker_kind=KIND).order_by("id"))
        if not repositories:
            return [], "ignored: no repository takes its issues from Jira"
        events, ignored = [], ""
        for repository in repositories:
            try:
                conf = settings_of(repository)
                parsed = parse(payload, trigger_label=repository.trigger_label, own_account_id=self.own_user())
            except BadPayload as exc:
                raise PayloadError(str(exc)) from None
            except TrackerError:
                continue
            if parsed.kind == "ignored" or parsed.project_key != conf["project"] or (conf["jql"] and parsed.kind == "trigger"):
                ignored = ignored or f"ignored: {parsed.reason or 'not an issue this repository triggers on'}"
                continue
            event = self.event_of(repository, parsed, payload)
            if event.action == "trigger" and already_started(repository, event):
                ignored = "ignored: that trigger already had its task"
                continue
            events.append(event)
        return events, ignored

    def event_of(self, repository: Repository, parsed: JiraEvent, payload: dict) -> TrackerEvent:
        fields = (payload.get("issue") or {}).get("fields") or {}
        actor = Actor(parsed.actor_id, "Bot" if parsed.actor_type == "app" else "")
        if parsed.kind == "comment":
            issue = TrackerIssue(number=number_of(parsed.key), key=parsed.key, title=parsed.title)
            comment = payload.get("comment") or {}
            return TrackerEvent(
                action="comment",
                repository_id=repository.pk,
                issue=issue,
                actor=actor,
                at=str(comment.get("created") or ""),
                detail={"id": parsed.comment_id, "body": parsed.comment_body, "url": ""},
            )
        description = fields.get("description")
        category = ((fields.get("status") or {}).get("statusCategory") or {}).get("key")
        base = settings.JIRA_BASE_URL.rstrip("/")
        issue = TrackerIssue(
            number=number_of(parsed.key),
            key=parsed.key,
            title=parsed.title,
            body=adf_text(description).strip()[:65536] if description else "",
            url=f"{base}/browse/{parsed.key}" if base else "",
            state="closed" if category == "done" else "open",
            labels=parsed.labels,
            updated_at=str(fields.get("updated") or ""),
        )
        # The change's own time (`updated`), which the changelog gives the poll too.
        changed = parse_datetime(fields["updated"]) if isinstance(fields.get("updated"), str) else None
        if changed is None and isinstance(payload.get("timestamp"), int) and not isinstance(payload.get("timestamp"), bool):
            changed = datetime.fromtimestamp(payload["timestamp"] / 1000, tz=UTC)
        at = changed.isoformat() if changed else ""
        if parsed.kind in ("trigger", "assigned"):
            return TrackerEvent(
                action="trigger",
                repository_id=repository.pk,
                issue=issue,
                actor=actor,
                via="assignment" if parsed.kind == "assigned" else "label",
                at=at,
            )
        if parsed.kind == "unassigned":
            return TrackerEvent(action="unassign", repository_id=repository.pk, issue=issue, actor=actor, via="assignment", at=at)
        return TrackerEvent(
            action="untrigger",
            repository_id=repository.pk,
            issue=issue,
            actor=actor,
            via="label",
            at=at,
            reason=f"the trigger label was removed in Jira by {parsed.actor_name or parsed.actor_id or 'someone'}",
        )
