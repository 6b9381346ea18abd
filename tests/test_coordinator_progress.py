"""The progress comment: one per task, edited in place, written only when its text changes."""

from __future__ import annotations

import pytest
from github_standin import TOKEN, github_repo, standin  # noqa: F401

from coordinator.models import ProgressComment
from coordinator.progress import CommentSyncer, progress_body
from pipeline import services
from pipeline.github import GitHubClient
from pipeline.models import Repository, Task


@pytest.fixture
def syncer(standin):  # noqa: F811
    return CommentSyncer(GitHubClient(base_url=standin.url, token=TOKEN), min_edit_seconds=0)


def sync_all(syncer: CommentSyncer) -> int:
    n = 0
    while syncer.sync_one_comment():
        n += 1
        assert n < 50
    return n


@pytest.fixture
def task(github_repo, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=1, labels=("rpi-auto",), labeled_by="alice")
    task, _ = services.task_create(repository=github_repo, issue_number=1, title="Fix it", trigger_source="poll")
    return task


def test_a_new_task_gets_one_comment_with_its_marker_and_dashboard_link(syncer, task, standin):  # noqa: F811
    sync_all(syncer)
    (comment,) = standin.comments_on("octo/sample", 1)
    assert comment["body"].startswith(f"<!-- tacx:task:{task.pk} -->")
    assert f"https://tacx.example/tasks/{task.pk}/" in comment["body"]
    assert "queued" in comment["body"]
    task.refresh_from_db()
    assert task.progress_comment_id == comment["id"]


def test_it_edits_in_place_and_only_when_the_text_changes(syncer, task, standin):  # noqa: F811
    sync_all(syncer)
    services.event_status(task, "something that changes nothing in the comment")
    sync_all(syncer)
    (comment,) = standin.comments_on("octo/sample", 1)
    assert len(comment["history"]) == 1
    assert len(standin.requests_to("PATCH", r"/issues/comments/")) == 0
    services.task_cancel(task=task, reason="label removed by alice")
    sync_all(syncer)
    (comment,) = standin.comments_on("octo/sample", 1)
    assert len(comment["history"]) == 2 and "cancelled" in comment["body"] and "label removed by alice" in comment["body"]
    assert sync_all(syncer) == 0  # nothing left to do


def test_a_comment_posted_by_a_coordinator_that_died_is_found_not_posted_twice(syncer, task, standin):  # noqa: F811
    body = progress_body(task)
    standin.create_comment("octo/sample", 1, body, {})  # posted, but the id was never recorded
    ProgressComment.objects.create(task=task, create_attempted_at=task.created_at.replace(year=2000))
    sync_all(syncer)
    assert len(standin.comments_on("octo/sample", 1)) == 1
    task.refresh_from_db()
    assert task.progress_comment_id == standin.comments_on("octo/sample", 1)[0]["id"]


def test_a_github_failure_backs_off_and_retries(syncer, task, standin):  # noqa: F811
    standin.fail_next("POST", r"/comments$", status=502, message="bad gateway")
    assert syncer.sync_one_comment()
    progress = ProgressComment.objects.get(task=task)
    assert progress.failures == 1 and progress.retry_at and "502" in progress.last_error
    assert not syncer.sync_one_comment()  # backing off
    ProgressComment.objects.update(retry_at=None, create_attempted_at=None)
    sync_all(syncer)
    assert len(standin.comments_on("octo/sample", 1)) == 1


def test_skipped_tasks_and_local_repositories_get_no_comment(syncer, github_repo, standin, tmp_path):  # noqa: F811
    standin.add_issue("octo/sample", number=2)
    services.task_skip(repository=github_repo, issue_number=2, title="x", reason="not allowed")
    local = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="local", local_path=str(tmp_path))
    services.task_create(repository=local, issue_number=3, title="local one")
    assert sync_all(syncer) == 0
    assert standin.comments_on("octo/sample", 2) == []
    assert Task.objects.count() == 2
