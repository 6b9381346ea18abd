"""The Jira Cloud REST v3 client against the Jira stand-in: JQL search, issues, ADF comments,
remote links, the actor's permissions and the errors."""

from __future__ import annotations

import pytest

from harness.trackers.jira import JiraStandIn
from pipeline.trackers.jira_api import JiraClient, JiraError, adf_document, adf_text

pytestmark = pytest.mark.django_db


@pytest.fixture
def jira():
    with JiraStandIn() as standin:
        yield standin


def client_for(standin: JiraStandIn, token: str | None = None) -> JiraClient:
    return JiraClient(base_url=standin.url, email=standin.email, token=token or standin.token)


def test_it_searches_by_jql_across_pages(jira):
    ops, web = jira.add_project("OPS"), jira.add_project("WEB")
    wanted = [jira.add_issue(ops, f"task {n}", labels=("rpi-auto",)) for n in range(60)]
    jira.add_issue(ops, "done", labels=("rpi-auto",), status="Done")
    jira.add_issue(ops, "unlabelled")
    jira.add_issue(web, "other project", labels=("rpi-auto",))
    found = client_for(jira).search('project = OPS AND labels = "rpi-auto" AND statusCategory != Done ORDER BY created ASC')
    assert [i.key for i in found] == [w["key"] for w in wanted]
    assert sum(1 for r in jira.requests if r["path"] == "/rest/api/3/search/jql") == 2
    with pytest.raises(JiraError, match="Error in the JQL Query") as bad:
        client_for(jira).search("project in (OPS, WEB)")
    assert bad.value.permanent


def test_it_reads_an_issue_with_its_adf_description_as_text(jira):
    ops = jira.add_project("OPS")
    jira.add_issue(ops, "Fix it", description="first line\nsecond line", labels=("rpi-auto",))
    issue = client_for(jira).issue("OPS-1")
    assert (issue.title, issue.description, issue.labels, issue.is_open) == (
        "Fix it",
        "first line\nsecond line",
        ("rpi-auto",),
        True,
    )
    assert issue.url == f"{jira.url}/browse/OPS-1"
    assert client_for(jira).issue("OPS-99") is None


def test_comments_go_as_adf_and_links_once(jira):
    ops = jira.add_project("OPS")
    jira.add_issue(ops, "Fix it")
    client = client_for(jira)
    comment_id = client.comment_add("OPS-1", "TAC-X is planning.")
    client.comment_update("OPS-1", comment_id, "Pull request: https://github.example/acme/app/pull/3")
    stored = jira.comments["OPS-1"][0]
    assert (
        stored["body"]["type"] == "doc"
        and adf_text(stored["body"]).strip() == "Pull request: https://github.example/acme/app/pull/3"
    )
    link = stored["body"]["content"][0]["content"][1]
    assert link["marks"] == [{"type": "link", "attrs": {"href": "https://github.example/acme/app/pull/3"}}]
    first = client.remote_link("OPS-1", url="https://github.example/acme/app/pull/3", title="PR #3")
    assert client.remote_link("OPS-1", url="https://github.example/acme/app/pull/3", title="PR #3 ready") == first
    assert len(jira.remote_links["OPS-1"]) == 1 and jira.remote_links["OPS-1"][0]["object"]["title"] == "PR #3 ready"
    assert [c["body"].strip() for c in client.comments("OPS-1")] == ["Pull request: https://github.example/acme/app/pull/3"]


def test_the_stand_in_refuses_a_plain_text_comment_as_v3_does(jira):
    ops = jira.add_project("OPS")
    jira.add_issue(ops, "Fix it")
    with pytest.raises(JiraError, match="Atlassian Document"):
        client_for(jira).request("POST", "issue/OPS-1/comment", json={"body": "plain"})


def test_it_asks_whether_the_actor_holds_the_permissions_in_the_project(jira):
    ops, web = jira.add_project("OPS"), jira.add_project("WEB")
    dev, reporter = jira.add_user("Dev"), jira.add_user("Reporter")
    jira.grant(dev, ops, "EDIT_ISSUES", "TRANSITION_ISSUES")
    jira.grant(reporter, ops, "EDIT_ISSUES")
    client = client_for(jira)
    wanted = "EDIT_ISSUES,TRANSITION_ISSUES"
    assert client.has_permissions(account_id=dev["accountId"], project_key="OPS", permissions=wanted)
    assert not client.has_permissions(account_id=reporter["accountId"], project_key="OPS", permissions=wanted)
    assert not client.has_permissions(account_id=dev["accountId"], project_key="WEB", permissions=wanted)
    del web


def test_errors_say_whether_retrying_helps(jira):
    with pytest.raises(JiraError) as unauthenticated:
        client_for(jira, token="wrong").issue("OPS-1")
    assert unauthenticated.value.status == 401 and unauthenticated.value.permanent
    jira.fail_next(429, {"errorMessages": ["Rate limit exceeded."]}, {"Retry-After": "7"})
    with pytest.raises(JiraError) as limited:
        client_for(jira).issue("OPS-1")
    assert (limited.value.permanent, limited.value.retry_after) == (False, 7.0)


def test_adf_round_trips_plain_lines():
    text = "one\n\ntwo https://x.example/a b"
    assert adf_text(adf_document(text)) == "one\n\ntwo https://x.example/a b\n"
