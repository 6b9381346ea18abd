# ruff: noqa: F811  (pytest fixtures imported from the helpers are redefined as arguments)
"""The tracker and forge seams (issue 26): GitHub as their first implementation, over the
GitHub stand-in; tasks named by a tracker key; the generic webhook route's refusals."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from github_standin import TOKEN, github_repo, standin  # noqa: F401

from coordinator.models import ProgressComment
from coordinator.tracker_progress import sync_one_tracker_comment
from pipeline import forges, pulls, services, trackers
from pipeline.models import Repository, Task


@pytest.fixture(autouse=True)
def fresh_instances():
    trackers.forget_instances()
    forges.forget_instances()
    yield
    trackers.forget_instances()
    forges.forget_instances()


def test_github_is_registered_as_tracker_and_forge(db):
    repo = Repository.objects.create(kind="github", full_name="octo/x")
    assert trackers.tracker_for(repo).kind == "github"
    assert forges.forge_for(repo).kind == "github"
    assert "check_runs" in forges.forge_for(repo).capabilities
    assert forges.forge_for(repo).clone_url(repo) == "https://github.com/octo/x.git"


def test_the_github_tracker_answers_permissions_comments_and_listing(github_repo, standin):  # noqa: F811
    tracker = trackers.tracker_for(github_repo)
    assert tracker.configured()
    assert tracker.permission(github_repo, "alice").allowed
    refused = tracker.permission(github_repo, "rita")
    assert not refused.allowed and refused.role == "read"
    number = standin.add_issue("octo/sample", title="Fix it", body="please", labels=("rpi-auto",), labeled_by="alice")["number"]
    events = tracker.issues_triggered(github_repo)
    assert [(e.issue.number, e.actor.login, e.action) for e in events] == [(number, "alice", "trigger")]
    task, _ = services.task_create(repository=github_repo, issue_number=number, title="Fix it")
    comment_id = tracker.comment_create(task=task, body="hello <!-- tacx:task:1 -->")
    tracker.comment_update(task=task, comment_id=comment_id, body="edited")
    assert [c["body"] for c in tracker.comments(task=task)] == ["edited"]
    assert [c["body"] for c in standin.comments_on("octo/sample", number)] == ["edited"]


def test_a_tracker_key_names_the_issue_and_keeps_one_active_task_per_key(db):
    repo = Repository.objects.create(
        kind="github", full_name="octo/keys", tracker_kind="linear", tracker_settings={"team": "ENG"}
    )
    eng, created = services.task_create(repository=repo, issue_number=7, title="A", tracker_issue_key="ENG-7")
    assert created and eng.issue_ref == "ENG-7"
    ops, created = services.task_create(repository=repo, issue_number=7, title="B", tracker_issue_key="OPS-7")
    assert created, "two keys with the same number are two issues"
    again, created = services.task_create(repository=repo, issue_number=7, title="A again", tracker_issue_key="ENG-7")
    assert not created and again.pk == eng.pk
    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.create(repository=repo, issue_number=8, title="dup", tracker_issue_key="ENG-7")
    # The numbered constraint is unchanged for numbered issues.
    plain = Repository.objects.create(kind="github", full_name="octo/plain")
    services.task_create(repository=plain, issue_number=3, title="one")
    assert services.task_create(repository=plain, issue_number=3, title="two")[1] is False


def test_a_pull_request_for_another_trackers_issue_names_it_instead_of_closing_a_number(db):
    repo = Repository.objects.create(kind="github", full_name="octo/linear", tracker_kind="linear")
    task, _ = services.task_create(
        repository=repo, issue_number=123, title="T", tracker_issue_key="ENG-123", issue_url="https://linear.app/x/issue/ENG-123"
    )
    assert pulls.opening_line(task) == "For Linear issue ENG-123 (https://linear.app/x/issue/ENG-123)."
    assert pulls.pull_request_title(task) == "T (ENG-123)"
    same, _ = services.task_create(
        repository=Repository.objects.create(kind="github", full_name="octo/gh"), issue_number=5, title="T"
    )
    assert pulls.opening_line(same) == "Closes #5"


def test_the_generic_webhook_route_refuses_unknown_and_github_kinds(client, db):
    assert client.post("/webhooks/nosuch", data=b"{}", content_type="application/json").status_code == 404
    # GitHub has its own route (with its own checks); the generic one does not take it.
    assert client.post("/webhooks/github-x", data=b"{}", content_type="application/json").status_code == 404


def test_progress_comments_on_other_trackers_are_left_to_them(github_repo, standin):  # noqa: F811
    """A GitHub-tracked task is never synced by the tracker syncer (GitHub has its own)."""
    number = standin.add_issue("octo/sample", title="x", labels=("rpi-auto",), labeled_by="alice")["number"]
    services.task_create(repository=github_repo, issue_number=number, title="x")
    assert sync_one_tracker_comment() is False
    assert not ProgressComment.objects.exists()
