# ruff: noqa: F811  (pytest fixtures imported from the helpers are redefined as arguments)
"""Jira Cloud as a tracker, through the webhook route, the coordinator and the Jira stand-in:
label → task exactly once across webhook, redelivery and poll; forged and malformed deliveries;
who may trigger (project permissions); assignment and unassignment; @tacx rounds; JQL."""

from __future__ import annotations

import json

import pytest
from github_standin import TOKEN, github_repo, standin  # noqa: F401
from jira_helpers import JIRA_SECRET, deliver, jira, label_delivery  # noqa: F401

from coordinator import tracker_replies
from coordinator.loop import Coordinator
from coordinator.models import WebhookDelivery
from harness.trackers.jira import sign_headers
from pipeline.github import GitHubClient
from pipeline.models import Round, Task
from pipeline.trackers import TrackerError, tracker_named
from pipeline.trackers.jira_api import adf_text


@pytest.fixture
def repo(github_repo):
    github_repo.tracker_kind, github_repo.tracker_settings = "jira", {"project": "OPS"}
    github_repo.save()
    return github_repo


def coordinator_for(standin) -> Coordinator:
    coordinator = Coordinator(client=GitHubClient(base_url=standin.url, token=TOKEN), tick=0)
    coordinator.comments.min_edit_seconds = 0
    return coordinator


def handle_deliveries(coordinator: Coordinator) -> None:
    while coordinator.handle_one_delivery():
        pass


def test_a_label_delivery_redelivered_and_polled_makes_one_task(client, repo, standin, jira):
    issue = jira.add_issue(jira.ops, "Add a changelog", description="We need CHANGES.md.")
    body, headers = label_delivery(jira, issue, ("bug", "rpi-auto"), by=jira.dev)
    assert deliver(client, body, headers).status_code == 202
    assert deliver(client, body, headers).content == b"duplicate"
    coordinator = coordinator_for(standin)
    handle_deliveries(coordinator)
    task = Task.objects.get()
    assert (task.tracker_issue_key, task.issue_number, task.triggered_by, task.body) == (
        "OPS-1",
        1,
        jira.dev["accountId"],
        "We need CHANGES.md.",
    )
    events = tracker_named("jira").issues_triggered(repo)
    assert [(e.issue.key, e.actor.login) for e in events] == [("OPS-1", jira.dev["accountId"])]
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SUCCEEDED)
    assert coordinator.sources["jira"].poll(repo).endswith("0 task(s) created")
    assert Task.objects.count() == 1


def test_polling_alone_starts_the_task_and_the_late_delivery_does_not_start_another(client, repo, standin, jira):
    issue = jira.add_issue(jira.ops, "Add a changelog")
    body, headers = label_delivery(jira, issue, ("rpi-auto",), by=jira.dev)
    assert coordinator_for(standin).sources["jira"].poll(repo).endswith("1 task(s) created")
    Task.objects.update(status=Task.Status.SUCCEEDED)
    assert deliver(client, body, headers).content == b"ignored: that trigger already had its task"
    assert Task.objects.count() == 1


def test_someone_without_the_projects_permissions_cannot_trigger(client, repo, standin, jira):
    issue = jira.add_issue(jira.ops, "Add a changelog")
    deliver(client, *label_delivery(jira, issue, ("rpi-auto",), by=jira.reporter))
    handle_deliveries(coordinator_for(standin))
    task = Task.objects.get()
    assert task.status == Task.Status.SKIPPED and "EDIT_ISSUES,TRANSITION_ISSUES in project OPS" in task.status_reason


def test_forged_and_unconfigured_deliveries_are_refused_and_nothing_is_recorded(client, repo, jira, monkeypatch):
    issue = jira.add_issue(jira.ops, "Add a changelog")
    body, headers = label_delivery(jira, issue, ("rpi-auto",), by=jira.dev)
    assert deliver(client, body, {**headers, "X-Hub-Signature": "sha256=" + "0" * 64}).status_code == 403
    assert deliver(client, body.replace(b"changelog", b"Changelog"), headers).status_code == 403
    monkeypatch.delenv("JIRA_WEBHOOK_SECRET")
    assert deliver(client, body, headers).status_code == 403
    assert not WebhookDelivery.objects.exists() and not Task.objects.exists()


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda p: p["issue"].update(key=["OPS-1"]), b"issue.key must be a string"),
        (lambda p: p["issue"].update(key="OPS-one"), b"not a Jira issue key"),
        (lambda p: p["changelog"].update(items={"field": "labels"}), b"changelog.items must be a list"),
        (lambda p: p["issue"]["fields"].update(labels=[1]), b"issue.fields.labels must be a list of strings"),
    ],
)
def test_a_malformed_signed_payload_is_a_400_and_nothing_is_recorded(client, repo, jira, mutate, problem):
    issue = jira.add_issue(jira.ops, "Add a changelog")
    body, headers = label_delivery(jira, issue, ("rpi-auto",), by=jira.dev)
    payload = json.loads(body)
    mutate(payload)
    bad = json.dumps(payload).encode()
    answer = deliver(client, bad, sign_headers(bad, JIRA_SECRET, headers["X-Atlassian-Webhook-Identifier"]))
    assert answer.status_code == 400 and problem in answer.content
    assert not WebhookDelivery.objects.exists() and not Task.objects.exists()


