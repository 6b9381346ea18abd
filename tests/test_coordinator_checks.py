"""Every stage as a check on the branch head: check runs with the GitHub App identity (queued →
in_progress → completed with the right conclusion and a summary with tokens, cost, verdict,
tests and the task link), commit statuses with a token; the optional human-approval status."""

from __future__ import annotations

import pytest
from github_standin import TOKEN, GitHubStandIn, command_workflow, github_repo, standin  # noqa: F401
from test_coordinator_e2e import issue_run
from test_github_app import APP_ID, PRIVATE_KEY, PUBLIC_KEY

from coordinator.checks import CheckSyncer, head_commit
from coordinator.models import TaskChecks
from pipeline import github_auth, services
from pipeline.github import GitHubClient
from pipeline.models import Repository, Stage, Task
from tests.conftest import git

STAGES = ["planning", "building", "reviewing", "pr_creation"]


@pytest.fixture
def app_standin(settings):
    server = GitHubStandIn(app_id=APP_ID, app_public_key=PUBLIC_KEY).start()
    server.add_repo("octo/sample", permissions={"alice": "write", "bob": "write"})
    server.add_installation(77, account="octo", repos=("octo/sample",))
    settings.GITHUB_API_URL = server.url
    settings.GITHUB_APP_ID = str(APP_ID)
    settings.GITHUB_APP_PRIVATE_KEY = PRIVATE_KEY
    settings.GITHUB_TOKEN = ""
    settings.TACX = {**settings.TACX, "POLL_INTERVAL": 0.0, "DASHBOARD_URL": "https://tacx.example"}
    github_auth.forget_shared_identities()
    yield server
    server.stop()
    github_auth.forget_shared_identities()


def app_repo(tmp_path, workflow: str) -> Repository:
    from conftest import make_origin_and_clone

    origin, _ = make_origin_and_clone(tmp_path, "sample", {"README.md": "# sample\n", ".tac/workflow.yaml": workflow})
    return Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=str(origin), default_branch="main")


@pytest.mark.django_db(transaction=True)
def test_with_the_app_identity_each_stage_is_a_check_run_on_the_branch_head(app_standin, tmp_path):
    repository = app_repo(tmp_path, command_workflow().replace("version: 1\n", f"version: 1\ntest_command: {'python3 -c pass'}\n"))
    task, _ = issue_run(app_standin, client=GitHubClient())
    assert task.status == Task.Status.SUCCEEDED, task.status_reason

    head = head_commit(task)
    assert head and head != task.base_commit
    assert git(tmp_path / "sample-origin.git", "rev-parse", task.branch) == head
    runs = {r["name"]: r for r in app_standin.checks_on("octo/sample", head)}
    assert sorted(runs) == sorted(f"TAC-X / {s}" for s in STAGES)
    assert all(r["status"] == "completed" and r["conclusion"] == "success" for r in runs.values())
    assert not app_standin.checks_on("octo/sample", task.base_commit)  # main's commit stays clean
    # One check run per stage on this head, updated in place (queued first for the later stages).
    assert len(app_standin.checks_on("octo/sample")) == 4
    assert runs["TAC-X / reviewing"]["history"][0] == ("queued", None)
    review = runs["TAC-X / reviewing"]["output"]
    assert "Verdict: **APPROVE**" in review["summary"] and f"https://tacx.example/tasks/{task.pk}/" in review["summary"]
    assert "tokens" in review["title"] and "$" in review["title"]
    assert "Tests: **passed (exit 0" in runs["TAC-X / building"]["output"]["summary"]
    assert runs["TAC-X / pr_creation"]["details_url"] == f"https://tacx.example/tasks/{task.pk}/"
    assert all(r["identity"] == "installation:77" for r in app_standin.requests_to("POST", r"/check-runs$"))
    assert not app_standin.statuses_on("octo/sample")
    assert repository.pk == task.repository_id


@pytest.mark.django_db(transaction=True)
def test_with_a_token_each_stage_is_a_commit_status_instead(github_repo, standin):  # noqa: F811
    task, _ = issue_run(standin, client=GitHubClient(base_url=standin.url, token=TOKEN))
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    head = head_commit(task)
    latest = {}
    for status in standin.statuses_on("octo/sample", head):
        latest[status["context"]] = status  # in posting order: the last one per context wins
    assert {c: s["state"] for c, s in latest.items()} == {f"TAC-X / {s}": "success" for s in STAGES}
    assert latest["TAC-X / reviewing"]["target_url"] == f"https://tacx.example/tasks/{task.pk}/"
    assert any(s["context"] == "TAC-X / pr_creation" and s["state"] == "pending" for s in standin.statuses_on("octo/sample", head))
    assert not standin.requests_to("POST", r"/check-runs$")


