"""A failing check on the pull request's head starts a CI-fix round with the failing checks'
names and log tails; failing again on the new head starts another, until
`max_ci_fix_attempts`, then the task says so and stops."""

from __future__ import annotations

import re

import pytest
from github_standin import standin  # noqa: F401
from rounds_helpers import branch_head, coordinator_for, drive, make_repo, post, task_with_pull_request  # noqa: F401

from pipeline.models import Round, StageResult, Task

LOG = "\n".join(f"2026-11-30T07:00:{i:02d}Z line {i}" for i in range(100)) + "\nFAILED tests/test_greeter.py::test_greet - AssertionError: 'Hello Ada' != 'Hello, Ada'\n"


@pytest.fixture
def pr(make_repo, standin):  # noqa: F811
    repo = make_repo(extra="max_ci_fix_attempts: 2")
    coordinator = coordinator_for(standin)
    return repo, coordinator, task_with_pull_request(standin, coordinator)


def fail_check(client, standin, sha: str, *, name: str = "tests", delivery: str):  # noqa: F811
    run = standin.add_check_run("octo/sample", sha, name=name, conclusion="failure", log=LOG)
    body = standin.webhook("check_run.completed", "octo/sample", sender="github-actions[bot]", check_run=run)
    assert post(client, "check_run", body, delivery=delivery).status_code == 202
    return run


def test_failing_checks_start_ci_fix_rounds_until_max_ci_fix_attempts(client, pr, standin):  # noqa: F811
    repo, coordinator, task = pr
    first_head = branch_head(repo.clone_url, task.branch)
    fail_check(client, standin, first_head, delivery="ck-1")
    standin.add_check_run("octo/sample", first_head, name="lint", conclusion="success")
    drive(coordinator)

    (first,) = Round.objects.filter(task=task)
    assert first.kind == Round.Kind.CI_FIX and first.status == Round.Status.SUCCEEDED and first.head_sha == first_head
    assert first.started_by() == f"tests failed on {first_head[:7]}"
    prompt = StageResult.objects.get(followup=first, stage__name="building").prompt
    assert re.search(r'<untrusted-[0-9a-f]{16} failing_check name="tests" conclusion="failure">', prompt)
    assert "AssertionError: 'Hello Ada' != 'Hello, Ada'" in prompt and "line 99" in prompt
    assert "line 10\n" not in prompt  # only the tail of the log
    assert "lint" not in prompt
    second_head = branch_head(repo.clone_url, task.branch)
    assert second_head != first_head

    # The same failure delivered again, or on the old head: nothing new.
    fail_check(client, standin, first_head, delivery="ck-1b")
    drive(coordinator)
    assert Round.objects.filter(task=task).count() == 1

    fail_check(client, standin, second_head, delivery="ck-2")
    drive(coordinator)
    second = Round.objects.filter(task=task).order_by("id").last()
    assert second.head_sha == second_head and second.status == Round.Status.SUCCEEDED
    third_head = branch_head(repo.clone_url, task.branch)

    fail_check(client, standin, third_head, delivery="ck-3")
    drive(coordinator)
    third = Round.objects.filter(task=task).order_by("id").last()
    assert third.status == Round.Status.REFUSED
    assert "checks still fail after 2 CI-fix attempt(s) (max_ci_fix_attempts 2)" in third.reason
    assert branch_head(repo.clone_url, task.branch) == third_head
    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED and "max_ci_fix_attempts" in task.status_reason
    replies = [c["body"] for c in standin.comments_on("octo/sample", task.pr_number)]
    assert any("not started: checks still fail after 2" in body for body in replies)
    assert len(standin.pulls_of("octo/sample")) == 1


def test_the_poller_finds_a_failing_check_without_webhooks(client, pr, standin):  # noqa: F811
    repo, coordinator, task = pr
    head = branch_head(repo.clone_url, task.branch)
    standin.add_check_run("octo/sample", head, name="build", conclusion="timed_out", log="compiling...\nerror: the job ran out of time\n")
    coordinator.conversations._last.clear()
    drive(coordinator)
    (round_,) = Round.objects.filter(task=task)
    assert round_.source == "poll" and round_.kind == Round.Kind.CI_FIX
    prompt = StageResult.objects.get(followup=round_, stage__name="building").prompt
    assert "error: the job ran out of time" in prompt


def test_a_check_on_a_commit_that_is_not_the_head_any_more_is_ignored(client, pr, standin):  # noqa: F811
    repo, coordinator, task = pr
    run = standin.add_check_run("octo/sample", "ab" * 20, name="tests", conclusion="failure")
    body = standin.webhook("check_run.completed", "octo/sample", sender="github-actions[bot]", check_run={**run, "check_suite": {"id": 1, "head_branch": task.branch, "head_sha": "ab" * 20}})
    post(client, "check_run", body, delivery="stale")
    drive(coordinator)
    assert not Round.objects.exists()
    from coordinator.models import WebhookDelivery

    assert WebhookDelivery.objects.get(delivery_id="stale").result.startswith("ignored: abababa is no longer the head of the pull request")


