"""What became of a task's pull request: the `pull_request` webhook (closed merged, closed
unmerged, reopened) and the conversation poller as its fallback record it once, agree whatever
order they come in, and a reopened pull request is open again."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from github_standin import TOKEN, github_repo, sign, standin  # noqa: F401
from rounds_helpers import coordinator_for, make_repo, task_with_pull_request  # noqa: F401

from coordinator import pull_outcomes
from coordinator.conversation_poller import poll_task, tasks_to_poll
from coordinator.deliveries import delivery_handle_one
from coordinator.models import WebhookDelivery
from pipeline import services
from pipeline.github import GitHubClient
from pipeline.models import AgentEvent, Task

REPO = "octo/sample"


def post(client, body: bytes, *, delivery: str, event: str = "pull_request"):
    return client.post(
        "/webhooks/github",
        data=body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT=event,
        HTTP_X_GITHUB_DELIVERY=delivery,
        HTTP_X_HUB_SIGNATURE_256=sign(body),
    )


def handle_all(standin) -> list[str]:  # noqa: F811
    """The coordinator's delivery step until nothing is due; the results, in order."""
    github = GitHubClient(base_url=standin.url, token=TOKEN)
    while delivery_handle_one(github, owner="test"):
        pass
    return list(WebhookDelivery.objects.order_by("id").values_list("result", flat=True))


def outcome_events(task: Task) -> list[str]:
    return [e.data["message"] for e in AgentEvent.objects.filter(task=task, data__has_key="pr_outcome").order_by("id")]


@pytest.fixture
def pr_task(github_repo, standin):  # noqa: F811
    """A finished task of octo/sample whose pull request TAC-X opened on the stand-in."""
    standin.add_issue(REPO, number=7, title="Fix the greeting", labels=("rpi-auto",), labeled_by="alice")
    status, pull, _ = standin.create_pull(REPO, {"head": "tacx/issue-7", "base": "main", "title": "Fix the greeting"})
    assert status == 201
    task = Task.objects.create(
        repository=github_repo, issue_number=7, title="Fix the greeting", status=Task.Status.SUCCEEDED, branch="tacx/issue-7",
        finished_at=timezone.now(),
    )
    services.pull_opened_record(task=task, url=pull["html_url"], number=pull["number"])
    return task


def test_a_merge_seen_by_the_webhook_is_recorded_once_and_a_redelivery_changes_nothing(client, make_repo, standin):  # noqa: F811
    make_repo()
    coordinator = coordinator_for(standin)
    task = task_with_pull_request(standin, coordinator)  # real git, real stages, pr_creation on the stand-in
    task.refresh_from_db()
    assert task.pr_outcome == Task.PullOutcome.OPEN and task.pr_outcome_at is None
    assert task.triggered_at <= task.pr_opened_at <= task.finished_at

    standin.close_pull(REPO, task.pr_number, actor="mo", merge=True)
    body = standin.webhook("pull_request.closed", REPO, sender="mo", number=task.pr_number)
    assert json.loads(body)["pull_request"]["merged"] is True
    assert post(client, body, delivery="merge-1").status_code == 202
    coordinator.run_once()
    task.refresh_from_db()
    assert (task.pr_outcome, task.pr_outcome_source) == (Task.PullOutcome.MERGED, "webhook")
    assert task.pr_outcome_at == pull_outcomes.github_time(standin.pulls[REPO][task.pr_number]["merged_at"])

    assert post(client, body, delivery="merge-1").content == b"duplicate"  # GitHub's redelivery
    assert post(client, body, delivery="merge-2").status_code == 202  # the same news, another delivery
    coordinator.run_once()
    assert WebhookDelivery.objects.get(delivery_id="merge-2").result.startswith("duplicate: pull request")
    assert outcome_events(task) == [f"pull request #{task.pr_number} was merged (seen by the webhook)"]


