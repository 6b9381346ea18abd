"""The Linear stand-in wired to TAC-X for the tracker's tests: settings, secrets from the
environment, a registered repository whose code is on the GitHub stand-in, and deliveries."""

from __future__ import annotations

import pytest

from harness.trackers.linear import LinearStandIn
from pipeline import trackers
from pipeline.models import Repository

LINEAR_SECRET = "lin_wh_test_secret_0123456789"


@pytest.fixture
def linear(settings, monkeypatch):
    """A running Linear stand-in with team ENG, a cast (ada: member of ENG, gus: guest, olga:
    member of another team, admin: workspace admin) and TAC-X's own agent user."""
    from django.core.cache import cache

    server = LinearStandIn().start()
    server.eng = server.add_team("ENG")
    other = server.add_team("OPS")
    server.ada = server.add_user("Ada", teams=(server.eng,))
    server.gus = server.add_user("Gus", guest=True, teams=(server.eng,))
    server.olga = server.add_user("Olga", teams=(other,))
    server.admin = server.add_user("Root", admin=True)
    server.tacx = server.add_user("tacx-agent", app=True)
    settings.LINEAR_API_URL = server.url + "/graphql"
    settings.TACX_LINEAR_USER_ID = server.tacx["id"]
    monkeypatch.setenv("LINEAR_API_KEY", server.key)
    monkeypatch.setenv("LINEAR_WEBHOOK_SECRET", LINEAR_SECRET)
    trackers.forget_instances()
    cache.clear()
    yield server
    server.stop()
    trackers.forget_instances()
    cache.clear()


def linear_repository(clone_url: str, **settings) -> Repository:
    return Repository.objects.create(
        kind=Repository.Kind.GITHUB,
        full_name="octo/sample",
        clone_url=clone_url,
        default_branch="main",
        trigger_label="rpi-auto",
        tracker_kind="linear",
        tracker_settings={"team": "ENG", **settings},
    )


def deliver(client, body: bytes, headers: dict[str, str]):
    """POST a delivery to /webhooks/linear as Linear does."""
    return client.post(
        "/webhooks/linear",
        data=body,
        content_type="application/json",
        headers={k: v for k, v in headers.items() if k != "Content-Type"},
    )


def label_delivery(linear: LinearStandIn, issue: dict, labels: tuple[str, ...], *, by: dict, **kwargs) -> tuple[bytes, dict]:
    """Change the labels on the stand-in as `by` and build the matching Issue.update delivery."""
    updated_from = linear.set_labels(issue, labels, by=by)
    return linear.webhook(
        "Issue", "update", linear.issue_data(issue), secret=LINEAR_SECRET, actor=by, updated_from=updated_from, **kwargs
    )
