# ruff: noqa: F811  (pytest fixtures imported from the helpers are redefined as arguments)
"""GitLab issues as a trigger source: the Issue Hook (label and assignment), verified by
X-Gitlab-Token, deduplicated by X-Gitlab-Event-UUID, with polling as the fallback; writers
(Developer or higher) only. Deliveries are GitLab's documented example payloads (fixtures),
posted to the real endpoint; the API is the GitLab stand-in on loopback."""

from __future__ import annotations

import json

import pytest
from gitlab_helpers import BOT, GITLAB_SECRET, PROJECT, gitlab, gitlab_repo, post  # noqa: F401

from coordinator.loop import Coordinator
from coordinator.models import WebhookDelivery
from coordinator.tracker_flow import TrackerSource
from pipeline.models import Repository, Task


def coordinator_pass() -> None:
    Coordinator(tick=0).run_once()


def label_delivery(gitlab, iid: int, *, actor: str = "alice", uuid: str | None = None, secret: str = GITLAB_SECRET):  # noqa: F811
    change = gitlab.label(PROJECT, iid, "tacx", actor=actor)
    payload = gitlab.issue_hook(PROJECT, iid, actor=actor, labels=change)
    return gitlab.delivery("Issue Hook", payload, secret=secret, event_uuid=uuid)


def test_a_label_delivery_creates_one_task_and_redelivery_and_poll_add_nothing(client, gitlab, gitlab_repo):  # noqa: F811
    issue = gitlab.add_issue(PROJECT, title="Greet politely", body="Say hello.")
    body, headers = label_delivery(gitlab, issue["iid"], uuid="e-1")
    response = post(client, body, headers)
    assert (response.status_code, response.content) == (202, b"accepted")
    assert post(client, body, headers).content == b"duplicate"  # GitLab sends the event again
    coordinator_pass()
    task = Task.objects.get()
    assert (task.issue_number, task.title, task.body, task.triggered_by, task.trigger_source) == (
        1,
        "Greet politely",
        "Say hello.",
        "alice",
        "webhook",
    )
    assert task.issue_url.endswith(f"/{PROJECT}/-/issues/1")
    assert WebhookDelivery.objects.get().delivery_id == "gitlab:e-1"
    # The poller sees the same label (same time as the delivery's issue): no second task.
    outcome = TrackerSource("gitlab").poll(gitlab_repo)
    assert outcome == "1 triggered issue(s), 0 task(s) created"
    # Nor once the task has finished: that label already had its task.
    Task.objects.update(status=Task.Status.SUCCEEDED)
    assert TrackerSource("gitlab").poll(gitlab_repo).endswith("0 task(s) created")
    assert Task.objects.count() == 1
    gitlab_repo.refresh_from_db()
    assert gitlab_repo.poll_succeeded_at is not None


def test_polling_alone_starts_a_missed_label_once_with_the_labeler_from_the_label_events(gitlab, gitlab_repo):  # noqa: F811
    gitlab.add_issue(PROJECT, title="Missed webhook", labels=("tacx",), labeled_by="mo")
    source = TrackerSource("gitlab")
    assert source.poll(gitlab_repo).endswith("1 task(s) created")
    assert source.poll(gitlab_repo).endswith("0 task(s) created")
    task = Task.objects.get()
    assert (task.triggered_by, task.trigger_source) == ("mo", "poll")


def test_a_forged_or_missing_token_is_refused_and_records_nothing(client, gitlab, gitlab_repo, settings):  # noqa: F811
    issue = gitlab.add_issue(PROJECT)
    body, headers = label_delivery(gitlab, issue["iid"], secret="not-the-secret")
    response = post(client, body, headers)
    assert response.status_code == 403 and b"X-Gitlab-Token" in response.content
    del headers["X-Gitlab-Token"]
    assert post(client, body, headers).status_code == 403
    settings.GITLAB_WEBHOOK_SECRET = ""
    headers["X-Gitlab-Token"] = ""
    assert post(client, body, headers).status_code == 403
    # Nothing was recorded, so handling deliveries creates nothing (the label itself is real:
    # the poller, the safety net, would still find it with the labeler's own rights).
    Coordinator(tick=0).handle_one_delivery()
    assert not WebhookDelivery.objects.exists() and not Task.objects.exists()


