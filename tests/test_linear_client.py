"""The Linear client (gql over requests) against the Linear stand-in (graphql-core over a subset
of Linear's schema): queries, mutations, errors and the publish guard."""

from __future__ import annotations

import pytest

from harness.trackers.linear import LinearStandIn
from pipeline.trackers.linear_api import LinearClient, LinearError

pytestmark = pytest.mark.django_db


@pytest.fixture
def linear():
    with LinearStandIn() as standin:
        yield standin


def client_for(standin: LinearStandIn, key: str | None = None) -> LinearClient:
    return LinearClient(url=standin.url + "/graphql", key=key or standin.key)


def test_it_lists_open_issues_by_label_team_and_state(linear):
    eng, ops = linear.add_team("ENG"), linear.add_team("OPS")
    wanted = linear.add_issue(eng, "Fix it", labels=("RPI-Auto", "bug"))
    linear.add_issue(eng, "No label")
    linear.add_issue(eng, "Done already", labels=("rpi-auto",), state="completed")
    linear.add_issue(ops, "Other team", labels=("rpi-auto",))
    client = client_for(linear)
    found = client.issues(label="rpi-auto", team_key="ENG")
    assert [i.identifier for i in found] == [wanted["identifier"]]
    assert found[0].labels == ("RPI-Auto", "bug") and found[0].is_open and found[0].team_key == "ENG"
    assert {i.title for i in client.issues(label="rpi-auto", state_name="todo")} == {"Other team", "Fix it"}
    assert client.issues(label="rpi-auto", state_name="In Progress") == []


def test_it_fetches_an_issue_by_identifier_or_id_and_says_none_when_unknown(linear):
    team = linear.add_team("ENG")
    ada = linear.add_user("Ada", teams=(team,))
    issue = linear.add_issue(team, "Fix it", description="body", assignee=ada)
    client = client_for(linear)
    by_key = client.issue("ENG-1")
    assert (by_key.id, by_key.description, by_key.assignee_id, by_key.state_type) == (issue["id"], "body", ada["id"], "unstarted")
    assert client.issue(issue["id"]).identifier == "ENG-1"
    assert client.issue("ENG-99") is None


def test_it_reads_a_members_role_and_teams(linear):
    team = linear.add_team("ENG")
    guest = linear.add_user("Gus", guest=True, teams=(team,))
    member = client_for(linear).member(guest["id"])
    assert member.guest and not member.admin and member.team_keys == {"ENG"}
    assert client_for(linear).member("nobody") is None


def test_it_comments_updates_and_attaches_the_pull_request_once(linear):
    team = linear.add_team("ENG")
    issue = linear.add_issue(team, "Fix it")
    client = client_for(linear)
    comment_id = client.comment_create(issue_id=issue["id"], body="Planning…")
    client.comment_update(comment_id=comment_id, body="Done: https://github.example/acme/app/pull/3")
    first = client.attach_link(issue_id=issue["id"], url="https://github.example/acme/app/pull/3", title="PR #3")
    again = client.attach_link(issue_id=issue["id"], url="https://github.example/acme/app/pull/3", title="PR #3 (draft)")
    assert first == again and len(linear.attachments) == 1
    assert linear.comments[comment_id]["body"].startswith("Done:") and linear.comments[comment_id]["history"] == ["Planning…"]
    assert [c["id"] for c in client.comments(issue["id"])] == [comment_id]


def test_a_wrong_key_is_a_permanent_error_and_a_rate_limit_says_when(linear):
    with pytest.raises(LinearError) as refused:
        client_for(linear, key="lin_api_wrong").viewer()
    assert refused.value.permanent and refused.value.code == "AUTHENTICATION_ERROR"
    linear.rate_limit(0)
    with pytest.raises(LinearError) as limited:
        client_for(linear).viewer()
    assert not limited.value.permanent and 1 <= limited.value.retry_after <= 31


def test_a_comment_carrying_a_secret_is_not_sent(linear, monkeypatch):
    monkeypatch.setenv("LINEAR_API_KEY", "lin_api_0123456789abcdef0123")
    team = linear.add_team("ENG")
    issue = linear.add_issue(team, "Fix it")
    with pytest.raises(LinearError, match="LINEAR_API_KEY") as blocked:
        client_for(linear).comment_create(issue_id=issue["id"], body="leaked lin_api_0123456789abcdef0123")
    assert blocked.value.permanent and linear.comments == {}


def test_the_key_comes_from_a_file_and_never_from_both(linear, monkeypatch, tmp_path):
    (tmp_path / "key").write_text(linear.key + "\n")
    monkeypatch.delenv("LINEAR_API_KEY", raising=False)
    monkeypatch.setenv("LINEAR_API_KEY_FILE", str(tmp_path / "key"))
    assert LinearClient(url=linear.url + "/graphql").viewer()["viewer"]["name"] == "TAC-X"
    monkeypatch.setenv("LINEAR_API_KEY", "other")
    with pytest.raises(LinearError, match="both LINEAR_API_KEY and LINEAR_API_KEY_FILE"):
        LinearClient(url=linear.url + "/graphql")
