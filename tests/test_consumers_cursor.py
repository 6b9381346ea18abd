"""The cursor read behind the websocket and the events endpoint: in id order, and never past an
id that another transaction may still commit (PostgreSQL hands out ids before commit)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from dashboard import streams
from harness import fake_runner
from pipeline.models import AgentEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(local_repository):
    return fake_runner.task_running(repository=local_repository, issue_number=1)


def test_it_reads_after_the_cursor_in_order_with_a_limit(task):
    result = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(result, fake_runner.sample_conversation())
    all_ids = list(task.events.order_by("id").values_list("id", flat=True))
    page = streams.events_after(after=0, task_id=task.pk, limit=4)
    assert [e.pk for e in page.events] == all_ids[:4] and page.has_more
    rest = streams.events_after(after=page.last_id, task_id=task.pk, limit=100)
    assert [e.pk for e in rest.events] == all_ids[4:] and not rest.has_more


def test_an_old_hole_in_the_ids_does_not_stop_the_read(task):
    base = AgentEvent.objects.order_by("-id").first().pk
    old = timezone.now() - timedelta(minutes=5)
    AgentEvent.objects.create(id=base + 10, task=task, kind="message", data={}, created_at=old)
    page = streams.events_after(after=base, task_id=task.pk)
    assert [e.pk for e in page.events] == [base + 10] and not page.held_back


def test_a_fresh_hole_left_by_a_rolled_back_insert_is_final_when_nobody_writes(task):
    base = AgentEvent.objects.order_by("-id").first().pk
    AgentEvent.objects.create(id=base + 2, task=task, kind="message", data={})
    page = streams.events_after(after=base, task_id=task.pk)
    assert [e.pk for e in page.events] == [base + 2]
    assert streams.safe_latest_id(task_id=task.pk) == base + 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serialises writers: ids follow commit order there")
def test_it_waits_for_an_event_whose_transaction_has_not_committed_yet(local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=1)
    start = streams.latest_id()
    inserted, release = threading.Event(), threading.Event()

    def slow_writer():
        try:
            with transaction.atomic():
                AgentEvent.objects.create(task=task, kind="message", data={"text": "late"})
                inserted.set()
                release.wait(10)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert inserted.wait(10)
        fast = AgentEvent.objects.create(task=task, kind="message", data={"text": "early"})
        page = streams.events_after(after=start, task_id=task.pk)
        assert page.events == [] and page.held_back  # the earlier id is still in flight
        assert streams.safe_latest_id(task_id=task.pk) < fast.pk - 1  # a page starts below it too
    finally:
        release.set()
        writer.join()
    page = streams.events_after(after=start, task_id=task.pk)
    texts = [e.data["text"] for e in page.events]
    assert texts == ["late", "early"] and page.events[-1].pk == fast.pk


def test_the_hole_scan_reads_a_few_rows_when_the_newest_is_settled_and_goes_on_past_its_first_chunk(task):
    """Issue 23: a page load read 1,000 (id, created_at) rows to find that the newest event was
    older than the wait; the first chunk is small now, and a longer young run still ends at its
    hole."""
    from django.test.utils import CaptureQueriesContext

    base = AgentEvent.objects.order_by("-id").first().pk
    old = timezone.now() - timedelta(minutes=5)
    AgentEvent.objects.bulk_create(AgentEvent(id=base + 1 + n, task=task, kind="message", data={}, created_at=old) for n in range(40))
    with CaptureQueriesContext(connection) as queries:
        assert streams._first_fresh_hole(after=0, upto=base + 40, now=timezone.now()) is None
    (query,) = queries.captured_queries
    assert f"LIMIT {streams._FIRST_CHUNK}" in query["sql"]
    # 40 young events above the settled ones, with a hole after the 30th: more than a first chunk.
    young = [AgentEvent(id=base + 41 + n, task=task, kind="message", data={}) for n in range(41) if n != 30]
    AgentEvent.objects.bulk_create(young)
    assert streams._first_fresh_hole(after=0, upto=base + 81, now=timezone.now()) == base + 71