@pytest.mark.parametrize(("who", "role"), [("rita", "reporter (20)"), ("gus", "guest (10)"), ("stranger", "no access (0)")])
def test_a_reporter_guest_or_stranger_cannot_trigger(client, gitlab, gitlab_repo, who, role):  # noqa: F811
    issue = gitlab.add_issue(PROJECT)
    post(client, *label_delivery(gitlab, issue["iid"], actor=who))
    coordinator_pass()
    task = Task.objects.get()
    assert task.status == Task.Status.SKIPPED
    assert (
        task.status_reason == f"{who} applied the label but has {role} access to {PROJECT}; Developer (30) or higher is required"
    )
    assert not Task.objects.filter(status__in=Task.ACTIVE).exists()


def malformed(gitlab):  # noqa: F811
    issue = gitlab.add_issue(PROJECT)
    good = gitlab.issue_hook(PROJECT, issue["iid"], actor="alice", labels={"previous": [], "current": ["tacx"]})
    yield b"not json", "not JSON"
    yield b"[1, 2]", "not a JSON object"
    yield json.dumps({**good, "project": "acme"}).encode(), "project must be an object"
    yield (
        json.dumps({**good, "object_attributes": {**good["object_attributes"], "iid": "1"}}).encode(),
        "object_attributes.iid must be a whole number",
    )
    yield json.dumps({**good, "changes": {"labels": {"previous": [], "current": "tacx"}}}).encode(), "labels must be a list"
    yield (
        json.dumps({**good, "object_attributes": {**good["object_attributes"], "title": 7}}).encode(),
        "object_attributes.title must be a string",
    )


def test_malformed_payloads_get_a_400_naming_the_problem_and_create_nothing(client, gitlab, gitlab_repo):  # noqa: F811
    for body, problem in malformed(gitlab):
        _, headers = gitlab.delivery("Issue Hook", {}, secret=GITLAB_SECRET)
        response = post(client, body, headers)
        assert response.status_code == 400, (problem, response.content)
        assert problem in response.content.decode()
    body, headers = label_delivery(gitlab, 1)
    del headers["X-Gitlab-Event-UUID"]
    response = post(client, body, headers)
    assert response.status_code == 400 and b"X-Gitlab-Event-UUID" in response.content
    Coordinator(tick=0).handle_one_delivery()
    assert not WebhookDelivery.objects.exists() and not Task.objects.exists()


def test_removing_the_label_cancels_the_unfinished_task(client, gitlab, gitlab_repo):  # noqa: F811
    issue = gitlab.add_issue(PROJECT)
    post(client, *label_delivery(gitlab, issue["iid"]))
    coordinator_pass()
    change = gitlab.unlabel(PROJECT, issue["iid"], "tacx", actor="mo")
    post(
        client,
        *gitlab.delivery("Issue Hook", gitlab.issue_hook(PROJECT, issue["iid"], actor="mo", labels=change), secret=GITLAB_SECRET),
    )
    coordinator_pass()
    task = Task.objects.get()
    assert task.status == Task.Status.CANCELLED and "removed by mo" in task.status_reason


def test_assigning_the_bot_triggers_and_unassigning_before_the_start_cancels(client, gitlab, gitlab_repo, settings):  # noqa: F811
    settings.TACX = {**settings.TACX, "MAX_CONCURRENT_TASKS": 0}  # nothing starts: the task stays queued
    issue = gitlab.add_issue(PROJECT, title="Assigned work")
    change = gitlab.assign(PROJECT, issue["iid"], BOT, actor="alice")
    post(
        client,
        *gitlab.delivery(
            "Issue Hook", gitlab.issue_hook(PROJECT, issue["iid"], actor="alice", assignees=change), secret=GITLAB_SECRET
        ),
    )
    Coordinator(tick=0).handle_one_delivery()
    task = Task.objects.get()
    assert (task.trigger_source, task.triggered_by, task.status) == ("assignment", "alice", Task.Status.QUEUED)
    change = gitlab.assign(PROJECT, issue["iid"], BOT, actor="alice", unassign=True)
    post(
        client,
        *gitlab.delivery(
            "Issue Hook", gitlab.issue_hook(PROJECT, issue["iid"], actor="alice", assignees=change), secret=GITLAB_SECRET
        ),
    )
    Coordinator(tick=0).handle_one_delivery()
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED and f"unassigned from {BOT} by alice" in task.status_reason


