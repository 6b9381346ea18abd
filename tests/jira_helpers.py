"""The Jira stand-in wired to TAC-X for the tracker's tests: settings, secrets from the
environment, and deliveries to /webhooks/jira."""

from __future__ import annotations

import pytest

from harness.trackers.jira import JiraStandIn
from pipeline import trackers

JIRA_SECRET = "jira_wh_test_secret_0123456789"


@pytest.fixture
def jira(settings, monkeypatch):
    """A running Jira stand-in with project OPS and a cast: dev (EDIT_ISSUES and
    TRANSITION_ISSUES on OPS), reporter (EDIT_ISSUES only) and TAC-X's own account."""
    from django.core.cache import cache

    server = JiraStandIn().start()
    server.ops = server.add_project("OPS")
    server.dev = server.add_user("Dev")
    server.reporter = server.add_user("Reporter")
    server.grant(server.dev, server.ops, "EDIT_ISSUES", "TRANSITION_ISSUES", "BROWSE_PROJECTS")
    server.grant(server.reporter, server.ops, "EDIT_ISSUES", "BROWSE_PROJECTS")
    settings.JIRA_BASE_URL = server.url
    settings.JIRA_EMAIL = server.email
    settings.TACX_JIRA_ACCOUNT_ID = server.me["accountId"]
    monkeypatch.setenv("JIRA_API_TOKEN", server.token)
    monkeypatch.setenv("JIRA_WEBHOOK_SECRET", JIRA_SECRET)
    trackers.forget_instances()
    cache.clear()
    yield server
    server.stop()
    trackers.forget_instances()
    cache.clear()


def deliver(client, body: bytes, headers: dict[str, str]):
    return client.post(
        "/webhooks/jira",
        data=body,
        content_type="application/json",
        headers={k: v for k, v in headers.items() if k != "Content-Type"},
    )


def label_delivery(jira: JiraStandIn, issue: dict, labels: tuple[str, ...], *, by: dict, **kwargs) -> tuple[bytes, dict]:
    items = jira.set_labels(issue, labels, by=by)
    return jira.webhook("jira:issue_updated", issue, secret=JIRA_SECRET, user=by, changelog=items, **kwargs)
