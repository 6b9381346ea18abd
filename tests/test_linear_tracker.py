# ruff: noqa: F811  (pytest fixtures imported from the helpers are redefined as arguments)
"""Linear as a tracker, through the webhook route, the coordinator and the Linear stand-in:
label → task exactly once across webhook, redelivery and poll; forged, stale and malformed
deliveries; who may trigger; assignment and delegation; unassignment; @tacx rounds."""

from __future__ import annotations

import json

import pytest
from github_standin import TOKEN, github_repo, standin  # noqa: F401
from linear_helpers import LINEAR_SECRET, deliver, label_delivery, linear, linear_repository  # noqa: F401

from coordinator import replies, tracker_replies
from coordinator.loop import Coordinator
from coordinator.models import WebhookDelivery
from pipeline.github import GitHubClient
from pipeline.models import Round, Task
from pipeline.trackers import TrackerError, tracker_named


@pytest.fixture
def repo(github_repo):  # noqa: F811
    github_repo.tracker_kind, github_repo.tracker_settings = "linear", {"team": "ENG"}
    github_repo.save()
    return github_repo


def coordinator_for(standin) -> Coordinator:  # noqa: F811
    coordinator = Coordinator(client=GitHubClient(base_url=standin.url, token=TOKEN), tick=0)
    coordinator.comments.min_edit_seconds = 0
    return coordinator


def handle_deliveries(coordinator: Coordinator) -> None:
    while coordinator.handle_one_delivery():
        pass


def test_a_label_delivery_redelivered_and_polled_makes_one_task(client, repo, standin, linear):  # noqa: F811
    issue = linear.add_issue(linear.eng, "Add a changelog", description="We need CHANGES.md.")
    body, headers = label_delivery(linear, issue, ("rpi-auto",), by=linear.ada)
    assert deliver(client, body, headers).status_code == 202
    again = deliver(client, body, headers)
    assert (again.status_code, again.content) == (200, b"duplicate")
    coordinator = coordinator_for(standin)
    handle_deliveries(coordinator)
    task = Task.objects.get()
    assert (task.tracker_issue_key, task.issue_number, task.triggered_by, task.title) == (
        "ENG-1",
        1,
        linear.ada["id"],
        "Add a changelog",
    )
    assert task.body == "We need CHANGES.md." and task.issue_url == issue["url"]
    # The poll sees the same label (applied by ada, per the issue's history): no second task,
    # also once the first has finished.
    events = tracker_named("linear").issues_triggered(repo)
    assert [(e.issue.key, e.actor.login, e.via) for e in events] == [("ENG-1", linear.ada["id"], "label")]
    coordinator.sources["linear"].poll(repo)
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SUCCEEDED)
    assert coordinator.sources["linear"].poll(repo).endswith("0 task(s) created")
    assert Task.objects.count() == 1


def test_polling_alone_starts_the_task_and_a_late_delivery_of_that_change_does_not_start_another(client, repo, standin, linear):  # noqa: F811
    issue = linear.add_issue(linear.eng, "Add a changelog")
    body, headers = label_delivery(linear, issue, ("rpi-auto",), by=linear.ada)
    coordinator = coordinator_for(standin)
    assert coordinator.sources["linear"].poll(repo).endswith("1 task(s) created")
    task = Task.objects.get()
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SUCCEEDED)
    late = deliver(client, body, headers)
    assert (late.status_code, late.content) == (200, b"ignored: that trigger already had its task")
    handle_deliveries(coordinator)
    assert Task.objects.count() == 1


@pytest.mark.parametrize("who, role", [("gus", "guest"), ("olga", "member, not of team ENG")])
def test_a_guest_or_someone_outside_the_team_cannot_trigger(client, repo, standin, linear, who, role):  # noqa: F811
    issue = linear.add_issue(linear.eng, "Add a changelog")
    body, headers = label_delivery(linear, issue, ("rpi-auto",), by=getattr(linear, who))
    assert deliver(client, body, headers).status_code == 202
    handle_deliveries(coordinator_for(standin))
    task = Task.objects.get()
    assert task.status == Task.Status.SKIPPED and role in task.status_reason and "ENG" in task.status_reason


def test_an_admin_outside_the_team_may_trigger_and_an_app_user_may_not(repo, linear):
    tracker = tracker_named("linear")
    assert tracker.permission(repo, linear.admin["id"]).allowed
    assert not tracker.permission(repo, linear.tacx["id"]).allowed
    assert tracker.permission(repo, "no-such-user").role == "no Linear user"