def test_the_poller_finds_an_assignment_and_its_assigner_from_the_system_note(gitlab, gitlab_repo):  # noqa: F811
    issue = gitlab.add_issue(PROJECT, title="Assigned, webhook lost")
    gitlab.assign(PROJECT, issue["iid"], BOT, actor="mo")
    assert TrackerSource("gitlab").poll(gitlab_repo).endswith("1 task(s) created")
    task = Task.objects.get()
    assert (task.trigger_source, task.triggered_by) == ("assignment", "mo")


def test_a_github_repository_of_the_same_name_is_not_a_gitlab_trigger_target(client, gitlab, db):  # noqa: F811
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name=PROJECT, trigger_label="tacx")
    issue = gitlab.add_issue(PROJECT)
    response = post(client, *label_delivery(gitlab, issue["iid"]))
    assert response.status_code == 200 and b"not registered" in response.content


def mr_task(gitlab_repo, gitlab):  # noqa: F811
    """A finished task whose merge request is open (as after its pr_creation)."""
    from pipeline import services

    task, _ = services.task_create(repository=gitlab_repo, issue_number=1, title="Done work")
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SUCCEEDED, pr_number=1, branch="tacx/1-done-work", workflow={})
    gitlab.mrs[PROJECT][1] = {
        "id": 99,
        "iid": 1,
        "title": "Done work (#1)",
        "source_branch": "tacx/1-done-work",
        "target_branch": "main",
        "state": "opened",
        "sha": "",
    }
    task.refresh_from_db()
    return task, gitlab.mrs[PROJECT][1]


@pytest.mark.parametrize(
    ("author", "body", "action", "expected"),
    [
        ("rita", "@tacx please rename greet", "create", "refused: rita has reporter (20) access"),
        ("alice", "nice work", "create", "ignored: not addressed to TAC-X"),
        ("alice", "@tacx again <!-- tacx:round:1 -->", "create", "ignored: TAC-X's own comment"),
        ("alice", "@tacx edited text", "update", "ignored: an edited note"),
    ],
)
def test_merge_request_notes_from_non_writers_unaddressed_own_or_edited_start_no_round(
    client, gitlab, gitlab_repo, author, body, action, expected
):  # noqa: F811
    from pipeline.models import Round

    task, mr = mr_task(gitlab_repo, gitlab)
    note = gitlab.add_note(PROJECT, 1, body, author=author, mr=True)
    payload = gitlab.note_hook(PROJECT, note, mr=mr)
    payload["object_attributes"]["action"] = action
    response = post(client, *gitlab.delivery("Note Hook", payload, secret=GITLAB_SECRET))
    if action == "update":
        assert response.status_code == 200 and expected in response.content.decode()
        return
    Coordinator(tick=0).handle_one_delivery()
    delivery = WebhookDelivery.objects.get()
    assert expected in delivery.result, delivery.result
    assert not Round.objects.filter(task=task).exclude(status=Round.Status.REFUSED).exists()


def test_a_tacx_command_in_an_issue_note_is_answered_on_the_issue_once(client, gitlab, gitlab_repo):  # noqa: F811
    from coordinator import forge_replies
    from pipeline.models import Round

    gitlab.add_issue(PROJECT, title="Done work")
    task, _ = mr_task(gitlab_repo, gitlab)
    note = gitlab.add_note(PROJECT, 1, "/tacx status", author="alice")
    body, headers = gitlab.delivery("Note Hook", gitlab.note_hook(PROJECT, note), secret=GITLAB_SECRET)
    assert post(client, body, headers).status_code == 202
    assert post(client, body, headers).content == b"duplicate"
    Coordinator(tick=0).handle_one_delivery()
    round_ = Round.objects.get(task=task)
    assert (round_.kind, round_.status, round_.actor) == (Round.Kind.COMMAND, Round.Status.DONE, "alice")
    assert forge_replies.reply_one() is True
    assert forge_replies.reply_one() is False  # posted once
    (reply,) = [n for n in gitlab.notes_on(PROJECT, 1) if n["id"] != note["id"]]
    assert f"tacx:round:{round_.pk}" in reply["body"] and "succeeded" in reply["body"]
