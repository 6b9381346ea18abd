"""Jira Cloud webhook deliveries: verification and parsing, before anything is recorded.

Verification: an admin webhook saved with a secret (Jira administration → System → WebHooks, or
`POST /rest/webhooks/1.0/webhook` with `secret`) is signed as WebSub's "method=signature": the
`X-Hub-Signature` header is `sha256=<hex HMAC-SHA256 of the raw body>` keyed with the secret,
compared here in constant time (https://developer.atlassian.com/cloud/jira/platform/webhooks/,
"Secure admin webhooks"). Jira documents no replay window; a delivery is deduplicated by
`X-Atlassian-Webhook-Identifier`, which Jira keeps across its retries.

Parsing turns a verified payload into a `JiraEvent`, or raises `BadPayload` naming the field:

- `jira:issue_created`: the trigger label on the new issue, or TAC-X's account as assignee;
- `jira:issue_updated`: the changelog's `labels` item (space-separated `fromString`/`toString`)
  adding or removing the trigger label; its `assignee` item (`from`/`to` account ids) assigning
  or unassigning TAC-X's account;
- `comment_created` whose text mentions `@tacx`: a round on the issue's task.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from .jira_api import adf_text
from .linear_webhooks import MENTION, BadPayload, Refused, json_object

EVENTS = ("jira:issue_created", "jira:issue_updated", "comment_created")


def signature_for(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verified_payload(*, secret: str, body: bytes, signature: str) -> dict:
    if not secret:
        raise Refused("no Jira webhook secret is configured (JIRA_WEBHOOK_SECRET)")
    if not signature or not hmac.compare_digest(
        signature_for(secret, body).encode(), signature.strip().encode("utf-8", "replace")
    ):
        raise Refused("missing or wrong X-Hub-Signature")
    return json_object(body)


@dataclass(frozen=True)
class JiraEvent:
    kind: str  # trigger | untrigger | assigned | unassigned | comment | ignored
    reason: str = ""
    key: str = ""
    project_key: str = ""
    title: str = ""
    actor_id: str = ""
    actor_name: str = ""
    actor_type: str = ""
    comment_id: str = ""
    comment_body: str = ""
    labels: tuple[str, ...] = ()


def _dict(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadPayload(f"{where} must be an object")
    return value


def _text(value, where: str, limit: int = 200) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise BadPayload(f"{where} must be a string of at most {limit} characters")
    return value


def parse(payload: dict, *, trigger_label: str, own_account_id: str) -> JiraEvent:
    event = _text(payload.get("webhookEvent"), "webhookEvent")
    if event not in EVENTS:
        return JiraEvent("ignored", reason=f"{event or 'an unnamed event'} starts nothing")
    issue = _dict(payload.get("issue"), "issue")
    key = _text(issue.get("key"), "issue.key")
    if not key or "-" not in key:
        raise BadPayload("issue.key is missing or not a key such as OPS-7")
    fields = _dict(issue.get("fields"), "issue.fields")
    labels = fields.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise BadPayload("issue.fields.labels must be a list of strings")
    project = _dict(fields.get("project"), "issue.fields.project")
    common = {
        "key": key,
        "project_key": _text(project.get("key"), "issue.fields.project.key") or key.rsplit("-", 1)[0],
        "title": _text(fields.get("summary"), "issue.fields.summary", 1000),
        "labels": tuple(labels),
    }
    mine = trigger_label.casefold()
    if event == "comment_created":
        comment = _dict(payload.get("comment"), "comment")
        author = _dict(comment.get("author"), "comment.author")
        body = comment.get("body")
        text = adf_text(body) if isinstance(body, dict) else _text(body, "comment.body", 65536)
        if not MENTION.search(text):
            return JiraEvent("ignored", reason="a comment without @tacx")
        return JiraEvent(
            "comment",
            comment_id=_text(str(comment.get("id") or ""), "comment.id"),
            comment_body=text,
            actor_id=_text(author.get("accountId"), "comment.author.accountId"),
            actor_name=_text(author.get("displayName"), "comment.author.displayName"),
            actor_type=_text(author.get("accountType"), "comment.author.accountType"),
            **common,
        )
    user = _dict(payload.get("user"), "user")
    who = {
        "actor_id": _text(user.get("accountId"), "user.accountId"),
        "actor_name": _text(user.get("displayName"), "user.displayName"),
        "actor_type": _text(user.get("accountType"), "user.accountType"),
    }
    has_label = any(label.casefold() == mine for label in labels)
    if event == "jira:issue_created":
        assignee = _dict(fields.get("assignee"), "issue.fields.assignee")
        if own_account_id and assignee.get("accountId") == own_account_id:
            return JiraEvent("assigned", **common, **who)
        return (
            JiraEvent("trigger", **common, **who)
            if has_label
            else JiraEvent("ignored", reason="created without the trigger label")
        )
    items = _dict(payload.get("changelog"), "changelog").get("items") or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadPayload("changelog.items must be a list of objects")
    for item in items:
        field = str(item.get("fieldId") or item.get("field") or "").lower()
        if field == "assignee" and own_account_id:
            before, after = _text(item.get("from"), "changelog.items[].from"), _text(item.get("to"), "changelog.items[].to")
            if after == own_account_id and before != own_account_id:
                return JiraEvent("assigned", **common, **who)
            if before == own_account_id and after != own_account_id:
                return JiraEvent("unassigned", **common, **who)
        if field == "labels":
            before = {s.casefold() for s in _text(item.get("fromString"), "changelog.items[].fromString", 10000).split()}
            after = {s.casefold() for s in _text(item.get("toString"), "changelog.items[].toString", 10000).split()}
            if mine in after and mine not in before:
                return JiraEvent("trigger", **common, **who)
            if mine in before and mine not in after:
                return JiraEvent("untrigger", **common, **who)
    return JiraEvent("ignored", reason="neither the trigger label nor TAC-X's assignment changed")
