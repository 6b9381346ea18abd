"""Two coordinators at once against the same repository: one task per issue, limits kept.

Threads with their own database connections (transactional tests), started together by a
barrier, against the same stand-in. Run on PostgreSQL too (DATABASE_URL).
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from github_standin import TOKEN, github_repo, standin  # noqa: F401

from coordinator.github_source import GitHubSource
from coordinator.loop import Coordinator
from pipeline.github import GitHubClient
from pipeline.models import Repository, Task

ISSUES = range(1, 9)


def together(*targets) -> list[BaseException]:
    """Run the callables in threads released at the same moment; returns their exceptions."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def wrap(target):
        try:
            barrier.wait(timeout=10)
            target()
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=wrap, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def one_task_per_issue() -> None:
    for number in ISSUES:
        assert Task.objects.filter(issue_number=number).count() == 1, number
    assert not Task.objects.filter(status=Task.Status.SKIPPED).exists()


@pytest.mark.django_db(transaction=True)
def test_two_pollers_seeing_the_same_issues_at_once_create_one_task_per_issue(github_repo, standin):  # noqa: F811
    for number in ISSUES:
        standin.add_issue("octo/sample", number=number, labels=("rpi-auto",), labeled_by="alice")

    def poller():
        source = GitHubSource(GitHubClient(base_url=standin.url, token=TOKEN))
        source.poll(Repository.objects.get(pk=github_repo.pk))

    assert together(poller, poller, poller) == []
    one_task_per_issue()


@pytest.mark.django_db(transaction=True)
def test_two_coordinators_running_at_once_create_one_task_per_issue_and_keep_the_limit(github_repo, standin, settings):  # noqa: F811
    settings.TACX = {**settings.TACX, "MAX_CONCURRENT_TASKS": 3}
    Repository.objects.filter(pk=github_repo.pk).update(max_concurrent_tasks=10)
    for number in ISSUES:
        standin.add_issue("octo/sample", number=number, labels=("rpi-auto",), labeled_by="alice")

    def coordinator():
        c = Coordinator(client=GitHubClient(base_url=standin.url, token=TOKEN), tick=0)
        for _ in range(3):
            c.run_once()

    assert together(coordinator, coordinator) == []
    one_task_per_issue()
    assert Task.objects.filter(status=Task.Status.RUNNING).count() == 3
    assert Task.objects.filter(status=Task.Status.QUEUED).count() == len(ISSUES) - 3


@pytest.mark.django_db(transaction=True)
def test_a_webhook_and_the_poller_racing_for_one_issue_make_one_task(github_repo, standin):  # noqa: F811
    from datetime import UTC, datetime

    from coordinator.triggers import IssueTrigger, trigger_handle

    standin.add_issue("octo/sample", number=1, labels=("rpi-auto",), labeled_by="alice")

    def webhook():
        trigger = IssueTrigger(
            repository=Repository.objects.get(pk=github_repo.pk),
            number=1,
            title="An issue",
            body="",
            url="",
            labeler="alice",
            labeler_type="User",
            source="webhook",
            triggered_at=datetime.now(UTC),
        )
        trigger_handle(GitHubClient(base_url=standin.url, token=TOKEN), trigger)

    def poller():
        GitHubSource(GitHubClient(base_url=standin.url, token=TOKEN)).poll(Repository.objects.get(pk=github_repo.pk))

    assert together(webhook, poller, webhook, poller) == []
    assert Task.objects.filter(issue_number=1).count() == 1
