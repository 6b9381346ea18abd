"""What each line of agent output costs the database (issue 10, item 6): a burst is stored in a
few batches, unchanged token totals are not written again, and live notifications reuse one
channel-layer connection per process."""

from __future__ import annotations

import os

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pipeline import attempt, live, services
from pipeline.models import AgentEvent, Stage
from tests.test_runner_processes import command_stage, commit_workflow


def _planning_task(repository, clone, *args: str) -> Stage:
    commit_workflow(clone, [command_stage("planning", *args), {"name": "pr_creation"}])
    task, _ = services.task_create(repository=repository, issue_number=11, title="Burst", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return Stage.objects.get(task=task, name="planning")


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_a_thousand_lines_is_stored_in_a_bounded_number_of_statements(local_repository, clone):
    stage = _planning_task(local_repository, clone, "burst", "1000")
    with CaptureQueriesContext(connection) as queries:
        assert attempt.run_stage(stage.pk, enqueue_next=False) == attempt.RunResult.SUCCEEDED
    messages = AgentEvent.objects.filter(task=stage.task, kind=AgentEvent.Kind.MESSAGE)
    assert messages.count() == 1000
    assert sorted(messages.values_list("seq", flat=True)) == sorted(set(messages.values_list("seq", flat=True)))
    sql = [q["sql"] for q in queries.captured_queries]
    inserts = [q for q in sql if q.startswith('INSERT INTO "pipeline_agentevent"')]
    totals = [q for q in sql if q.startswith('UPDATE "pipeline_stageresult" SET "input_tokens"') and '"tests_output"' not in q]
    # A few batches (SQLite splits a batch into INSERTs of ~140 rows), not one per line; the
    # usage repeated on every line changes the totals once.
    assert len(inserts) <= 30, len(inserts)
    assert len(totals) == 1, len(totals)
    assert len(sql) <= 150, len(sql)


@pytest.mark.django_db(transaction=True)
def test_lines_arriving_steadily_are_stored_in_batches_not_one_by_one(local_repository, clone, settings):
    settings.TACX = {**settings.TACX, "EVENT_BATCH_SECONDS": 0.05, "EVENT_BATCH_BUSY_SECONDS": 0.2}
    stage = _planning_task(local_repository, clone, "burst", "200", "100")  # 200 lines over 2 s: busy
    with CaptureQueriesContext(connection) as queries:
        assert attempt.run_stage(stage.pk, enqueue_next=False) == attempt.RunResult.SUCCEEDED
    assert AgentEvent.objects.filter(task=stage.task, kind=AgentEvent.Kind.MESSAGE).count() == 200
    inserts = [q for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "pipeline_agentevent"')]
    # About one batch per 0.2 s once the stream counts as busy (after its first second, batches
    # of 0.05 s); a slow machine makes more, never one per line.
    assert len(inserts) <= 60, len(inserts)


@pytest.mark.django_db(transaction=True)
def test_live_notifications_reuse_one_redis_connection_per_process(settings):
    url = os.environ.get("TACX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"no Redis at {url}")
    settings.REDIS_URL = url
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}}
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    before = int(client.info("stats")["total_connections_received"])
    for n in range(200):
        live.notify(1, n + 1)
    live.sender().flush()
    opened = int(client.info("stats")["total_connections_received"]) - before
    live.sender().close()
    live._sender = None
    channel_layers.backends.clear()
    assert opened <= 3, opened  # was one per notification