def test_a_close_without_merging_is_recorded_once(client, pr_task, standin):  # noqa: F811
    closed = standin.close_pull(REPO, pr_task.pr_number, actor="alice")
    body = standin.webhook("pull_request.closed", REPO, sender="alice", number=pr_task.pr_number)
    assert json.loads(body)["pull_request"]["merged"] is False
    assert post(client, body, delivery="close-1").status_code == 202
    assert post(client, body, delivery="close-1").content == b"duplicate"
    post(client, body, delivery="close-2")
    assert handle_all(standin) == [f"pull request #{pr_task.pr_number}: closed", f"duplicate: pull request #{pr_task.pr_number} is closed already (or this is older news)"]
    pr_task.refresh_from_db()
    assert pr_task.pr_outcome == Task.PullOutcome.CLOSED
    assert pr_task.pr_outcome_at == pull_outcomes.github_time(closed["closed_at"])
    # The poll that follows reads the same state: nothing more.
    assert poll_task(GitHubClient(base_url=standin.url, token=TOKEN), pr_task)[0].startswith("duplicate")
    assert outcome_events(pr_task) == [f"pull request #{pr_task.pr_number} was closed without merging (seen by the webhook)"]


def test_the_poll_finds_a_merge_the_webhook_missed_even_past_the_conversation_window(pr_task, standin):  # noqa: F811
    # Finished 20 days ago: past the 14 days in which its comments are read, within the 30 in
    # which its PR's outcome is.
    long_ago = pr_task.finished_at - timedelta(days=20)
    Task.objects.filter(pk=pr_task.pk).update(finished_at=long_ago, pr_opened_at=long_ago)
    pr_task.refresh_from_db()
    assert list(tasks_to_poll(timezone.now())) == [pr_task]
    merged = standin.close_pull(REPO, pr_task.pr_number, actor="mo", merge=True)  # no webhook
    before = len(standin.requests)
    assert poll_task(GitHubClient(base_url=standin.url, token=TOKEN), pr_task) == [f"pull request #{pr_task.pr_number}: merged"]
    assert [r["path"] for r in standin.requests[before:]] == [f"/repos/{REPO}/pulls/{pr_task.pr_number}"]  # only the PR, no comments
    pr_task.refresh_from_db()
    assert (pr_task.pr_outcome, pr_task.pr_outcome_source) == (Task.PullOutcome.MERGED, "poll")
    assert pr_task.pr_outcome_at == pull_outcomes.github_time(merged["merged_at"])
    assert list(tasks_to_poll(timezone.now())) == []  # a merge is final: no more polling
    Task.objects.filter(pk=pr_task.pk).update(pr_outcome=Task.PullOutcome.OPEN, pr_opened_at=long_ago - timedelta(days=11))
    assert list(tasks_to_poll(timezone.now())) == []  # opened more than PR_OUTCOME_POLL_DAYS ago


