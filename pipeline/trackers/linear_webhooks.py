"""Linear webhook deliveries: verification and parsing, before anything is recorded.

Verification (https://linear.app/developers/webhooks, "Securing webhooks"): the `Linear-Signature`
header is the hex HMAC-SHA256 of the raw body keyed with the webhook's signing secret, compared
in constant time; the body's `webhookTimestamp` (ms) must be within a minute of our clock, so a
captured delivery cannot be replayed later. Nothing of the body is looked at before both pass.

Parsing turns a verified payload into a `LinearEvent`, or raises `BadPayload` naming the field
(the view answers 400 and records nothing). What TAC-X acts on:

- `Issue` `create`/`update`: the trigger label added (`labelIds` against `updatedFrom.labelIds`;
  on create, the labels the issue was created with) or removed; the issue assigned or delegated
  to TAC-X's Linear user (`assigneeId`/`delegateId` against `updatedFrom`), or taken away;
- `Comment` `create` whose body mentions `@tacx`: a round on the issue's task.

The issue's state in the payload is a hint only: the coordinator fetches the issue before it acts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field

from django.db.models import Max

from ..models import Task

REPLAY_WINDOW_MS = 60_000


def already_started(repository, event) -> bool:
    """A trigger no newer than the issue's latest task already had its task (the poll may have
    seen the change first): the rule `tracker_flow.event_act` applies to polls, applied here to
    webhook deliveries of Linear and Jira, whose events carry the change's own time."""
    at = event.at_time
    latest = (
        Task.objects.filter(repository=repository, tracker_issue_key=event.issue.key).aggregate(at=Max("triggered_at"))["at"]
        if event.issue.key
        else None
    )
    return latest is not None and at is not None and at <= latest


MENTION = re.compile(r"(?<![\w@])@tacx\b", re.IGNORECASE)
MAX_TEXT = 200


class Refused(Exception):
    """The delivery is not Linear's (or is too old): 403, nothing recorded."""


class BadPayload(ValueError):
    """Signed, but not a shape TAC-X can use: 400 with the reason, nothing recorded."""


