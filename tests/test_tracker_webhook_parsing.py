"""Linear and Jira webhook deliveries: the signatures as each vendor signs them, the replay
window (Linear), and what each documented payload means (fixtures from the vendors' docs)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pipeline.trackers import jira_webhooks as jira_hooks
from pipeline.trackers import linear_webhooks as linear_hooks
from pipeline.trackers.linear_webhooks import BadPayload, Refused

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "lin_wh_0123456789abcdef"
TACX_LINEAR = "a55e7c0d-0000-4000-8000-0000000000ac"
TACX_JIRA = "5b10ac8d82e05b22cc7dacac"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def signed_linear(payload: dict, *, now_ms: int, secret: str = SECRET) -> tuple[bytes, str]:
    payload = {**payload, "webhookTimestamp": now_ms}
    body = json.dumps(payload).encode()
    return body, linear_hooks.signature_for(secret, body)


# --- Linear: verification -----------------------------------------------------------------------


def test_a_linear_delivery_signed_with_the_secret_and_fresh_is_accepted():
    body, signature = signed_linear(fixture("linear-webhooks/Issue.create.json"), now_ms=1_000_000)
    assert linear_hooks.verified_payload(secret=SECRET, body=body, signature=signature, now_ms=1_030_000)["type"] == "Issue"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda body, sig: (body, sig.replace(sig[0], "0" if sig[0] != "0" else "1", 1)), "wrong Linear-Signature"),
        (lambda body, sig: (body + b" ", sig), "wrong Linear-Signature"),
        (lambda body, sig: (body, ""), "missing or wrong"),
        (lambda body, sig: (body, linear_hooks.signature_for("another-secret", body)), "wrong Linear-Signature"),
    ],
)
def test_a_forged_or_altered_linear_delivery_is_refused(change, message):
    body, signature = signed_linear(fixture("linear-webhooks/Issue.create.json"), now_ms=1_000_000)
    body, signature = change(body, signature)
    with pytest.raises(Refused, match=message):
        linear_hooks.verified_payload(secret=SECRET, body=body, signature=signature, now_ms=1_000_000)


def test_a_linear_delivery_older_or_newer_than_a_minute_is_refused_as_a_replay():
    body, signature = signed_linear(fixture("linear-webhooks/Issue.create.json"), now_ms=1_000_000)
    for now in (1_060_001, 939_999):
        with pytest.raises(Refused, match="webhookTimestamp is 60 s away"):
            linear_hooks.verified_payload(secret=SECRET, body=body, signature=signature, now_ms=now)
    assert linear_hooks.verified_payload(secret=SECRET, body=body, signature=signature, now_ms=1_060_000)


def test_without_a_configured_secret_every_linear_delivery_is_refused():
    body, signature = signed_linear(fixture("linear-webhooks/Issue.create.json"), now_ms=1_000_000, secret="")
    with pytest.raises(Refused, match="LINEAR_WEBHOOK_SECRET"):
        linear_hooks.verified_payload(secret="", body=body, signature=signature, now_ms=1_000_000)


# --- Linear: parsing ------------------------------------------------------------------------------


def parse_linear(payload: dict) -> linear_hooks.LinearEvent:
    return linear_hooks.parse(payload, trigger_label="rpi-auto", own_user_id=TACX_LINEAR)


def test_linear_issue_created_with_the_label_is_a_trigger_by_its_creator():
    event = parse_linear(fixture("linear-webhooks/Issue.create.json"))
    assert (event.kind, event.identifier, event.team_key, event.actor_name) == ("trigger", "ENG-12", "ENG", "Ada Lovelace")


def test_linear_label_added_is_a_trigger_and_removed_an_untrigger():
    added = fixture("linear-webhooks/Issue.update.labels.json")
    assert parse_linear(added).kind == "trigger"
    removed = copy.deepcopy(added)
    removed["updatedFrom"]["labelIds"], removed["data"]["labelIds"] = added["data"]["labelIds"], added["updatedFrom"]["labelIds"]
    removed["data"]["labels"] = [label for label in added["data"]["labels"] if label["name"] == "bug"]
    assert parse_linear(removed).kind == "untrigger"
    other = copy.deepcopy(added)
    other["updatedFrom"] = {"title": "old"}
    assert parse_linear(other).kind == "ignored"


def test_linear_assignment_and_delegation_to_tacx_and_taking_them_away():
    assigned = fixture("linear-webhooks/Issue.update.assignee.json")
    event = parse_linear(assigned)
    assert (event.kind, event.via) == ("assigned", "assignee")
    unassigned = copy.deepcopy(assigned)
    unassigned["data"]["assigneeId"], unassigned["updatedFrom"]["assigneeId"] = None, TACX_LINEAR
    assert (parse_linear(unassigned).kind, parse_linear(unassigned).via) == ("unassigned", "assignee")
    delegated = copy.deepcopy(assigned)
    delegated["data"]["assigneeId"], delegated["updatedFrom"] = None, {"delegateId": None}
    delegated["data"]["delegateId"] = TACX_LINEAR
    assert (parse_linear(delegated).kind, parse_linear(delegated).via) == ("assigned", "delegate")
    someone_else = copy.deepcopy(assigned)
    someone_else["data"]["assigneeId"] = "b0b00000-0000-4000-8000-000000000000"
    assert parse_linear(someone_else).kind == "ignored"


def test_a_linear_comment_mentioning_tacx_is_a_round_request_and_others_are_ignored():
    comment = fixture("linear-webhooks/Comment.create.json")
    event = parse_linear(comment)
    assert (event.kind, event.identifier, event.comment_body) == (
        "comment",
        "ENG-12",
        "@tacx please also handle 111, 112 and 113",
    )
    for body in ("thanks!", "mail ops@tacx.example", "@tacxbot hi"):
        assert parse_linear({**comment, "data": {**comment["data"], "body": body}}).kind == "ignored"


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda p: p.update(data="x"), "data must be an object"),
        (lambda p: p["data"].pop("identifier"), "data.identifier is missing"),
        (lambda p: p["data"].update(labels="rpi-auto"), "data.labels must be a list"),
        (lambda p: p["data"].update(labelIds=[1, 2]), "data.labelIds must be a list of ids"),
        (lambda p: p.update(actor=["me"]), "actor must be an object"),
        (lambda p: p["data"].update(title=12), "data.title must be a string"),
        (lambda p: p.pop("type"), "type is missing"),
    ],
)
def test_a_malformed_linear_payload_names_the_field(mutate, problem):
    payload = fixture("linear-webhooks/Issue.create.json")
    mutate(payload)
    with pytest.raises(BadPayload, match=problem):
        parse_linear(payload)


# --- Jira -----------------------------------------------------------------------------------------


def parse_jira(payload: dict) -> jira_hooks.JiraEvent:
    return jira_hooks.parse(payload, trigger_label="rpi-auto", own_account_id=TACX_JIRA)


def test_a_jira_delivery_is_verified_by_its_x_hub_signature():
    body = (FIXTURES / "jira-webhooks/jira_issue_created.json").read_bytes()
    good = jira_hooks.signature_for(SECRET, body)
    assert (
        good.startswith("sha256=")
        and jira_hooks.verified_payload(secret=SECRET, body=body, signature=good)["webhookEvent"] == "jira:issue_created"
    )
    for forged in ("", "sha256=" + "0" * 64, jira_hooks.signature_for("other", body), good.removeprefix("sha256=")):
        with pytest.raises(Refused):
            jira_hooks.verified_payload(secret=SECRET, body=body, signature=forged)
    with pytest.raises(Refused, match="JIRA_WEBHOOK_SECRET"):
        jira_hooks.verified_payload(secret="", body=body, signature=good)


def test_jira_events_mean_what_their_changelog_says():
    created = parse_jira(fixture("jira-webhooks/jira_issue_created.json"))
    assert (created.kind, created.key, created.project_key, created.actor_id) == (
        "trigger",
        "OPS-7",
        "OPS",
        "5b10ac8d82e05b22cc7d4ef5",
    )
    assert parse_jira(fixture("jira-webhooks/jira_issue_updated.labels.json")).kind == "trigger"
    removed = fixture("jira-webhooks/jira_issue_updated.labels.json")
    removed["changelog"]["items"][0].update(fromString="bug rpi-auto", toString="bug")
    assert parse_jira(removed).kind == "untrigger"
    assert parse_jira(fixture("jira-webhooks/jira_issue_updated.assignee.json")).kind == "assigned"
    unassigned = fixture("jira-webhooks/jira_issue_updated.assignee.json")
    unassigned["changelog"]["items"][0].update({"from": TACX_JIRA, "to": None})
    assert parse_jira(unassigned).kind == "unassigned"
    comment = parse_jira(fixture("jira-webhooks/comment_created.json"))
    assert (comment.kind, comment.comment_body.strip()) == ("comment", "@tacx please also handle 111, 112 and 113")
    assert parse_jira({"webhookEvent": "jira:issue_deleted"}).kind == "ignored"


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda p: p["issue"].update(key=7), "issue.key must be a string"),
        (lambda p: p["issue"].pop("key"), "issue.key is missing"),
        (lambda p: p["issue"]["fields"].update(labels="rpi-auto"), "issue.fields.labels must be a list of strings"),
        (lambda p: p.update(changelog={"items": "labels"}), "changelog.items must be a list"),
        (lambda p: p.update(user="ada"), "user must be an object"),
    ],
)
def test_a_malformed_jira_payload_names_the_field(mutate, problem):
    payload = fixture("jira-webhooks/jira_issue_updated.labels.json")
    mutate(payload)
    with pytest.raises(BadPayload, match=problem):
        parse_jira(payload)
