"""A django-q2 cluster killed with SIGKILL in the middle of a stage.

Real parts: `manage.py qcluster` subprocesses on the test database (ORM broker), the stage
runner, a slow agent (command provider) in its own session, git. The agent appends
"<pid> <time>" to a log every 50 ms, so the log shows when each agent process ran: the
intervals of two attempts must never overlap.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import ROOT, make_origin_and_clone
from django.db import connection
from github_standin import command_workflow
from test_coordinator_reaping import database_url

from coordinator.dispatch import Dispatcher
from coordinator.loop import Coordinator
from pipeline import services
from pipeline.agent_process import group_alive
from pipeline.models import Repository, Stage, StageResult, Task

SLOW_PLANNER = """
import os, pathlib, time
log = open({log!r}, "a", buffering=1)
first = not os.path.exists({marker!r})
open({marker!r}, "a").close()
for i in range(600 if first else 20):  # the first attempt would take 30 s, a later one 1 s
    log.write(f"{{os.getpid()}} {{time.time()}}\\n")
    try:
        print(f"working {{i}}", flush=True)
    except BrokenPipeError:
        pass  # like an agent deep in a long tool call: it does not notice its reader is gone
    time.sleep(0.05)
pathlib.Path("plan.md").write_text("# Plan\\n\\nWrite CHANGES.md.\\n")
"""


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def agent_runs(log: Path) -> dict[int, tuple[float, float]]:
    """pid -> (first, last) time the agent process wrote to the log."""
    seen: dict[int, list[float]] = defaultdict(list)
    if log.exists():
        for line in log.read_text().splitlines():
            pid, at = line.split()[:2]
            seen[int(pid)].append(float(at))
    return {pid: (min(times), max(times)) for pid, times in seen.items()}


def start_cluster(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    # Its own session: SIGKILL to the group kills the whole cluster (sentinel, pusher, workers,
    # monitor) but not the agent, which runs in a session of its own, as in production.
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, start_new_session=True, stdout=log_path.open("w"), stderr=subprocess.STDOUT
    )


def stop_cluster(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_sigkilled_worker_is_reaped_its_agent_killed_and_the_task_finished_without_overlap(tmp_path, settings):
    agent_log, marker = tmp_path / "agent.log", tmp_path / "first-attempt-started"
    workflow = command_workflow(planning=SLOW_PLANNER.format(log=str(agent_log), marker=str(marker)), timeout=120)
    _origin, clone = make_origin_and_clone(tmp_path, "killme", {"README.md": "x\n", ".tac/workflow.yaml": workflow})
    repo = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="killme", local_path=str(clone))
    settings.TACX = {**settings.TACX, "LEASE_SECONDS": 2, "HEARTBEAT_SECONDS": 0.5}
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection),
        "TACX_LEASE_SECONDS": "2",
        "TACX_HEARTBEAT_SECONDS": "0.5",
        "TACX_KILL_GRACE_SECONDS": "1",
        "TACX_WORKTREE_ROOT": str(settings.TACX["WORKTREE_ROOT"]),
        "TACX_VAR_DIR": str(tmp_path / "var"),
        "TACX_Q_WORKERS": "2",
        "TACX_Q_TIMEOUT": "300",
        "TACX_Q_POLL": "0.1",
    }
    task, _ = services.task_create(repository=repo, issue_number=1, title="Write a changelog")
    assert Dispatcher().start(task)  # planning queued and handed to django-q2 (ORM broker)
    planning = Stage.objects.get(task=task, name="planning")

    first = start_cluster(env, tmp_path / "cluster-1.log")
    second = None
    try:
        # The agent is working: a few lines in its log.
        wait_for(lambda: sum(1 for _ in agent_log.open()) >= 5 if agent_log.exists() else False, 60, "the first agent to start")
        (orphan_pid,) = agent_runs(agent_log)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        last_fault = time.time()
        time.sleep(0.3)
        assert group_alive(orphan_pid), "the agent runs on after its worker died (an orphan)"
        assert Stage.objects.get(pk=planning.pk).status == Stage.Status.RUNNING

        # Nobody renews the lease now; once it has expired the coordinator's reaper acts.
        coordinator = Coordinator(host=socket.gethostname(), tick=0.1)
        wait_for(lambda: not Stage.objects.filter(pk=planning.pk, lease_expires_at__gt=time_now()).exists(), 10, "the lease to expire")
        coordinator.run_once()

        attempt = StageResult.objects.get(stage=planning, attempt=1)
        assert attempt.outcome == StageResult.Outcome.WORKER_LOST and not attempt.success
        assert not group_alive(orphan_pid), "the orphaned agent group was killed"
        planning.refresh_from_db()
        assert planning.status == Stage.Status.QUEUED and planning.attempts == 1

        second = start_cluster(env, tmp_path / "cluster-2.log")
        runner = threading.Thread(target=run_until_finished, args=(coordinator, task.pk), daemon=True)
        runner.start()
        runner.join(timeout=120)
        assert not runner.is_alive(), "the task did not finish"
    finally:
        stop_cluster(first)
        if second is not None:
            stop_cluster(second)

    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, f"{task.status}: {task.status_reason}\n{(tmp_path / 'cluster-2.log').read_text()[-3000:]}"
    # Final within lease + 60 s of the last fault (issue 9): nothing waits for q2's `retry`.
    bound = settings.TACX["LEASE_SECONDS"] + 60
    assert task.finished_at.timestamp() - last_fault <= bound, f"final {task.finished_at.timestamp() - last_fault:.1f} s after the kill"
    planning.refresh_from_db()
    assert planning.attempts == 2
    outcomes = list(StageResult.objects.filter(stage=planning).order_by("attempt").values_list("outcome", flat=True))
    assert outcomes == [StageResult.Outcome.WORKER_LOST, StageResult.Outcome.SUCCEEDED]
    runs = sorted(agent_runs(agent_log).values())
    assert len(runs) == 2
    (_, first_end), (second_start, _) = runs
    assert first_end < second_start, f"two agents ran for the same stage at once: {runs}"


def time_now():
    from django.utils import timezone

    return timezone.now()


def run_until_finished(coordinator: Coordinator, task_id: int) -> None:
    try:
        deadline = time.monotonic() + 110
        while time.monotonic() < deadline:
            coordinator.run_cycle()
            if not Task.objects.filter(pk=task_id, status__in=Task.ACTIVE).exists():
                return
            time.sleep(0.1)
    finally:
        coordinator.close()
        connection.close()
