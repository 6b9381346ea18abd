"""Reaping and the loop itself: expired leases, orphaned agents, old worktrees, heartbeat,
crash back-off, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import ROOT
from django.utils import timezone
from github_standin import command_workflow

from coordinator import heartbeat, reaping
from coordinator.backoff import Backoff
from coordinator.dispatch import Dispatcher
from coordinator.loop import Coordinator
from harness.cli_runs import stop_agent
from pipeline import services
from pipeline.agent_process import group_alive
from pipeline.models import Repository, Stage, StageResult, Task, Worker

HOST = "test-host"


@pytest.fixture
def repo(db, tmp_path):
    from conftest import make_origin_and_clone

    _origin, clone = make_origin_and_clone(tmp_path, "reap", {"README.md": "x\n", ".tac/workflow.yaml": command_workflow()})
    return Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="reap", local_path=str(clone))


def running_stage(repo: Repository, *, number: int = 1, expired: bool = True) -> Stage:
    """A started task whose planning stage a (now silent) worker holds."""
    task, _ = services.task_create(repository=repo, issue_number=number, title="t")
    assert Dispatcher().start(task)
    stage = Stage.objects.get(task=task, position=0)
    expires = timezone.now() + timedelta(seconds=-5 if expired else 60)
    Stage.objects.filter(pk=stage.pk).update(status=Stage.Status.RUNNING, lease_owner="gone:1:abc", lease_expires_at=expires, attempts=1)
    StageResult.objects.create(stage=stage, task=task, attempt=1, provider="command")
    return Stage.objects.get(pk=stage.pk)


@pytest.fixture
def orphan(settings, tmp_path):
    """Start an 'agent' in its own session inside a worktree directory; yields a function that
    records it on a Worker row for a stage. Killed at the end whatever happens."""
    procs: list[subprocess.Popen] = []

    def start(stage: Stage, *, cwd: Path | None = None) -> Worker:
        worktree = Path(settings.TACX["WORKTREE_ROOT"]) / f"reap-{stage.task.issue_number}"
        worktree.mkdir(parents=True, exist_ok=True)
        Task.objects.filter(pk=stage.task_id).update(worktree_path=str(worktree))
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"], cwd=cwd or worktree, start_new_session=True
        )
        procs.append(proc)
        time.sleep(0.1)
        worker = Worker.objects.create(kind=Worker.Kind.AGENT, name=stage.lease_owner or "gone:1:abc", host=HOST, pid=999999, pgid=proc.pid, stage=stage)
        StageResult.objects.filter(stage=stage, outcome=StageResult.Outcome.RUNNING).update(worker=worker)
        return worker

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_an_expired_lease_is_reaped_after_its_local_agent_is_killed(repo, orphan):
    stage = running_stage(repo)
    worker = orphan(stage)
    assert group_alive(worker.pgid)
    assert reaping.reap_one_stage(host=HOST)
    assert not group_alive(worker.pgid)
    stage.refresh_from_db()
    assert stage.status == Stage.Status.QUEUED and stage.error == "worker lost"
    result = StageResult.objects.get(stage=stage)
    assert result.outcome == StageResult.Outcome.WORKER_LOST and "gone:1:abc" in result.error
    assert not reaping.reap_one_stage(host=HOST)


def test_a_live_lease_is_left_alone(repo, orphan):
    stage = running_stage(repo, expired=False)
    worker = orphan(stage)
    assert not reaping.reap_one_stage(host=HOST)
    assert not reaping.OrphanKiller(host=HOST).kill_one_orphan(force=True)
    assert group_alive(worker.pgid)
    assert Stage.objects.get(pk=stage.pk).status == Stage.Status.RUNNING


def test_the_last_attempt_lost_fails_the_task(repo):
    stage = running_stage(repo)
    Stage.objects.filter(pk=stage.pk).update(max_attempts=1)
    assert reaping.reap_one_stage(host=HOST)
    task = Task.objects.get(pk=stage.task_id)
    assert task.status == Task.Status.FAILED and "worker lost" in task.status_reason


def test_an_agent_whose_stage_was_reaped_elsewhere_is_killed_as_an_orphan(repo, orphan):
    stage = running_stage(repo)
    worker = orphan(stage)
    services.stage_reap_expired()  # another coordinator reaped it (and closed the worker row)
    assert group_alive(worker.pgid)
    assert reaping.OrphanKiller(host=HOST).kill_one_orphan(force=True)
    assert not group_alive(worker.pgid)


def test_a_process_group_that_is_not_the_agents_any_more_is_not_killed(repo, orphan, tmp_path):
    stage = running_stage(repo)
    elsewhere = tmp_path / "unrelated"
    elsewhere.mkdir()
    worker = orphan(stage, cwd=elsewhere)  # same pgid on record, but a stranger's process now
    services.stage_reap_expired()
    assert not reaping.OrphanKiller(host=HOST).kill_one_orphan(force=True)
    assert group_alive(worker.pgid)


def test_orphans_on_other_hosts_are_theirs_to_kill(repo, orphan):
    stage = running_stage(repo)
    worker = orphan(stage)
    Worker.objects.filter(pk=worker.pk).update(host="another-host")
    assert reaping.reap_one_stage(host=HOST)  # the stage is reaped all the same
    assert group_alive(worker.pgid)


def test_worktrees_of_finished_tasks_are_removed_after_the_retention(repo, settings):
    settings.TACX = {**settings.TACX, "WORKTREE_RETENTION_HOURS": 1}
    stage = running_stage(repo, expired=False)
    task = stage.task
    from pipeline import git

    path = git.worktree_path(settings.TACX["WORKTREE_ROOT"], repo.full_name, task.issue_number, task.pk)
    git.worktree_add(repo.local_path, path, "tacx/1-t", "main")
    branches = git.run(["branch", "--list"], cwd=repo.local_path)
    Task.objects.filter(pk=task.pk).update(worktree_path=str(path))
    backoff = Backoff()
    assert not reaping.clean_one_worktree(backoff=backoff)  # still running
    services.task_fail(task=Task.objects.get(pk=task.pk), reason="done")
    assert not reaping.clean_one_worktree(backoff=backoff)  # finished just now
    Task.objects.filter(pk=task.pk).update(finished_at=timezone.now() - timedelta(hours=2), worktree_host="another-machine")
    assert not reaping.clean_one_worktree(backoff=backoff)  # that machine cleans its own
    assert path.exists()
    Task.objects.filter(pk=task.pk).update(worktree_host=socket.gethostname())
    assert reaping.clean_one_worktree(backoff=backoff)
    assert not path.exists() and not git.store_path(path).exists()  # the task's git directory goes too
    assert Task.objects.get(pk=task.pk).worktree_removed_at is not None
    assert git.run(["branch", "--list"], cwd=repo.local_path) == branches  # the user's branches stay
    assert not reaping.clean_one_worktree(backoff=backoff)


def test_the_coordinator_writes_a_heartbeat_and_records_its_exit(db):
    assert heartbeat.coordinator_heartbeat_age() is None
    coordinator = Coordinator(host=HOST)
    coordinator.run_cycle()
    age = heartbeat.coordinator_heartbeat_age()
    assert age is not None and age < 5
    row = Worker.objects.get(kind=Worker.Kind.COORDINATOR)
    assert row.host == HOST and row.pid == os.getpid()
    coordinator.close()
    assert heartbeat.coordinator_heartbeat_age() is None


def test_a_crashing_step_is_logged_and_backed_off_not_repeated(db, caplog):
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise RuntimeError("boom")

    coordinator = Coordinator(host=HOST)
    coordinator.steps = [broken, coordinator.dispatch_one_task]
    coordinator.run_once()
    coordinator.run_once()
    assert calls == [1]
    assert "broken crashed" in caplog.text
    assert 0 < coordinator.step_backoff.remaining("broken") <= 1.0


def test_stop_finishes_the_current_step_and_leaves_the_loop(db):
    coordinator = Coordinator(host=HOST, tick=0.05)
    seen = []

    def step() -> bool:
        seen.append(1)
        if len(seen) == 3:
            coordinator.stop()
        return False

    coordinator.steps = [step]
    started = time.monotonic()
    coordinator.run()
    assert len(seen) == 3 and time.monotonic() - started < 5
    assert Worker.objects.get(kind=Worker.Kind.COORDINATOR).exited_at is not None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_run_coordinator_exits_cleanly_on_sigterm(tmp_path):
    from django.db import connection

    env = {**os.environ, "DATABASE_URL": database_url(connection), "TACX_VAR_DIR": str(tmp_path / "var"), "TACX_POLL_INTERVAL": "3600"}
    proc = subprocess.Popen([sys.executable, "manage.py", "run_coordinator", "--tick", "0.1"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while heartbeat.coordinator_heartbeat_age() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert heartbeat.coordinator_heartbeat_age() is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        stop_agent(proc)
    assert heartbeat.coordinator_heartbeat_age() is None


def database_url(connection) -> str:
    """A DATABASE_URL for a subprocess that points at the database this test uses."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
