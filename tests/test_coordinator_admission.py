"""Admission by stage slots (issue 10, item 8): no more tasks run than the live django-q2
workers of every machine can serve, so a started task's next stage finds a free worker before
a new task's first stage; a stopped cluster's slots stop counting once their heartbeat is old."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from test_coordinator_dispatch import drain, local_repo, queue

from coordinator.dispatch import Dispatcher
from pipeline import slots
from pipeline.models import Task, Worker


@pytest.fixture
def repo(db, tmp_path, settings):
    settings.TACX = {**settings.TACX, "MAX_CONCURRENT_TASKS": 10, "SLOT_HEARTBEAT_SECONDS": 10.0}
    return local_repo(tmp_path, "busy", max_concurrent=10)


def slot(host: str, *, age_seconds: float = 0) -> Worker:
    return Worker.objects.create(
        kind=Worker.Kind.SLOT, name=f"{host}:{Worker.objects.count()}", host=host, heartbeat_at=timezone.now() - timedelta(seconds=age_seconds)
    )


def running() -> int:
    return Task.objects.filter(status=Task.Status.RUNNING).count()


def test_no_more_tasks_run_than_the_live_clusters_have_workers(repo):
    for host in ("machine-a", "machine-b"):
        slot(host)
        slot(host)
    slot("machine-c", age_seconds=600)  # a cluster that stopped long ago
    for n in range(1, 9):
        queue(repo, n, age_minutes=10 - n)
    drain(Dispatcher())
    assert running() == 4
    # The oldest four, each with its first stage queued for one of the four workers.
    assert set(Task.objects.filter(status=Task.Status.RUNNING).values_list("issue_number", flat=True)) == {1, 2, 3, 4}


def test_a_lost_machine_takes_its_slots_out_of_admission(repo):
    a = [slot("machine-a"), slot("machine-a")]
    slot("machine-b")
    assert slots.live_slots() == 3
    Worker.objects.filter(pk__in=[w.pk for w in a]).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    assert slots.live_slots() == 1
    for n in range(1, 4):
        queue(repo, n)
    drain(Dispatcher())
    assert running() == 1


def test_without_any_reported_slot_the_task_limit_alone_applies(repo):
    for n in range(1, 5):
        queue(repo, n)
    drain(Dispatcher())
    assert running() == 4


@pytest.mark.django_db(transaction=True)
def test_a_q2_worker_process_records_its_slot_and_keeps_it_alive(settings):
    settings.TACX = {**settings.TACX, "SLOT_HEARTBEAT_SECONDS": 0.1}
    beat = slots.SlotHeartbeat("Process-1")
    try:
        first = Worker.objects.get(pk=beat.worker.pk).heartbeat_at
        deadline = timezone.now() + timedelta(seconds=30)
        while Worker.objects.get(pk=beat.worker.pk).heartbeat_at == first and timezone.now() < deadline:
            time.sleep(0.02)
        assert Worker.objects.get(pk=beat.worker.pk).heartbeat_at > first
        assert slots.live_slots() == 1
    finally:
        beat.stop()
    assert slots.live_slots() == 0


def test_a_round_counts_against_the_task_limit_and_waits_for_a_slot(repo, settings):
    """Issue 23 (item 2): a round sets its task running again, so it is admitted like a task."""
    from coordinator.dispatch import start_round
    from pipeline.models import Round

    settings.TACX = {**settings.TACX, "MAX_CONCURRENT_TASKS": 1, "ADMIT_BY_SLOTS": False}
    queue(repo, 1)
    drain(Dispatcher())
    assert running() == 1
    finished = queue(repo, 2)
    Task.objects.filter(pk=finished.pk).update(status=Task.Status.SUCCEEDED, pr_number=7, branch="tacx/2")
    round_ = Round.objects.create(task=finished, kind=Round.Kind.COMMENT, trigger_key="comment-1")
    assert start_round(round_) == "full"
    round_.refresh_from_db()
    assert round_.status == Round.Status.QUEUED and running() == 1
    Task.objects.filter(issue_number=1).update(status=Task.Status.SUCCEEDED)
    assert start_round(round_) != "full"  # the slot is free: round_start decides (here: no building stage yet)