def test_forged_stale_and_unconfigured_deliveries_are_refused_and_nothing_is_recorded(client, repo, linear, monkeypatch):
    issue = linear.add_issue(linear.eng, "Add a changelog")
    body, headers = label_delivery(linear, issue, ("rpi-auto",), by=linear.ada)
    forged = {**headers, "Linear-Signature": "0" * 64}
    assert deliver(client, body, forged).status_code == 403
    tampered = body.replace(b"Add a changelog", b"Delete everything")
    assert deliver(client, tampered, headers).status_code == 403
    import time

    old, old_headers = linear.webhook(
        "Issue",
        "update",
        linear.issue_data(issue),
        secret=LINEAR_SECRET,
        actor=linear.ada,
        updated_from={"labelIds": []},
        timestamp_ms=int(time.time() * 1000) - 120_000,
    )
    stale = deliver(client, old, old_headers)
    assert stale.status_code == 403 and b"webhookTimestamp" in stale.content
    monkeypatch.delenv("LINEAR_WEBHOOK_SECRET")
    assert deliver(client, body, headers).status_code == 403
    assert not WebhookDelivery.objects.exists() and not Task.objects.exists()


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda p: p["data"].update(identifier=["ENG-1"]), b"data.identifier must be a string"),
        (lambda p: p["data"].update(labelIds="all"), b"data.labelIds must be a list of ids"),
        (lambda p: p["data"].update(identifier="ENG-one"), b"not a Linear issue identifier"),
        (lambda p: p.update(data=None), b"data must be an object"),
    ],
)
def test_a_malformed_signed_payload_is_a_400_and_nothing_is_recorded(client, repo, linear, mutate, problem):
    from harness.trackers.linear import sign_headers

    issue = linear.add_issue(linear.eng, "Add a changelog")
    body, _ = label_delivery(linear, issue, ("rpi-auto",), by=linear.ada)
    payload = json.loads(body)
    mutate(payload)
    bad = json.dumps(payload).encode()
    answer = deliver(client, bad, sign_headers(bad, LINEAR_SECRET, "Issue"))
    assert answer.status_code == 400 and problem in answer.content
    assert not WebhookDelivery.objects.exists() and not Task.objects.exists()


def test_assignment_or_delegation_to_tacx_starts_a_task_once_and_unassigning_before_start_cancels_it(
    client, repo, standin, linear
):  # noqa: F811
    issue = linear.add_issue(linear.eng, "Add a changelog")
    updated_from = linear.assign(issue, linear.tacx, by=linear.ada)
    body, headers = linear.webhook(
        "Issue", "update", linear.issue_data(issue), secret=LINEAR_SECRET, actor=linear.ada, updated_from=updated_from
    )
    assert deliver(client, body, headers).status_code == 202
    coordinator = coordinator_for(standin)
    coordinator.sources = {"linear": coordinator.sources["linear"]}  # no dispatch surprises from GitHub
    handle_deliveries(coordinator)
    task = Task.objects.get()
    assert (task.status, task.trigger_source) == (Task.Status.QUEUED, "assignment")
    assert coordinator.sources["linear"].poll(repo).endswith("0 task(s) created")  # the poll sees the same assignment
    updated_from = linear.assign(issue, None, by=linear.ada)
    body, headers = linear.webhook(
        "Issue", "update", linear.issue_data(issue), secret=LINEAR_SECRET, actor=linear.ada, updated_from=updated_from
    )
    assert deliver(client, body, headers).status_code == 202
    handle_deliveries(coordinator)
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED and "unassigned" in task.status_reason
    # Delegation (Linear's agents) is a trigger too; by a guest it is refused.
    other = linear.add_issue(linear.eng, "Second")
    updated_from = linear.assign(other, linear.tacx, by=linear.gus, role="delegate")
    body, headers = linear.webhook(
        "Issue", "update", linear.issue_data(other), secret=LINEAR_SECRET, actor=linear.gus, updated_from=updated_from
    )
    assert deliver(client, body, headers).status_code == 202
    handle_deliveries(coordinator)
    refused = Task.objects.get(tracker_issue_key="ENG-2")
    assert refused.status == Task.Status.SKIPPED and "guest" in refused.status_reason


