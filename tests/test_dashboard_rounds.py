"""Talking to a task from its page (dashboard.talk → rounds.round_request): a message is a round
with the rules, limits and record of an `@tacx` comment, and for a local repository it runs for
real: the coordinator starts it, the command agents build again on the same branch with the
message in their prompt, and the branch in the user's repository gets the new commit."""

from __future__ import annotations

import re
import uuid

import pytest
from conftest import commit_workflow, git, grant
from github_standin import standin  # noqa: F401
from rounds_helpers import coordinator_for, drive, make_repo, rounds_workflow, task_with_pull_request  # noqa: F401

from coordinator.loop import Coordinator
from harness import fake_runner
from pipeline import services
from pipeline.github import GitHubClient
from pipeline.models import Round, StageResult, Task
from pipeline.workflow import Workflow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def finished(local_repository, clone):
    commit_workflow(clone, rounds_workflow(extra="max_followup_rounds: 2"))
    task, _ = services.task_submit(repository=local_repository, title="Add a changelog", trigger_source="dashboard")
    coordinator = Coordinator(client=GitHubClient(base_url="http://127.0.0.1:9", token="unused"), sources={}, tick=0)
    drive(coordinator)
    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    return coordinator, task


@pytest.fixture
def settled(local_repository):
    """A task that succeeded (its stages played by the fake runner: no agent needed here)."""
    task = fake_runner.task_running(repository=local_repository, issue_number=5, title="Add a changelog")
    Task.objects.filter(pk=task.pk).update(branch="tacx/5-add-a-changelog")
    for name in ("planning", "building", "reviewing", "pr_creation"):
        fake_runner.attempt_finish(
            fake_runner.stage_claim(task, name), output_text="ok", verdict="APPROVE" if name == "reviewing" else ""
        )
    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED
    return task


def send(client, task, text: str, token: str | None = None):
    return client.post(f"/tasks/{task.pk}/message/", {"text": text, "token": token or str(uuid.uuid4())})


def test_a_message_on_a_local_task_runs_a_round_on_its_branch_with_that_instruction(client, alice, finished, clone):
    coordinator, task = finished
    before = git(clone, "rev-parse", f"refs/heads/{task.branch}")
    client.force_login(alice)
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert 'id="message-form"' in page and "building → reviewing again" in page
    response = send(client, task, "Also note the issue number in CHANGES.md")
    assert response.status_code == 302
    (round_,) = Round.objects.filter(task=task)
    assert (round_.kind, round_.status, round_.source, round_.actor) == ("comment", "queued", "dashboard", "alice")
    assert round_.text == "Also note the issue number in CHANGES.md" and "reply_to" not in round_.context
    drive(coordinator)
    round_.refresh_from_db()
    task.refresh_from_db()
    assert round_.status == Round.Status.SUCCEEDED and task.status == Task.Status.SUCCEEDED, (round_.reason, task.status_reason)
    prompt = StageResult.objects.get(followup=round_, stage__name="building").prompt
    assert re.search(
        r'<(untrusted-[0-9a-f]{16}) request author="alice">\nAlso note the issue number in CHANGES.md\n</\1>', prompt
    )
    after = git(clone, "rev-parse", f"refs/heads/{task.branch}")
    assert after != before and git(clone, "merge-base", "--is-ancestor", before, after) == ""
    assert round_.context["changes"]["commits"]  # what the round added, as a reply would say
    html = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "comment by alice" in html and "via dashboard" in html


def test_the_same_message_twice_is_one_round_and_the_follow_up_limit_refuses_the_next(client, alice, settled):
    task = settled
    limit = Workflow.from_json(task.workflow).max_followup_rounds
    client.force_login(alice)
    token = str(uuid.uuid4())
    send(client, task, "first", token)
    send(client, task, "first", token)  # a double submit
    assert Round.objects.filter(task=task).count() == 1
    for n in range(limit):
        send(client, task, f"message {n + 2}")
    last = Round.objects.filter(task=task).order_by("id").last()
    assert last.status == Round.Status.REFUSED and "max_followup_rounds" in last.reason
    assert [r.status for r in Round.objects.filter(task=task).order_by("id")] == ["queued"] * limit + ["refused"]


def test_an_empty_message_is_refused_and_kept_and_who_may_not_retry_may_not_send(client, alice, django_user_model, settled):
    task = settled
    client.force_login(alice)
    response = send(client, task, "   ")
    assert response.status_code == 302 and not Round.objects.filter(task=task).exists()
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "Not sent: the message: This field is required. Your message is kept in the box." in page
    viewer = grant(django_user_model.objects.create_user("vic", "v@example.com", None), "view_task")
    client.force_login(viewer)
    assert 'id="message-form"' not in client.get(f"/tasks/{task.pk}/").content.decode()
    assert send(client, task, "make it pink").status_code == 403
    assert not Round.objects.filter(task=task).exists()


def test_a_refused_message_comes_back_in_the_box(client, alice, local_repository):
    task, _ = services.task_create(repository=local_repository, issue_number=3, title="Not started")
    client.force_login(alice)
    Task.objects.filter(pk=task.pk).update(status=Task.Status.CANCELLED)
    response = send(client, task, "please <b>go on</b>")
    assert response.status_code == 302
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "Not sent: the task is cancelled" in page
    assert 'id="message-form"' not in page  # a cancelled task takes no message
    Task.objects.filter(pk=task.pk).update(status=Task.Status.FAILED, branch="tacx/3-x")
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "please &lt;b&gt;go on&lt;/b&gt;</textarea>" in page


def test_a_message_on_a_github_task_is_answered_on_its_pull_request_like_a_comment(client, alice, make_repo, standin):  # noqa: F811
    make_repo()
    coordinator = coordinator_for(standin)
    task = task_with_pull_request(standin, coordinator)
    client.force_login(alice)
    send(client, task, "Mention the issue in CHANGES.md")
    (round_,) = Round.objects.filter(task=task)
    assert round_.context["reply_to"] == task.pr_number and round_.source == "dashboard"
    drive(coordinator)
    round_.refresh_from_db()
    assert round_.status == Round.Status.SUCCEEDED, round_.reason
    (reply,) = [x for x in standin.comments_on("octo/sample", task.pr_number) if f"tacx:round:{round_.pk}" in x["body"]]
    assert "comment by alice" in reply["body"] and "Changes pushed to this pull request" in reply["body"]
    assert len(standin.pulls_of("octo/sample")) == 1  # the same pull request got the commits
