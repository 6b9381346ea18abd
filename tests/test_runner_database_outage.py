"""A database outage under a running stage (issue 10, item 5): the agent keeps running, its
events wait in memory and are stored once the database is back, the lease is renewed again,
and the attempt ends as it would have without the outage. PostgreSQL only: the outage is real
(the test database refuses new connections and every connection but the test's own is
terminated, as in a restart)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from pipeline import attempt, services
from pipeline.models import AgentEvent, Stage, StageResult, Task
from tests.conftest import wait_for
from tests.test_runner_processes import command_stage, commit_workflow

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="a real PostgreSQL outage")


class Outage:
    """Make the test database refuse connections and drop the ones it has (but ours)."""

    def __init__(self):
        import psycopg2

        params = connection.get_connection_params()
        self.name = connection.settings_dict["NAME"]
        self.admin = psycopg2.connect(**{**params, "dbname": "postgres"})
        self.admin.autocommit = True
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            self.keep = cur.fetchone()[0]

    def begin(self) -> None:
        with self.admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false')
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> %s", [self.name, self.keep]
            )

    def end(self) -> None:
        with self.admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("agent_ends", ["after the outage", "during the outage"])
def test_a_running_stage_keeps_its_agent_and_its_events_through_a_database_outage(local_repository, origin_and_clone, settings, caplog, agent_ends):
    settings.TACX = {**settings.TACX, "DB_OUTAGE_SECONDS": 120.0, "LEASE_SECONDS": 300}
    clone = origin_and_clone[1]
    commit_workflow(clone, [command_stage("planning", "pause", "before", "during"), {"name": "pr_creation"}])
    task, _ = services.task_create(repository=local_repository, issue_number=12, title="Outage", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    stage = Stage.objects.get(task=task, name="planning")
    outcome: list = []

    def work() -> None:
        try:
            outcome.append(attempt.run_stage(stage.pk, enqueue_next=False))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)
        finally:
            connection.close()

    outage = Outage()
    thread = threading.Thread(target=work)
    thread.start()
    try:
        wait_for(lambda: Task.objects.get(pk=task.pk).worktree_path, "the worktree")
        tree = Path(Task.objects.get(pk=task.pk).worktree_path)
        messages = AgentEvent.objects.filter(task=task, kind=AgentEvent.Kind.MESSAGE)
        wait_for(lambda: (tree / "before.ready").exists() and messages.count() == 5, "the first lines")
        outage.begin()
        (tree / "before.go").touch()  # five more lines while the database is away
        wait_for(lambda: (tree / "during.ready").exists(), "the agent's lines during the outage")
        # The runner tries to store them (and to renew its lease) and cannot.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("database unavailable" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)
        time.sleep(1.5)
        assert messages.count() == 5
        if agent_ends == "during the outage":
            # Its last events and its result wait for the database.
            (tree / "during.go").touch()
            wait_for(lambda: not (tree / "during.ready").exists(), "the agent to finish")
            time.sleep(2)
            assert thread.is_alive()
    finally:
        outage.end()
    (tree / "during.go").touch()
    thread.join(120)
    assert not thread.is_alive()
    assert outcome == [attempt.RunResult.SUCCEEDED], outcome
    results = StageResult.objects.filter(stage=stage)
    assert [(r.attempt, r.outcome) for r in results] == [(1, "succeeded")]
    texts = sorted(messages.values_list("data__text", flat=True))
    assert texts == sorted([f"before {i}" for i in range(5)] + [f"during {i}" for i in range(5)])
    assert any("database back after" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_a_stage_whose_agent_is_quiet_holds_no_database_connection(local_repository, origin_and_clone, settings):
    settings.TACX = {**settings.TACX, "DB_RELEASE_SECONDS": 0.5}
    clone = origin_and_clone[1]
    commit_workflow(clone, [command_stage("planning", "pause", "thinking"), {"name": "pr_creation"}])
    task, _ = services.task_create(repository=local_repository, issue_number=13, title="Quiet", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    stage = Stage.objects.get(task=task, name="planning")
    name = connection.settings_dict["NAME"]
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        ours = cur.fetchone()[0]

    def others() -> int:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> %s", [name, ours])
            return cur.fetchone()[0]

    outcome: list = []

    def work() -> None:
        try:
            outcome.append(attempt.run_stage(stage.pk, enqueue_next=False))
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    try:
        wait_for(lambda: Task.objects.get(pk=task.pk).worktree_path, "the worktree")
        tree = Path(Task.objects.get(pk=task.pk).worktree_path)
        wait_for(lambda: (tree / "thinking.ready").exists(), "the agent to go quiet")
        # The runner keeps renewing its lease, but holds no connection in between.
        wait_for(lambda: others() == 0, "the runner to let its connection go", timeout=20)
        assert Stage.objects.get(pk=stage.pk).status == Stage.Status.RUNNING
    finally:
        wait_for(lambda: Task.objects.get(pk=task.pk).worktree_path, "the worktree")
        (Path(Task.objects.get(pk=task.pk).worktree_path) / "thinking.go").touch()
        thread.join(60)
    assert outcome == [attempt.RunResult.SUCCEEDED]