@pytest.mark.django_db(transaction=True)
def test_a_failed_stage_completes_with_failure_and_the_stages_after_it_are_cancelled(app_standin, tmp_path):
    app_repo(tmp_path, command_workflow(reviewing="import sys; print('no verdict here'); sys.exit(3)"))
    task, _ = issue_run(app_standin, client=GitHubClient())
    assert task.status == Task.Status.FAILED
    runs = {r["name"]: r for r in app_standin.checks_on("octo/sample", head_commit(task))}
    assert {n: r["conclusion"] for n, r in runs.items()} == {
        "TAC-X / planning": "success",
        "TAC-X / building": "success",
        "TAC-X / reviewing": "failure",
        "TAC-X / pr_creation": "cancelled",
    }
    assert "Error: ` agent exited with code 3 `" in runs["TAC-X / reviewing"]["output"]["summary"]


@pytest.mark.django_db(transaction=True)
def test_a_running_stage_is_in_progress_and_a_new_head_gets_every_stage_again(app_standin, tmp_path):
    app_repo(tmp_path, command_workflow())
    task, coordinator = issue_run(app_standin, client=GitHubClient())
    first_head = head_commit(task)
    # A later round: reviewing runs again on a new head commit.
    reviewing = Stage.objects.get(task=task, name="reviewing")
    Task.objects.filter(pk=task.pk).update(status=Task.Status.RUNNING, finished_at=None)
    Stage.objects.filter(pk=reviewing.pk).update(status=Stage.Status.RUNNING)
    latest = task.results.order_by("-id").first()
    type(latest).objects.filter(pk=latest.pk).update(head_commit="f" * 40)
    services.event_status(task, "reviewing again", stage="reviewing", stage_status="running")

    assert CheckSyncer(GitHubClient()).sync_one_check()

    runs = {r["name"]: r for r in app_standin.checks_on("octo/sample", "f" * 40)}
    assert len(runs) == 4 and runs["TAC-X / reviewing"]["status"] == "in_progress" and runs["TAC-X / reviewing"]["conclusion"] is None
    assert runs["TAC-X / planning"]["conclusion"] == "success"
    assert len(app_standin.checks_on("octo/sample", first_head)) == 4  # the old head keeps its own
    assert TaskChecks.objects.get(task=task).head_sha == "f" * 40
    assert not CheckSyncer(GitHubClient()).sync_one_check()  # nothing changed since: nothing asked


@pytest.mark.django_db(transaction=True)
def test_the_human_approval_status_waits_for_a_human_other_than_the_requester(app_standin, tmp_path, settings):
    settings.TACX = {**settings.TACX, "REQUIRE_HUMAN_APPROVAL": True}
    app_repo(tmp_path, command_workflow())
    task, coordinator = issue_run(app_standin, client=GitHubClient())
    assert task.status == Task.Status.SUCCEEDED and task.pr_number and task.triggered_by == "alice"
    head = head_commit(task)

    def approval() -> dict:
        return [s for s in app_standin.statuses_on("octo/sample", head) if s["context"] == "TAC-X / human approval"][-1]

    assert approval()["state"] == "pending" and "other than @alice" in approval()["description"]
    app_standin.add_review("octo/sample", task.pr_number, login="alice", state="APPROVED", commit_id=head)  # the requester
    app_standin.add_review("octo/sample", task.pr_number, login="helper[bot]", state="APPROVED", commit_id=head, kind="Bot")
    app_standin.add_review("octo/sample", task.pr_number, login="carol", state="APPROVED", commit_id="0" * 40)  # an older commit
    TaskChecks.objects.filter(task=task).update(approval_checked_at=None)
    coordinator.run_once()
    assert approval()["state"] == "pending"
    posted = len(app_standin.statuses_on("octo/sample", head))

    app_standin.add_review("octo/sample", task.pr_number, login="bob", state="APPROVED", commit_id=head)
    TaskChecks.objects.filter(task=task).update(approval_checked_at=None)
    coordinator.run_once()
    assert approval()["state"] == "success" and approval()["description"] == "Approved by @bob"
    assert len(app_standin.statuses_on("octo/sample", head)) == posted + 1
    assert TaskChecks.objects.get(task=task).approval == "success"
