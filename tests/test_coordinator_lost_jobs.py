"""A queued stage whose django-q2 job is lost before the claim is enqueued again.

Issue 9 (item 2): a worker killed 0.08 s after taking `stage-62` left the stage queued with no
attempt and its task running with nobody working; q2 would redeliver only after `retry` (3 h
10 min). The coordinator now re-enqueues a queued stage older than TACX_LOST_JOB_SECONDS whose
job is gone from the ORM broker (or was taken that long ago and never claimed); the stage's
claim keeps it exactly once.

Real parts: django-q2's ORM broker on the test database (its `dequeue` is what a worker does
when it takes a job), the runner's claim.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import make_origin_and_clone
from django.db.models import F
from django_q.brokers import get_broker
from django_q.models import OrmQ
from django_q.signing import SignedPackage
from github_standin import command_workflow

from coordinator.loop import Coordinator
from pipeline import attempt, services
from pipeline.models import Repository, Stage, Task

pytestmark = pytest.mark.django_db(transaction=True)


def jobs_for(stage: Stage) -> list[OrmQ]:
    return [job for job in OrmQ.objects.all() if job.name() == f"stage-{stage.pk}"]


@pytest.fixture
def planning(tmp_path) -> Stage:
    _origin, clone = make_origin_and_clone(tmp_path, "lost", {"README.md": "x\n", ".tac/workflow.yaml": command_workflow()})
    repo = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="lost", local_path=str(clone))
    task, _ = services.task_create(repository=repo, issue_number=1, title="Lost job")
    assert services.task_dispatch(task=task)  # planning queued, its job in the ORM broker
    stage = Stage.objects.get(task=task, name="planning")
    assert stage.status == Stage.Status.QUEUED and stage.queued_at is not None
    assert len(jobs_for(stage)) == 1
    return stage


def age(stage: Stage, seconds: float) -> None:
    Stage.objects.filter(pk=stage.pk).update(queued_at=stage.queued_at - timedelta(seconds=seconds))
    stage.refresh_from_db()


def test_a_stage_whose_job_was_deleted_is_enqueued_again_after_the_bound(planning, settings):
    OrmQ.objects.all().delete()
    assert services.stage_requeue_lost(older_than=60) == []  # too young: its job may be on its way
    age(planning, 61)
    assert services.stage_requeue_lost(older_than=60) == [planning.pk]
    assert len(jobs_for(planning)) == 1
    assert services.stage_requeue_lost(older_than=0) == []  # the new job is waiting: nothing to do


def test_a_job_taken_by_a_worker_that_died_before_the_claim_is_replaced(planning):
    broker = get_broker()
    taken = broker.dequeue()  # a worker takes the job ... and is killed before claiming
    assert taken and SignedPackage.loads(taken[0][1])["name"] == f"stage-{planning.pk}"
    assert broker.dequeue() is None  # q2 itself would hand it out again only after `retry`
    age(planning, 120)
    assert services.stage_requeue_lost(older_than=60) == []  # taken just now: the claim may come
    OrmQ.objects.filter(pk=taken[0][0]).update(lock=F("lock") - timedelta(seconds=61))  # taken 61 s ago
    assert services.stage_requeue_lost(older_than=60) == [planning.pk]
    (job,) = jobs_for(planning)
    assert job.pk != taken[0][0]  # the dead worker's job was dropped

    # The new job runs the stage once; a late duplicate finds nothing to claim.
    redelivered = broker.dequeue()
    assert SignedPackage.loads(redelivered[0][1])["args"] == (planning.pk,)
    assert attempt.run_stage(planning.pk, enqueue_next=False) == attempt.RunResult.SUCCEEDED
    assert attempt.run_stage(planning.pk, enqueue_next=False) == attempt.RunResult.NOT_CLAIMED
    assert Stage.objects.get(pk=planning.pk).attempts == 1


def test_a_job_waiting_for_a_busy_worker_is_left_alone(planning):
    age(planning, 3600)  # all workers busy for an hour: the job waits, it is not lost
    assert services.stage_requeue_lost(older_than=60) == []
    assert len(jobs_for(planning)) == 1


def test_stages_of_tasks_that_are_not_running_are_left_alone(planning):
    OrmQ.objects.all().delete()
    age(planning, 3600)
    Task.objects.filter(pk=planning.task_id).update(status=Task.Status.QUEUED)
    assert services.stage_requeue_lost(older_than=60) == []


def test_the_coordinator_requeues_a_lost_job_in_its_cycle(planning, settings):
    settings.TACX = {**settings.TACX, "LOST_JOB_SECONDS": 60}
    OrmQ.objects.all().delete()
    age(planning, 120)
    Coordinator(tick=0).run_once()
    assert len(jobs_for(planning)) == 1
    planning.refresh_from_db()
    assert planning.queued_at > planning.task.created_at  # re-stamped: the next look waits again


def test_stages_prefetched_by_a_dead_machine_are_run_by_another_machine_once_each(tmp_path, settings, monkeypatch):
    """Issue 10, item 2: machine A's cluster took (prefetched) the jobs of three tasks and the
    machine died; machine B's coordinator hands them out again and B's worker runs each once."""
    import socket

    from coordinator.reaping import LostJobFinder
    from pipeline.models import StageResult

    _origin, clone = make_origin_and_clone(tmp_path, "fleet", {"README.md": "x\n", ".tac/workflow.yaml": command_workflow()})
    repo = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="fleet", local_path=str(clone), max_concurrent_tasks=5)
    stages = []
    for n in range(1, 4):
        task, _ = services.task_create(repository=repo, issue_number=n, title=f"Prefetched {n}")
        assert services.task_dispatch(task=task)
        stages.append(Stage.objects.get(task=task, name="planning"))
    broker = get_broker()
    monkeypatch.setattr(socket, "gethostname", lambda: "machine-a")
    prefetched = [broker.dequeue()[0] for _ in stages]  # machine A's cluster takes all three ...
    assert broker.dequeue() is None  # ... and dies before claiming any
    OrmQ.objects.filter(pk__in=[job[0] for job in prefetched]).update(lock=F("lock") - timedelta(seconds=61))
    for stage in stages:
        age(stage, 120)
    monkeypatch.setattr(socket, "gethostname", lambda: "machine-b")
    settings.TACX = {**settings.TACX, "LOST_JOB_SECONDS": 60}
    assert LostJobFinder().requeue_lost_jobs(force=True)
    assert not LostJobFinder().requeue_lost_jobs(force=True)  # a second coordinator finds nothing
    ran = []
    while (job := broker.dequeue()) is not None:
        (stage_id,) = SignedPackage.loads(job[0][1])["args"]
        ran.append(attempt.run_stage(stage_id, enqueue_next=False))
    assert ran == [attempt.RunResult.SUCCEEDED] * 3
    for stage in stages:
        results = StageResult.objects.filter(stage=stage)
        assert [(r.attempt, r.outcome, r.worker.host) for r in results] == [(1, "succeeded", "machine-b")]
