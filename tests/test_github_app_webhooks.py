"""A webhook delivered by the GitHub App (its payload names the `installation`) is accepted like
any other; the coordinator then checks the labeler's permission with the App's installation
token."""

from __future__ import annotations

import json

import pytest
from conftest import make_origin_and_clone
from github_standin import WEBHOOK_SECRET, GitHubStandIn, command_workflow, fixture_bytes
from test_github_app import APP_ID, PRIVATE_KEY, PUBLIC_KEY
from test_webhooks import deliver

from coordinator.loop import Coordinator
from coordinator.models import WebhookDelivery
from pipeline import github_auth
from pipeline.models import Repository, Task


@pytest.fixture
def app_hello_world(db, settings, tmp_path):
    server = GitHubStandIn(app_id=APP_ID, app_public_key=PUBLIC_KEY).start()
    server.add_repo("Codertocat/Hello-World", permissions={"Codertocat": "admin"})
    server.add_installation(1, account="Codertocat", repos=("Codertocat/Hello-World",))
    settings.GITHUB_API_URL = server.url
    settings.GITHUB_APP_ID, settings.GITHUB_APP_PRIVATE_KEY, settings.GITHUB_TOKEN = str(APP_ID), PRIVATE_KEY, ""
    settings.GITHUB_WEBHOOK_SECRET = WEBHOOK_SECRET
    github_auth.forget_shared_identities()
    origin, _ = make_origin_and_clone(tmp_path, "hello", {"README.md": "Hello\n", ".tac/workflow.yaml": command_workflow()})
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="Codertocat/Hello-World", trigger_label="bug", clone_url=str(origin))
    yield server
    server.stop()
    github_auth.forget_shared_identities()


def test_an_app_delivery_with_an_installation_starts_a_task_checked_with_the_app_token(client, app_hello_world):
    payload = json.loads(fixture_bytes("issues.labeled"))
    payload["installation"] = {"id": 1, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="}
    body = json.dumps(payload).encode()
    response = deliver(client, "issues", body, delivery="app-1")
    assert response.status_code == 202
    assert WebhookDelivery.objects.get().delivery_id == "app-1"

    Coordinator(tick=0).run_once()

    task = Task.objects.get()
    assert task.status == Task.Status.RUNNING and task.triggered_by == "Codertocat"
    (check,) = app_hello_world.requests_to("GET", r"/collaborators/Codertocat/permission")
    assert check["identity"] == "installation:1" and check["status"] == 200