def test_assignment_to_tacx_starts_a_task_and_unassigning_before_start_cancels_it(client, repo, standin, jira):
    issue = jira.add_issue(jira.ops, "Add a changelog")
    items = jira.assign(issue, jira.me, by=jira.dev)
    deliver(client, *jira.webhook("jira:issue_updated", issue, secret=JIRA_SECRET, user=jira.dev, changelog=items))
    coordinator = coordinator_for(standin)
    handle_deliveries(coordinator)
    task = Task.objects.get()
    assert (task.status, task.trigger_source) == (Task.Status.QUEUED, "assignment")
    assert coordinator.sources["jira"].poll(repo).endswith("0 task(s) created")
    items = jira.assign(issue, None, by=jira.dev)
    deliver(client, *jira.webhook("jira:issue_updated", issue, secret=JIRA_SECRET, user=jira.dev, changelog=items))
    handle_deliveries(coordinator)
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED and "unassigned" in task.status_reason


def test_an_at_tacx_comment_starts_a_round_for_a_permitted_author_only(client, repo, standin, jira):
    issue = jira.add_issue(jira.ops, "Add a changelog")
    deliver(client, *label_delivery(jira, issue, ("rpi-auto",), by=jira.dev))
    coordinator = coordinator_for(standin)
    handle_deliveries(coordinator)
    task = Task.objects.get()
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SUCCEEDED)
    deliver(client, *jira.webhook("comment_created", issue, secret=JIRA_SECRET, user=jira.dev, comment_text="@tacx also 111"))
    deliver(
        client,
        *jira.webhook("comment_created", issue, secret=JIRA_SECRET, user=jira.reporter, comment_text="@tacx drop the tests"),
    )
    handle_deliveries(coordinator)
    rounds = {r.actor: r for r in Round.objects.filter(task=task)}
    assert rounds[jira.dev["accountId"]].text == "also 111" and rounds[jira.dev["accountId"]].status != Round.Status.REFUSED
    assert rounds[jira.reporter["accountId"]].status == Round.Status.REFUSED
    # The refusal is answered on the Jira issue, once, findable again by its marker.
    refused = rounds[jira.reporter["accountId"]]
    assert tracker_replies.reply_one() is True
    Round.objects.filter(pk=refused.pk).update(replied_at=None, reply_claimed_at="2000-01-01T00:00Z")
    assert tracker_replies.reply_one() is True  # a stale claim: the marker is found, nothing posted twice
    answers = [c for c in jira.comments["OPS-1"] if f"(tacx:round:{refused.pk})" in adf_text(c["body"])]
    assert len(answers) == 1 and "not started" in adf_text(answers[0]["body"])


def test_a_jql_trigger_is_polled_credited_to_the_latest_change_and_bad_settings_are_named(repo, standin, jira):
    ready = jira.add_issue(jira.ops, "Ready", status="In Progress", reporter=jira.reporter)
    jira.add_issue(jira.ops, "Not yet")
    jira.add_issue(jira.ops, "Reported ready", status="In Progress", reporter=jira.dev)
    jira.set_labels(ready, ("frontend",), by=jira.dev)
    repo.tracker_settings = {"project": "OPS", "jql": "project = OPS AND status = 'In Progress'"}
    events = tracker_named("jira").issues_triggered(repo)
    assert sorted((e.issue.key, e.actor.login) for e in events) == [
        ("OPS-1", jira.dev["accountId"]),
        ("OPS-3", jira.dev["accountId"]),
    ]
    assert coordinator_for(standin).sources["jira"].poll(repo).endswith("2 task(s) created")
    repo.tracker_settings = {"project": "ops"}
    with pytest.raises(TrackerError, match=r"tracker_settings.project: the Jira project key is required"):
        tracker_named("jira").issues_triggered(repo)


def test_the_api_token_may_come_from_a_file_and_a_rate_limit_makes_the_poll_wait(repo, standin, jira, monkeypatch, tmp_path):
    from coordinator.sources import SourceUnavailable

    (tmp_path / "token").write_text(jira.token + "\n")
    monkeypatch.delenv("JIRA_API_TOKEN")
    monkeypatch.setenv("JIRA_API_TOKEN_FILE", str(tmp_path / "token"))
    issue = jira.add_issue(jira.ops, "Add a changelog")
    jira.set_labels(issue, ("rpi-auto",), by=jira.dev)
    source = coordinator_for(standin).sources["jira"]
    jira.fail_next(429, {"errorMessages": ["Rate limit exceeded."]}, {"Retry-After": "9"})
    with pytest.raises(SourceUnavailable) as waiting:
        source.poll(repo)
    assert waiting.value.retry_after == 9 and not Task.objects.exists()
    assert source.poll(repo).endswith("1 task(s) created")