def test_a_reopened_pull_request_goes_back_to_open_and_a_stale_poll_does_not_undo_a_close(client, pr_task, standin):  # noqa: F811
    github = GitHubClient(base_url=standin.url, token=TOKEN)
    seen_open = github.pull_request(full_name=REPO, number=pr_task.pr_number)  # a poll reads "open"...
    standin.close_pull(REPO, pr_task.pr_number, actor="alice", at="2030-01-01T10:00:00Z")
    post(client, standin.webhook("pull_request.closed", REPO, sender="alice", number=pr_task.pr_number), delivery="close")
    handle_all(standin)
    # ... and writes after the close was recorded: older news, refused.
    assert pull_outcomes.outcome_record(pr_task, seen_open, source="poll").startswith("duplicate")
    pr_task.refresh_from_db()
    assert pr_task.pr_outcome == Task.PullOutcome.CLOSED

    standin.reopen_pull(REPO, pr_task.pr_number, actor="alice", at="2030-01-01T10:05:00Z")
    post(client, standin.webhook("pull_request.reopened", REPO, sender="alice", number=pr_task.pr_number), delivery="reopen")
    handle_all(standin)
    pr_task.refresh_from_db()
    assert pr_task.pr_outcome == Task.PullOutcome.OPEN
    assert pr_task.pr_outcome_at == pull_outcomes.github_time("2030-01-01T10:05:00Z")

    # Merged later, the webhook lost: the poll records it; the close delivered late is refused.
    standin.close_pull(REPO, pr_task.pr_number, actor="mo", merge=True, at="2030-01-01T11:00:00Z")
    assert poll_task(github, pr_task)[0] == f"pull request #{pr_task.pr_number}: merged"
    late = {"number": pr_task.pr_number, "state": "closed", "merged": False, "closed_at": "2030-01-01T10:00:00Z"}
    assert pull_outcomes.outcome_record(pr_task, late, source="webhook").startswith("duplicate")
    pr_task.refresh_from_db()
    assert pr_task.pr_outcome == Task.PullOutcome.MERGED
    assert outcome_events(pr_task) == [
        f"pull request #{pr_task.pr_number} was closed without merging (seen by the webhook)",
        f"pull request #{pr_task.pr_number} was reopened (seen by the webhook)",
        f"pull request #{pr_task.pr_number} was merged (seen by the poll)",
    ]


def test_a_new_pull_request_after_a_closed_one_starts_open_and_keeps_the_first_opening(pr_task, standin):  # noqa: F811
    first_opened, old_number = pr_task.pr_opened_at, pr_task.pr_number
    standin.close_pull(REPO, pr_task.pr_number, actor="alice")
    poll_task(GitHubClient(base_url=standin.url, token=TOKEN), pr_task)
    _, pull, _ = standin.create_pull(REPO, {"head": "tacx/issue-7", "base": "main", "title": "Fix the greeting, again"})
    services.pull_opened_record(task=pr_task, url=pull["html_url"], number=pull["number"])
    assert (pr_task.pr_number, pr_task.pr_outcome, pr_task.pr_outcome_at) == (pull["number"], Task.PullOutcome.OPEN, None)
    assert pr_task.pr_opened_at == first_opened
    # News about the old pull request no longer concerns the task.
    old = {"number": old_number, "state": "closed", "merged": True, "merged_at": "2030-01-01T10:00:00Z"}
    assert pull_outcomes.outcome_record(pr_task, old, source="webhook").startswith("duplicate")


def test_pull_request_deliveries_that_are_not_a_tasks_or_are_malformed_are_answered_with_the_reason(client, pr_task, standin):  # noqa: F811
    _, other, _ = standin.create_pull(REPO, {"head": "someone/else", "base": "main", "title": "Not ours"})
    standin.close_pull(REPO, other["number"], actor="alice")
    body = standin.webhook("pull_request.closed", REPO, sender="alice", number=other["number"])
    assert post(client, body, delivery="other").content == f"ignored: #{other['number']} is not a pull request of a TAC-X task".encode()
    payload = json.loads(body)
    for change, reason in [
        ({"merged": "yes"}, "pull_request.merged must be true or false"),
        ({"number": "12"}, "pull_request.number must be a whole number from 1 to 2147483647"),
        ({"closed_at": "2026-13-45T99:00:00Z"}, "pull_request.closed_at must be a time like 2026-12-07T20:00:00Z or null"),
        ({"state": "gone"}, "pull_request.state must be open or closed"),
    ]:
        bad = json.dumps({**payload, "pull_request": {**payload["pull_request"], **change}}).encode()
        answer = post(client, bad, delivery=f"bad-{reason[:20]}")
        assert (answer.status_code, answer.content.decode()) == (400, f"bad payload: {reason}")
    edited = json.dumps({**payload, "action": "edited"}).encode()
    assert post(client, edited, delivery="edited").content == b"ignored: pull_request.edited"
    assert not WebhookDelivery.objects.exists()