def test_tacx_own_stage_checks_never_start_a_ci_fix_round(client, pr, standin):  # noqa: F811
    repo, coordinator, task = pr
    head = branch_head(repo.clone_url, task.branch)
    run = standin.add_check_run("octo/sample", head, name="TAC-X / reviewing", conclusion="failure", app="tac-x")
    body = standin.webhook("check_run.completed", "octo/sample", sender="tac-x[bot]", check_run=run)
    assert post(client, "check_run", body, delivery="own").content == b"ignored: TAC-X's own activity"
    coordinator.conversations._last.clear()
    drive(coordinator)  # the poller sees it too
    assert not Round.objects.exists()


def test_a_person_s_round_resets_the_ci_fix_count(client, pr, standin):  # noqa: F811
    repo, coordinator, task = pr
    for i in range(2):
        fail_check(client, standin, branch_head(repo.clone_url, task.branch), delivery=f"ck-{i}")
        drive(coordinator)
    c = standin.add_comment("octo/sample", task.pr_number, "@tacx also add a docstring", author="alice")
    from rounds_helpers import deliver

    deliver(client, standin, "issue_comment.created", delivery="person", sender="alice", number=task.pr_number, comment_id=c["id"])
    drive(coordinator)
    fail_check(client, standin, branch_head(repo.clone_url, task.branch), delivery="ck-after")
    drive(coordinator)
    kinds = list(Round.objects.filter(task=task).order_by("id").values_list("kind", "status"))
    assert kinds == [("ci_fix", "succeeded"), ("ci_fix", "succeeded"), ("comment", "succeeded"), ("ci_fix", "succeeded")]


def other_event(standin, kind: str, **fields) -> bytes:  # noqa: F811
    """A delivery of `kind` (check_suite, workflow_run, status) shaped as GitHub documents it."""
    import json

    base = json.loads(standin.webhook("check_run.completed", "octo/sample", sender="github-actions[bot]", check_run={"name": "x", "head_sha": "0" * 40, "check_suite": {}}))
    return json.dumps({"repository": base["repository"], "sender": base["sender"], **fields}).encode()


def add_status(standin, sha: str, *, context: str, state: str, description: str) -> None:  # noqa: F811
    import requests
    from github_standin import TOKEN

    answer = requests.post(
        f"{standin.url}/repos/octo/sample/statuses/{sha}",
        json={"state": state, "context": context, "description": description, "target_url": "https://ci.example/build/7"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("event", ["workflow_run", "check_suite"])
def test_a_failing_workflow_run_or_check_suite_starts_a_ci_fix_round(client, pr, standin, event):  # noqa: F811
    repo, coordinator, task = pr
    head = branch_head(repo.clone_url, task.branch)
    standin.add_check_run("octo/sample", head, name="unit tests", conclusion="failure", log=LOG)
    item = {"id": 991, "name": "CI", "conclusion": "failure", "status": "completed", "head_sha": head, "head_branch": task.branch, "pull_requests": [{"number": task.pr_number}]}
    body = other_event(standin, event, action="completed", **{event: item})
    assert post(client, event, body, delivery=f"{event}-1").status_code == 202
    drive(coordinator)
    (round_,) = Round.objects.filter(task=task)
    assert round_.kind == Round.Kind.CI_FIX and round_.head_sha == head and round_.source == "webhook"
    prompt = StageResult.objects.get(followup=round_, stage__name="building").prompt
    assert re.search(r'<untrusted-[0-9a-f]{16} failing_check name="unit tests" conclusion="failure">', prompt) and "line 99" in prompt
    # A successful run of the same kind starts nothing.
    ok = other_event(standin, event, action="completed", **{event: {**item, "conclusion": "success"}})
    post(client, event, ok, delivery=f"{event}-2")
    drive(coordinator)
    assert Round.objects.filter(task=task).count() == 1


def test_a_failing_commit_status_starts_a_round_from_the_webhook_and_from_the_combined_status_poll(client, pr, standin):  # noqa: F811
    repo, coordinator, task = pr
    head = branch_head(repo.clone_url, task.branch)
    add_status(standin, head, context="ci/jenkins", state="failure", description="3 tests failed in test_greeter.py")
    body = other_event(standin, "status", sha=head, state="failure", context="ci/jenkins", description="3 tests failed in test_greeter.py", branches=[{"name": task.branch}])
    assert post(client, "status", body, delivery="st-1").status_code == 202
    drive(coordinator)
    (first,) = Round.objects.filter(task=task)
    assert first.kind == Round.Kind.CI_FIX and first.source == "webhook" and first.head_sha == head
    prompt = StageResult.objects.get(followup=first, stage__name="building").prompt
    assert 'name="ci/jenkins"' in prompt and "3 tests failed in test_greeter.py" in prompt

    # No webhook at all for the new head: the poller's combined-status read finds the failure.
    new_head = branch_head(repo.clone_url, task.branch)
    assert new_head != head
    add_status(standin, new_head, context="ci/jenkins", state="error", description="the build machine crashed")
    coordinator.conversations._last.clear()
    drive(coordinator)
    second = Round.objects.filter(task=task).order_by("id").last()
    assert second.pk != first.pk and second.source == "poll" and second.head_sha == new_head
    assert "the build machine crashed" in StageResult.objects.get(followup=second, stage__name="building").prompt