def signature_for(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def json_object(body: bytes) -> dict:
    """A delivery's body as a JSON object, or `BadPayload` saying what it is instead (shared by
    the Linear and Jira webhooks)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadPayload("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise BadPayload("the body is not a JSON object")
    return payload


def verified_payload(*, secret: str, body: bytes, signature: str, now_ms: int) -> dict:
    """The JSON body of a delivery whose signature and timestamp check out; raises `Refused`
    (wrong or missing signature, stale or missing timestamp) or `BadPayload` (not a JSON object)."""
    if not secret:
        raise Refused("no Linear webhook secret is configured (LINEAR_WEBHOOK_SECRET)")
    if not signature or not hmac.compare_digest(
        signature_for(secret, body).encode(), signature.strip().lower().encode("utf-8", "replace")
    ):
        raise Refused("missing or wrong Linear-Signature")
    payload = json_object(body)
    stamp = payload.get("webhookTimestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise Refused("webhookTimestamp is missing or not a whole number of milliseconds")
    if abs(now_ms - stamp) > REPLAY_WINDOW_MS:
        raise Refused(
            f"webhookTimestamp is {abs(now_ms - stamp) // 1000} s away from our clock (at most 60 s): a replay or a skewed clock"
        )
    return payload


@dataclass(frozen=True)
class LinearEvent:
    kind: str  # trigger | untrigger | closed | assigned | unassigned | comment | ignored
    reason: str = ""  # why ignored
    issue_id: str = ""
    identifier: str = ""
    team_key: str = ""
    title: str = ""
    actor_id: str = ""
    actor_name: str = ""
    actor_type: str = ""
    via: str = ""  # label | assignee | delegate
    comment_id: str = ""
    comment_body: str = ""
    labels: tuple[str, ...] = field(default_factory=tuple)


def _str(data: dict, key: str, where: str, *, limit: int | None = MAX_TEXT, required: bool = False) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise BadPayload(f"{where}{key} is missing")
        return ""
    if not isinstance(value, str) or (limit is not None and len(value) > limit):
        raise BadPayload(f"{where}{key} must be a string" + (f" of at most {limit} characters" if limit else ""))
    return value


def _ids(data: dict, key: str, where: str) -> list[str] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadPayload(f"{where}{key} must be a list of ids")
    return value


def _object(data: dict, key: str, where: str) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadPayload(f"{where}{key} must be an object")
    return value


def parse(payload: dict, *, trigger_label: str, own_user_id: str, trigger_state: str = "") -> LinearEvent:
    """What a verified Linear delivery asks for (one event; an issue change that both adds the
    trigger label and assigns TAC-X is a trigger: one task either way)."""
    kind, action = _str(payload, "type", "", required=True), _str(payload, "action", "", required=True)
    data = payload.get("data")
    if not isinstance(data, dict):
        raise BadPayload("data must be an object")
    actor = _object(payload, "actor", "")
    who = {
        "actor_id": _str(actor, "id", "actor."),
        "actor_name": _str(actor, "name", "actor."),
        "actor_type": _str(actor, "type", "actor."),
    }
    if kind == "Comment":
        if action != "create":
            return LinearEvent("ignored", reason=f"Comment.{action} starts nothing")
        body = _str(data, "body", "data.", limit=65536)
        if not MENTION.search(body):
            return LinearEvent("ignored", reason="a comment without @tacx")
        issue = _object(data, "issue", "data.")
        issue_id = _str(data, "issueId", "data.") or _str(issue, "id", "data.issue.")
        if not issue_id:
            raise BadPayload("data.issueId is missing")
        user = _object(data, "user", "data.")
        if not who["actor_id"]:
            who = {
                "actor_id": _str(data, "userId", "data.") or _str(user, "id", "data.user."),
                "actor_name": _str(user, "name", "data.user."),
                "actor_type": "user",
            }
        return LinearEvent(
            "comment",
            issue_id=issue_id,
            identifier=_str(issue, "identifier", "data.issue."),
            title=_str(issue, "title", "data.issue.", limit=1000),
            comment_id=_str(data, "id", "data.", required=True),
            comment_body=body,
            **who,
        )
    if kind != "Issue":
        return LinearEvent("ignored", reason=f"{kind} events start nothing")
    if action not in ("create", "update"):
        return LinearEvent("ignored", reason=f"Issue.{action} starts nothing")
    issue_id = _str(data, "id", "data.", required=True)
    identifier = _str(data, "identifier", "data.", required=True)
    team = _object(data, "team", "data.")
    labels_raw = data.get("labels") or []
    if not isinstance(labels_raw, list) or not all(isinstance(label, dict) for label in labels_raw):
        raise BadPayload("data.labels must be a list of objects")
    names = {_str(label, "id", "data.labels[]."): _str(label, "name", "data.labels[].") for label in labels_raw}
    current_ids = _ids(data, "labelIds", "data.")
    current_ids = list(names) if current_ids is None else current_ids
    before = _object(payload, "updatedFrom", "")
    common = {
        "issue_id": issue_id,
        "identifier": identifier,
        "team_key": _str(team, "key", "data.team."),
        "title": _str(data, "title", "data.", limit=1000),
        "labels": tuple(names.get(i, "") for i in current_ids),
        **who,
    }
    has_label = any(n.casefold() == trigger_label.casefold() for n in common["labels"])
    previous_ids = _ids(before, "labelIds", "updatedFrom.")
    for role in ("assignee", "delegate"):
        now_id = _str(data, f"{role}Id", "data.")
        if action == "create" or f"{role}Id" in before:
            was = _str(before, f"{role}Id", "updatedFrom.") if action == "update" else ""
            if own_user_id and now_id == own_user_id and was != own_user_id:
                return LinearEvent("assigned", via=role, **common)
            if own_user_id and was == own_user_id and now_id != own_user_id:
                return LinearEvent("unassigned", via=role, **common)
    if action == "create":
        return (
            LinearEvent("trigger", via="label", **common)
            if has_label
            else LinearEvent("ignored", reason="created without the trigger label")
        )
    state = _object(data, "state", "data.")
    if "stateId" in before:
        if _str(state, "type", "data.state.") in ("completed", "canceled"):
            return LinearEvent("closed", **common)
        if trigger_state and _str(state, "name", "data.state.").casefold() == trigger_state.casefold():
            return LinearEvent("trigger", via="state", **common)
    if previous_ids is None:
        return LinearEvent("ignored", reason="no label, state, assignee or delegate change")
    added = [i for i in current_ids if i not in previous_ids]
    if has_label and any(names.get(i, "").casefold() == trigger_label.casefold() for i in added):
        return LinearEvent("trigger", via="label", **common)
    if not has_label and [i for i in previous_ids if i not in current_ids]:
        return LinearEvent("untrigger", via="label", **common)  # a label went; the coordinator checks it was ours
    return LinearEvent("ignored", reason="the trigger label was neither added nor removed")
