"""The GitHub webhook: verify, record, answer; the coordinator does the rest.

Payloads are the real octokit examples (tests/fixtures/github-webhooks, repository
Codertocat/Hello-World, label "bug", sender Codertocat), signed here byte for byte.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import make_origin_and_clone
from github_standin import (  # noqa: F401
    WEBHOOK_SECRET,
    command_workflow,
    fixture_bytes,
    sign,
    standin,
)

from coordinator.loop import Coordinator
from coordinator.models import WebhookDelivery
from coordinator.webhooks import signature_for, signature_valid
from pipeline import services
from pipeline.models import Repository, Task

URL = "/webhooks/github"


@pytest.fixture
def hello_world(db, standin, tmp_path):  # noqa: F811
    standin.add_repo("Codertocat/Hello-World", permissions={"Codertocat": "admin", "reader": "read"})
    origin, _ = make_origin_and_clone(tmp_path, "hello", {"README.md": "Hello\n", ".tac/workflow.yaml": command_workflow()})
    return Repository.objects.create(
        kind=Repository.Kind.GITHUB, full_name="Codertocat/Hello-World", trigger_label="bug", clone_url=str(origin)
    )


def deliver(client, event: str, body: bytes, *, delivery: str = "d-1", signature: str | None = None, content_type: str = "application/json"):
    """POST one delivery, signed with the webhook secret unless ``signature`` is given ("" = unsigned)."""
    headers = {"HTTP_X_GITHUB_EVENT": event, "HTTP_X_GITHUB_DELIVERY": delivery}
    if signature != "":
        headers["HTTP_X_HUB_SIGNATURE_256"] = signature or sign(body)
    return client.post(URL, data=body, content_type=content_type, **headers)


def coordinator_pass() -> None:
    Coordinator(tick=0).run_once()


def test_it_matches_githubs_published_signature_vector():
    assert signature_for("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
    assert signature_valid("It's a Secret to Everybody", b"Hello, World!", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
    assert not signature_valid("It's a Secret to Everybody", b"Hello, World?", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
    assert not signature_valid("", b"Hello, World!", signature_for("", b"Hello, World!"))


def test_a_validly_signed_labeled_delivery_creates_one_task(client, hello_world):
    response = deliver(client, "issues", fixture_bytes("issues.labeled"))
    assert response.status_code == 202
    assert WebhookDelivery.objects.get().status == WebhookDelivery.Status.PENDING
    coordinator_pass()
    task = Task.objects.get()
    assert (task.repository, task.issue_number, task.title) == (hello_world, 1, "Spelling error in the README file")
    assert (task.trigger_source, task.triggered_by) == ("webhook", "Codertocat")
    assert task.status == Task.Status.RUNNING  # and the same pass dispatched it
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDelivery.Status.DONE and delivery.task == task


def test_the_same_delivery_again_creates_nothing(client, hello_world):
    body = fixture_bytes("issues.labeled")
    assert deliver(client, "issues", body, delivery="same").status_code == 202
    coordinator_pass()
    again = deliver(client, "issues", body, delivery="same")
    assert (again.status_code, again.content) == (200, b"duplicate")
    coordinator_pass()
    assert Task.objects.count() == 1
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.parametrize("signature", ["", "sha256=" + "0" * 64, "sha1=abc", "garbage"])
def test_a_wrong_or_missing_signature_is_refused_and_nothing_is_recorded(client, hello_world, signature):
    response = deliver(client, "issues", fixture_bytes("issues.labeled"), signature=signature)
    assert response.status_code in (401, 403)
    coordinator_pass()
    assert WebhookDelivery.objects.count() == 0
    assert Task.objects.count() == 0


def test_a_signature_made_with_another_secret_is_refused(client, hello_world):
    body = fixture_bytes("issues.labeled")
    response = deliver(client, "issues", body, signature=sign(body, "not-the-secret"))
    assert response.status_code == 403
    assert WebhookDelivery.objects.count() == 0


def test_a_body_changed_after_signing_is_refused(client, hello_world):
    body = fixture_bytes("issues.labeled")
    response = deliver(client, "issues", body.replace(b'"bug"', b'"bog"', 1), signature=sign(body))
    assert response.status_code == 403


def test_without_a_configured_secret_every_delivery_is_refused(client, hello_world, settings):
    settings.GITHUB_WEBHOOK_SECRET = ""
    body = fixture_bytes("issues.labeled")
    for signature in (sign(body, ""), sign(body, WEBHOOK_SECRET), ""):
        assert deliver(client, "issues", body, signature=signature).status_code in (401, 403)
    assert deliver(client, "ping", fixture_bytes("ping"), signature=sign(fixture_bytes("ping"), "")).status_code in (401, 403)
    assert WebhookDelivery.objects.count() == 0


def test_ping_is_answered(client, hello_world):
    response = deliver(client, "ping", fixture_bytes("ping"), delivery="ping-1")
    assert response.status_code == 200
    assert WebhookDelivery.objects.count() == 0


def test_the_endpoint_answers_only_post_and_needs_no_csrf_token(client, hello_world):
    assert client.get(URL).status_code == 405
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert deliver(strict, "issues", fixture_bytes("issues.labeled")).status_code == 202


def test_a_labeler_without_write_access_gets_no_running_task_but_a_skipped_one(client, hello_world, standin):  # noqa: F811
    standin.set_permission("Codertocat/Hello-World", "Codertocat", "triage")
    deliver(client, "issues", fixture_bytes("issues.labeled"))
    coordinator_pass()
    task = Task.objects.get()
    assert task.status == Task.Status.SKIPPED
    assert "Codertocat" in task.status_reason and "triage" in task.status_reason
    assert not Task.objects.filter(status__in=Task.ACTIVE).exists()
    assert standin.requests_to("GET", r"/collaborators/Codertocat/permission")


def test_a_bot_sender_is_ignored_unless_allowed(client, hello_world, settings):
    payload = json.loads(fixture_bytes("issues.labeled"))
    payload["sender"] = {**payload["sender"], "login": "helper[bot]", "type": "Bot"}
    body = json.dumps(payload).encode()
    deliver(client, "issues", body, delivery="bot-1")
    coordinator_pass()
    skipped = Task.objects.get()
    assert skipped.status == Task.Status.SKIPPED and "bot" in skipped.status_reason

    settings.TACX = {**settings.TACX, "ALLOWED_BOTS": ["helper[bot]"]}
    deliver(client, "issues", body, delivery="bot-2")
    coordinator_pass()
    assert Task.objects.filter(triggered_by="helper[bot]").exclude(status=Task.Status.SKIPPED).count() == 1


def test_a_repository_may_allow_non_writers_explicitly(client, hello_world, standin):  # noqa: F811
    standin.set_permission("Codertocat/Hello-World", "Codertocat", "read")
    Repository.objects.filter(pk=hello_world.pk).update(allow_non_writers=True)
    deliver(client, "issues", fixture_bytes("issues.labeled"))
    coordinator_pass()
    assert Task.objects.exclude(status=Task.Status.SKIPPED).count() == 1


def test_another_label_or_repository_or_event_is_ignored(client, hello_world):
    Repository.objects.filter(pk=hello_world.pk).update(trigger_label="rpi-auto")
    assert deliver(client, "issues", fixture_bytes("issues.labeled"), delivery="a").content.startswith(b"ignored")
    assert deliver(client, "issue_comment", fixture_bytes("issue_comment.created"), delivery="b").content.startswith(b"ignored")
    Repository.objects.filter(pk=hello_world.pk).update(trigger_label="bug", full_name="someone/else")
    assert deliver(client, "issues", fixture_bytes("issues.labeled"), delivery="c").content.startswith(b"ignored")
    coordinator_pass()
    assert WebhookDelivery.objects.count() == 0 and Task.objects.count() == 0


def test_comments_never_trigger_anything(client, hello_world):
    response = deliver(client, "issue_comment", fixture_bytes("issue_comment.created"))
    assert response.status_code == 200
    coordinator_pass()
    assert Task.objects.count() == 0


def test_an_issue_opened_or_reopened_with_the_label_creates_a_task(client, hello_world):
    deliver(client, "issues", fixture_bytes("issues.opened"), delivery="o")
    coordinator_pass()
    task = Task.objects.get()
    services.task_cancel(task=task)
    deliver(client, "issues", fixture_bytes("issues.reopened"), delivery="r")
    coordinator_pass()
    assert Task.objects.count() == 2
    assert Task.objects.filter(status__in=Task.ACTIVE).count() == 1


@pytest.mark.parametrize("fixture", ["issues.unlabeled", "closed"])
def test_removing_the_label_or_closing_the_issue_cancels_an_unfinished_task(client, hello_world, fixture):
    deliver(client, "issues", fixture_bytes("issues.labeled"), delivery="l")
    coordinator_pass()
    task = Task.objects.get()
    if fixture == "closed":
        # octokit has no closed example; GitHub sends the reopened shape with action "closed".
        payload = json.loads(fixture_bytes("issues.reopened"))
        payload["action"] = "closed"
        payload["issue"]["state"] = "closed"
        body = json.dumps(payload).encode()
    else:
        body = fixture_bytes(fixture)
    assert deliver(client, "issues", body, delivery="u").status_code == 202
    coordinator_pass()
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED
    assert "Codertocat" in task.status_reason


def test_labeled_then_unlabeled_before_the_coordinator_runs_ends_with_nothing_running(client, hello_world):
    deliver(client, "issues", fixture_bytes("issues.labeled"), delivery="1")
    deliver(client, "issues", fixture_bytes("issues.unlabeled"), delivery="2")
    coordinator_pass()
    assert not Task.objects.filter(status__in=Task.ACTIVE).exists()


def test_the_answer_is_quick_and_the_trigger_survives_a_github_outage(client, hello_world, standin):  # noqa: F811
    standin.fail_next("GET", r"/collaborators/", status=502, message="Server Error", times=1)
    started = time.monotonic()
    assert deliver(client, "issues", fixture_bytes("issues.labeled")).status_code == 202
    assert time.monotonic() - started < 1.0
    coordinator_pass()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDelivery.Status.PENDING and "502" in delivery.result
    assert Task.objects.count() == 0
    WebhookDelivery.objects.update(next_attempt_at=delivery.received_at)  # its back-off has passed
    coordinator_pass()
    assert Task.objects.get().status == Task.Status.RUNNING


def test_a_form_encoded_delivery_is_understood(client, hello_world):
    from urllib.parse import urlencode

    body = urlencode({"payload": fixture_bytes("issues.labeled").decode()}).encode()
    response = deliver(client, "issues", body, delivery="form-1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202
