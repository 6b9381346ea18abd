"""Event retention (issue 10, item 9): off by default; when set, the transcripts of tasks
finished longer ago are deleted in batches, status events and attempts stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from coordinator.loop import Coordinator
from pipeline import services
from pipeline.models import AgentEvent, Repository, Task


@pytest.fixture
def tasks(db):
    repo = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="r", local_path="/nonexistent")
    old, recent, active = (Task.objects.create(repository=repo, issue_number=n, title=f"t{n}") for n in (1, 2, 3))
    Task.objects.filter(pk=old.pk).update(status=Task.Status.SUCCEEDED, finished_at=timezone.now() - timedelta(days=40))
    Task.objects.filter(pk=recent.pk).update(status=Task.Status.FAILED, finished_at=timezone.now() - timedelta(days=2))
    Task.objects.filter(pk=active.pk).update(status=Task.Status.RUNNING)
    for task in (old, recent, active):
        AgentEvent.objects.bulk_create(AgentEvent(task=task, kind=AgentEvent.Kind.MESSAGE, data={"text": "x"}) for _ in range(7))
        AgentEvent.objects.create(task=task, kind=AgentEvent.Kind.STATUS, data={"message": "task started"})
    return old, recent, active


def counts(*tasks: Task) -> list[int]:
    return [AgentEvent.objects.filter(task=t).count() for t in tasks]


def test_events_are_kept_by_default(tasks, settings):
    assert not Coordinator(host="h", sources={}).prune_old_events()
    assert counts(*tasks) == [8, 8, 8]


def test_transcripts_of_tasks_finished_before_the_retention_are_deleted_in_batches(tasks, settings):
    settings.TACX = {**settings.TACX, "EVENT_RETENTION_DAYS": 30}
    assert services.events_prune(older_than_days=30, limit=5) == 5
    coordinator = Coordinator(host="h", sources={})
    assert coordinator.prune_old_events()
    assert not coordinator.prune_old_events()
    old, recent, active = tasks
    assert counts(old, recent, active) == [1, 8, 8]
    assert AgentEvent.objects.get(task=old).kind == AgentEvent.Kind.STATUS


@pytest.mark.django_db(transaction=True)
def test_the_newest_status_event_of_a_task_is_found_by_index(settings):
    """The progress-comment query (coordinator.progress) reads one row of the index on
    (task, kind, id), however long the transcript."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the query plan is PostgreSQL's")
    repo = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="r", local_path="/nonexistent")
    tasks = [Task.objects.create(repository=repo, issue_number=n, title=f"t{n}") for n in range(1, 21)]
    for task in tasks:
        AgentEvent.objects.bulk_create(AgentEvent(task=task, kind=AgentEvent.Kind.MESSAGE, data={}) for _ in range(1000))
        AgentEvent.objects.create(task=task, kind=AgentEvent.Kind.STATUS, data={})
    with connection.cursor() as cur:
        cur.execute("ANALYZE pipeline_agentevent")
    query = AgentEvent.objects.filter(task=tasks[3], kind=AgentEvent.Kind.STATUS).order_by("-id").values("id")[:1]
    assert "event_task_kind_id" in query.explain()