def test_removing_the_label_cancels_a_queued_task_and_an_at_tacx_comment_starts_a_round(client, repo, standin, linear):  # noqa: F811
    issue = linear.add_issue(linear.eng, "Add a changelog")
    deliver(client, *label_delivery(linear, issue, ("rpi-auto",), by=linear.ada))
    coordinator = coordinator_for(standin)
    handle_deliveries(coordinator)
    task = Task.objects.get()
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SUCCEEDED)
    comment = {
        "id": "c0ffee00-0000-4000-8000-00000000c0de",
        "body": "@tacx please also handle 111",
        "issueId": issue["id"],
        "userId": linear.ada["id"],
        "createdAt": "2099-01-01T00:00:00.000Z",
        "issue": {"id": issue["id"], "identifier": "ENG-1", "title": issue["title"]},
        "url": issue["url"],
    }
    body, headers = linear.webhook("Comment", "create", comment, secret=LINEAR_SECRET, actor=linear.ada)
    assert deliver(client, body, headers).status_code == 202
    handle_deliveries(coordinator)
    (round_,) = Round.objects.filter(task=task)
    assert round_.text == "please also handle 111" and round_.actor == linear.ada["id"]
    # GitHub's reaction and reply loops leave a Linear comment's round alone (its id is Linear's).
    assert replies.react_one(coordinator.client) is False
    Round.objects.filter(pk=round_.pk).update(status=Round.Status.SUCCEEDED)
    assert replies.reply_one(coordinator.client) is False
    # The reply goes on the Linear issue instead, once.
    assert tracker_replies.reply_one() is True and tracker_replies.reply_one() is False
    (reply,) = [c for c in linear.comments.values() if f"tacx:round:{round_.pk}" in c["body"]]
    assert reply["issue_id"] == issue["id"] and "succeeded" in reply["body"]
    guest_comment = {**comment, "id": "c0ffee00-0000-4000-8000-00000000beef", "userId": linear.gus["id"]}
    body, headers = linear.webhook("Comment", "create", guest_comment, secret=LINEAR_SECRET, actor=linear.gus)
    deliver(client, body, headers)
    handle_deliveries(coordinator)
    refused = Round.objects.get(trigger_key__endswith="beef")
    assert refused.status == Round.Status.REFUSED and "guest" in refused.reason


def test_bad_tracker_settings_are_named(repo, linear):
    repo.tracker_settings = {"teem": "ENG"}
    with pytest.raises(TrackerError, match=r"tracker_settings.team: the Linear team key is required"):
        tracker_named("linear").issues_triggered(repo)


def test_moving_an_issue_into_the_trigger_state_starts_a_task_and_closing_it_cancels_the_task(client, repo, standin, linear):
    repo.tracker_settings = {"team": "ENG", "state": "In Progress"}
    repo.save()
    issue = linear.add_issue(linear.eng, "Add a changelog")
    moved = linear.set_state(issue, "started", by=linear.ada)
    body, headers = linear.webhook(
        "Issue", "update", linear.issue_data(issue), secret=LINEAR_SECRET, actor=linear.ada, updated_from=moved
    )
    assert deliver(client, body, headers).status_code == 202
    coordinator = coordinator_for(standin)
    handle_deliveries(coordinator)
    task = Task.objects.get()
    assert task.status == Task.Status.QUEUED
    closed = linear.set_state(issue, "canceled", by=linear.ada)
    body, headers = linear.webhook(
        "Issue", "update", linear.issue_data(issue), secret=LINEAR_SECRET, actor=linear.ada, updated_from=closed
    )
    assert deliver(client, body, headers).status_code == 202
    handle_deliveries(coordinator)
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED and "closed in Linear" in task.status_reason


def test_a_rate_limit_makes_the_poll_wait_as_long_as_linear_says(repo, standin, linear):
    from coordinator.sources import SourceUnavailable

    linear.add_issue(linear.eng, "Add a changelog", labels=("rpi-auto",))
    linear.rate_limit(0)
    with pytest.raises(SourceUnavailable) as waiting:
        coordinator_for(standin).sources["linear"].poll(repo)
    assert 1 <= waiting.value.retry_after <= 31 and not Task.objects.exists()


def test_the_webhook_secret_may_come_from_a_file(client, repo, linear, monkeypatch, tmp_path):
    (tmp_path / "secret").write_text(LINEAR_SECRET + "\n")
    monkeypatch.delenv("LINEAR_WEBHOOK_SECRET")
    monkeypatch.setenv("LINEAR_WEBHOOK_SECRET_FILE", str(tmp_path / "secret"))
    issue = linear.add_issue(linear.eng, "Add a changelog")
    assert deliver(client, *label_delivery(linear, issue, ("rpi-auto",), by=linear.ada)).status_code == 202
    monkeypatch.setenv("LINEAR_WEBHOOK_SECRET_FILE", str(tmp_path / "missing"))
    assert not tracker_named("linear").configured()
    assert deliver(client, *label_delivery(linear, issue, ("bug",), by=linear.ada)).status_code == 403
