"""Assigning an issue to TAC-X's login (TACX_GITHUB_LOGIN) starts a task, like the label.

The payloads are GitHub's documented `issues` event with action `assigned` / `unassigned`:
the octokit `issues.labeled` example (Codertocat/Hello-World) with `label` replaced by the
`assignee` user object and the issue's `assignee`/`assignees` set, signed byte for byte and
posted to the real webhook endpoint.
"""

from __future__ import annotations

import json

import pytest
from github_standin import TOKEN, fixture_bytes, github_repo, standin  # noqa: F401
from test_webhooks import coordinator_pass, deliver, hello_world  # noqa: F401

from coordinator.github_source import GitHubSource
from coordinator.models import WebhookDelivery
from pipeline import services
from pipeline.github import GitHubClient
from pipeline.models import AgentEvent, Task

TACX_LOGIN = "tacx-bot"


@pytest.fixture(autouse=True)
def own_login(settings):
    settings.TACX = {**settings.TACX, "GITHUB_LOGIN": TACX_LOGIN}


def user(login: str) -> dict:
    sender = json.loads(fixture_bytes("issues.labeled"))["sender"]
    return {**sender, "login": login, "id": 424242, "url": f"https://api.github.com/users/{login}", "html_url": f"https://github.com/{login}"}


def assignment(action: str = "assigned", *, assignee: str = TACX_LOGIN, sender: str = "Codertocat") -> bytes:
    payload = json.loads(fixture_bytes("issues.labeled"))
    payload.pop("label")
    payload["action"] = action
    payload["assignee"] = user(assignee)
    payload["sender"] = user(sender) if sender != "Codertocat" else payload["sender"]
    payload["issue"]["assignee"] = user(assignee) if action == "assigned" else None
    payload["issue"]["assignees"] = [user(assignee)] if action == "assigned" else []
    payload["issue"]["labels"] = []  # not labelled: the assignment alone triggers
    return json.dumps(payload).encode()


def test_assigning_the_issue_to_tacx_creates_one_task(client, hello_world):  # noqa: F811
    response = deliver(client, "issues", assignment(), delivery="a-1")
    assert (response.status_code, response.content) == (202, b"accepted")
    coordinator_pass()
    task = Task.objects.get()
    assert (task.issue_number, task.trigger_source, task.triggered_by) == (1, "assignment", "Codertocat")
    assert task.status == Task.Status.RUNNING
    assert WebhookDelivery.objects.get().task == task


def test_assigning_someone_else_or_without_a_configured_login_is_ignored(client, hello_world, settings):  # noqa: F811
    response = deliver(client, "issues", assignment(assignee="octocat"), delivery="a-1")
    assert response.status_code == 200 and response.content.startswith(b"ignored")
    settings.TACX = {**settings.TACX, "GITHUB_LOGIN": ""}
    response = deliver(client, "issues", assignment(), delivery="a-2")
    assert response.status_code == 200 and b"TACX_GITHUB_LOGIN" in response.content
    coordinator_pass()
    assert Task.objects.count() == 0 and WebhookDelivery.objects.count() == 0


def test_the_login_is_compared_like_github_case_insensitively(client, hello_world):  # noqa: F811
    deliver(client, "issues", assignment(assignee="TACX-Bot"), delivery="a-1")
    coordinator_pass()
    assert Task.objects.get().trigger_source == "assignment"


def test_a_readers_assignment_starts_nothing(client, hello_world, standin):  # noqa: F811
    deliver(client, "issues", assignment(sender="reader"), delivery="a-1")
    coordinator_pass()
    task = Task.objects.get()
    assert task.status == Task.Status.SKIPPED
    assert "reader assigned the issue to tacx-bot but has read access" in task.status_reason
    assert not Task.objects.filter(status__in=Task.ACTIVE).exists()
    assert standin.requests_to("GET", r"/collaborators/reader/permission")


def test_label_and_assignment_and_a_redelivery_make_one_task(client, hello_world):  # noqa: F811
    assert deliver(client, "issues", fixture_bytes("issues.labeled"), delivery="l-1").status_code == 202
    assert deliver(client, "issues", assignment(), delivery="a-1").status_code == 202
    assert deliver(client, "issues", assignment(), delivery="a-1").content == b"duplicate"
    coordinator_pass()
    assert deliver(client, "issues", assignment(), delivery="a-1").content == b"duplicate"
    assert deliver(client, "issues", assignment(), delivery="a-2").status_code == 202  # assigned again
    coordinator_pass()
    task = Task.objects.get()
    assert task.trigger_source == "webhook"  # the label came first
    results = dict(WebhookDelivery.objects.values_list("delivery_id", "result"))
    assert results["a-1"] == f"task {task.pk} is already queued"  # same pass, before dispatch
    assert results["a-2"] == f"task {task.pk} is already running"


def test_unassigning_before_the_task_started_cancels_it(client, hello_world):  # noqa: F811
    deliver(client, "issues", assignment(), delivery="a-1")
    deliver(client, "issues", assignment("unassigned"), delivery="u-1")
    coordinator_pass()  # both handled in order, before the dispatcher starts the task
    task = Task.objects.get()
    assert task.status == Task.Status.CANCELLED
    assert "unassigned from tacx-bot by Codertocat before the task started" in task.status_reason
    assert WebhookDelivery.objects.get(delivery_id="u-1").result == f"task {task.pk} cancelled"


def test_unassigning_after_the_task_started_changes_nothing_but_says_so(client, hello_world):  # noqa: F811
    deliver(client, "issues", assignment(), delivery="a-1")
    coordinator_pass()
    task = Task.objects.get()
    assert task.status == Task.Status.RUNNING
    deliver(client, "issues", assignment("unassigned"), delivery="u-1")
    coordinator_pass()
    task.refresh_from_db()
    assert task.status == Task.Status.RUNNING
    said = [e.data["message"] for e in AgentEvent.objects.filter(task=task, kind=AgentEvent.Kind.STATUS)]
    assert any("unassigned from tacx-bot by Codertocat" in m and "it goes on" in m for m in said)
    assert "already started (running)" in WebhookDelivery.objects.get(delivery_id="u-1").result


def test_unassigning_does_not_cancel_a_task_the_label_started(client, hello_world):  # noqa: F811
    deliver(client, "issues", fixture_bytes("issues.labeled"), delivery="l-1")
    deliver(client, "issues", assignment("unassigned"), delivery="u-1")
    coordinator_pass()
    assert Task.objects.get().status == Task.Status.RUNNING


def test_removing_the_label_leaves_a_task_the_assignment_started_but_closing_cancels_it(client, hello_world):  # noqa: F811
    deliver(client, "issues", assignment(), delivery="a-1")
    deliver(client, "issues", fixture_bytes("issues.unlabeled"), delivery="u-1")
    coordinator_pass()
    task = Task.objects.get()
    assert task.status == Task.Status.RUNNING
    assert "started by an assignment" in WebhookDelivery.objects.get(delivery_id="u-1").result
    payload = json.loads(fixture_bytes("issues.reopened"))
    payload["action"], payload["issue"]["state"] = "closed", "closed"
    deliver(client, "issues", json.dumps(payload).encode(), delivery="c-1")
    coordinator_pass()
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED


def test_a_garbled_assignee_is_a_400(client, hello_world):  # noqa: F811
    payload = json.loads(assignment())
    payload["assignee"] = "tacx-bot"
    response = deliver(client, "issues", json.dumps(payload).encode(), delivery="bad")
    assert response.status_code == 400 and b"assignee must be an object" in response.content


# --- the poller: an open issue assigned to the login is treated like a labelled one ----------


@pytest.fixture
def source(standin):  # noqa: F811
    return GitHubSource(GitHubClient(base_url=standin.url, token=TOKEN), reconcile_grace=0)


def poll(source: GitHubSource, repository) -> str:
    repository.refresh_from_db()
    return source.poll(repository)


def test_the_poller_starts_a_task_for_an_issue_assigned_to_tacx(source, github_repo, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=4, title="Assigned", author="rita")
    standin.add_issue("octo/sample", number=5, title="Someone else's", author="rita")
    standin.assign("octo/sample", 4, TACX_LOGIN, actor="alice")
    standin.assign("octo/sample", 5, "octocat", actor="alice")
    assert "1 assigned issue(s), 1 task(s) created" in poll(source, github_repo)
    task = Task.objects.get()
    assert (task.issue_number, task.status, task.trigger_source, task.triggered_by) == (4, Task.Status.QUEUED, "assignment", "alice")
    # Unchanged: answered 304, no second task; and the label reconcile leaves it alone.
    assert poll(source, github_repo).endswith("assigned: not modified")
    assert standin.requests[-1]["status"] == 304
    task.refresh_from_db()
    assert task.status == Task.Status.QUEUED and Task.objects.count() == 1


def test_the_poller_refuses_a_readers_assignment(source, github_repo, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=4, author="alice")
    standin.assign("octo/sample", 4, TACX_LOGIN, actor="rita")
    poll(source, github_repo)
    task = Task.objects.get()
    assert task.status == Task.Status.SKIPPED and "rita assigned the issue to tacx-bot but has read access" in task.status_reason


def test_label_assignment_and_repeated_polls_make_one_task(source, github_repo, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=4, labels=("rpi-auto",), labeled_by="alice")
    standin.assign("octo/sample", 4, TACX_LOGIN, actor="alice")
    poll(source, github_repo)
    poll(source, github_repo)
    fresh = GitHubSource(GitHubClient(base_url=standin.url, token=TOKEN), reconcile_grace=0)
    poll(fresh, github_repo)  # another coordinator (no memory of what it saw)
    task = Task.objects.get()
    assert task.trigger_source == "poll"  # the label listing is looked at first
    services.task_fail(task=task, reason="test")
    Task.objects.filter(pk=task.pk).update(triggered_at=task.triggered_at.replace(year=2000))
    standin.unlabel("octo/sample", 4, "rpi-auto", actor="alice")
    standin.unassign("octo/sample", 4, TACX_LOGIN, actor="alice")
    standin.assign("octo/sample", 4, TACX_LOGIN, actor="alice")  # assigned again later: a new trigger
    standin.issues["octo/sample"][4]["updated_at"] = "2999-01-01T00:00:00Z"  # GitHub's times are whole seconds
    poll(fresh, github_repo)
    poll(source, github_repo)
    assert Task.objects.filter(status__in=Task.ACTIVE).get().trigger_source == "assignment"
    assert Task.objects.count() == 2


def test_without_a_login_the_poller_asks_nothing_about_assignees(source, github_repo, standin, settings):  # noqa: F811
    settings.TACX = {**settings.TACX, "GITHUB_LOGIN": ""}
    standin.add_issue("octo/sample", number=4, author="alice")
    standin.assign("octo/sample", 4, TACX_LOGIN, actor="alice")
    poll(source, github_repo)
    assert Task.objects.count() == 0
    assert not standin.requests_to("GET", r"/issues\?.*assignee")
