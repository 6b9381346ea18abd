"""A django-q2 cluster killed with SIGKILL in the middle of a stage.

Real parts: `manage.py qcluster` subprocesses on the test database (ORM broker), the stage
runner, a slow agent (command provider) in the agent sandbox, git. The agent appends
"<its id> <time>" to a log in its worktree every 50 ms, so the log shows when each agent
process ran: the intervals of two attempts must never overlap. The sandbox ends with the worker
that started it, so no orphan agent outlives the SIGKILL.
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
from conftest import ROOT, make_origin_and_clone, processes_matching, wait_for
from django.db import connection
from github_standin import command_workflow
from test_coordinator_reaping import database_url

from coordinator.dispatch import Dispatcher
from coordinator.loop import Coordinator
from harness.cli_runs import stop_process_group
from pipeline import services
from pipeline.models import Repository, Stage, StageResult, Task

# The agent runs in the sandbox (its own PID namespace): it logs to its worktree under a random
# id of its own, and carries TAG on its command line so the host can find its processes.
SLOW_PLANNER = """
import os, pathlib, time
TAG = {tag!r}
me = os.urandom(6).hex()
log = open("agent.log", "a", buffering=1)
first = not os.path.exists("first-attempt-started")
open("first-attempt-started", "a").close()
for i in range(600 if first else 20):  # the first attempt would take 30 s, a later one 1 s
    log.write(f"{{me}} {{time.time()}}\\n")
    try:
        print(f"working {{i}}", flush=True)
    except BrokenPipeError:
        pass  # like an agent deep in a long tool call: it does not notice its reader is gone
    time.sleep(0.05)
pathlib.Path("plan.md").write_text("# Plan\\n\\nWrite CHANGES.md.\\n")
"""


def agent_runs(log: Path) -> dict[str, tuple[float, float]]:
    """agent id -> (first, last) time the agent process wrote to the log."""
    seen: dict[str, list[float]] = defaultdict(list)
    if log.exists():
        for line in log.read_text().splitlines():
            me, at = line.split()[:2]
            seen[me].append(float(at))
    return {me: (min(times), max(times)) for me, times in seen.items()}


def cluster_env(settings, tmp_path: Path, *, workers: int, **extra: str) -> dict[str, str]:
    """The environment of a qcluster on this test's database, worktree root and sandbox reads."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(connection),
        "TACX_WORKTREE_ROOT": str(settings.TACX["WORKTREE_ROOT"]),
        "TACX_VAR_DIR": str(tmp_path / "var"),
        "TACX_Q_WORKERS": str(workers),
        "TACX_Q_TIMEOUT": "300",
        "TACX_Q_POLL": "0.1",
        "TACX_SANDBOX_ALLOW_READ": os.pathsep.join(settings.TACX["SANDBOX_ALLOW_READ"]),
        **extra,
    }


def start_cluster(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    # Its own session: SIGKILL to the group kills the whole cluster (sentinel, pusher, workers,
    # monitor) but not the agent, which runs in a session of its own, as in production.
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, start_new_session=True, stdout=log_path.open("w"), stderr=subprocess.STDOUT
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_sigkilled_worker_is_reaped_its_agent_killed_and_the_task_finished_without_overlap(tmp_path, settings):
    tag = f"slow-planner-{os.urandom(6).hex()}"
    workflow = command_workflow(planning=SLOW_PLANNER.format(tag=tag), timeout=120)
    _origin, clone = make_origin_and_clone(tmp_path, "killme", {"README.md": "x\n", ".tac/workflow.yaml": workflow})
    repo = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="killme", local_path=str(clone))
    # A short lease so the reaper acts soon, but not so short that a surviving worker loses it
    # while it publishes (a fetch into the mirror, then a push: several git commands) on a busy
    # machine: 2 s lost the lease of healthy attempts in CI three times in a row.
    settings.TACX = {**settings.TACX, "LEASE_SECONDS": 5, "HEARTBEAT_SECONDS": 0.5}
    env = cluster_env(settings, tmp_path, workers=2, TACX_LEASE_SECONDS="5", TACX_HEARTBEAT_SECONDS="0.5", TACX_KILL_GRACE_SECONDS="1")
    task, _ = services.task_create(repository=repo, issue_number=1, title="Write a changelog")
    assert Dispatcher().start(task)  # planning queued and handed to django-q2 (ORM broker)
    planning = Stage.objects.get(task=task, name="planning")

    first = start_cluster(env, tmp_path / "cluster-1.log")
    second = None
    try:
        # The agent is working: a few lines in its log.
        worktree = Path(wait_for(lambda: Task.objects.get(pk=task.pk).worktree_path, "the worktree", timeout=60))
        agent_log = worktree / "agent.log"
        wait_for(lambda: sum(1 for _ in agent_log.open()) >= 5 if agent_log.exists() else False, "the first agent to start", timeout=60)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        last_fault = time.time()
        time.sleep(0.3)
        # The sandbox (bubblewrap, --die-with-parent) ends with the worker that started it: no
        # orphan agent keeps working on the stage (unsandboxed, the reaper kills the orphan).
        wait_for(lambda: processes_matching(tag) == [], "the agent to end with its worker", timeout=10)
        assert Stage.objects.get(pk=planning.pk).status == Stage.Status.RUNNING

        # Nobody renews the lease now; once it has expired the coordinator's reaper acts.
        coordinator = Coordinator(host=socket.gethostname(), tick=0.1)
        wait_for(lambda: not Stage.objects.filter(pk=planning.pk, lease_expires_at__gt=time_now()).exists(), "the lease to expire", timeout=10)
        coordinator.run_once()

        attempt = StageResult.objects.get(stage=planning, attempt=1)
        assert attempt.outcome == StageResult.Outcome.WORKER_LOST and not attempt.success
        assert processes_matching(tag) == []
        planning.refresh_from_db()
        assert planning.status == Stage.Status.QUEUED and planning.attempts == 1

        second = start_cluster(env, tmp_path / "cluster-2.log")
        finish_in_a_thread(coordinator, task.pk)
    finally:
        stop_clusters(first, second)

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


def finish_in_a_thread(coordinator: Coordinator, task_id: int) -> None:
    """Run the coordinator in a thread (its own database connection) until the task ends."""
    runner = threading.Thread(target=run_until_finished, args=(coordinator, task_id), daemon=True)
    runner.start()
    runner.join(timeout=120)
    assert not runner.is_alive(), "the task did not finish"


def stop_clusters(*clusters: subprocess.Popen | None) -> None:
    for cluster in clusters:
        if cluster is not None:
            stop_process_group(cluster)


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


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_cluster_killed_between_taking_a_job_and_claiming_its_stage_loses_nothing(tmp_path, settings):
    """Issue 9 (item 2), with a real cluster: the stage row is locked so the worker that took
    the job blocks in its claim; the cluster is killed there. The job is gone for `retry` (hours)
    as far as q2 is concerned; the coordinator enqueues the stage again and the task finishes
    with one attempt per stage."""
    from datetime import timedelta

    from django.db import transaction
    from django.db.models import F
    from django.utils import timezone
    from django_q.models import OrmQ

    if connection.vendor != "postgresql":
        pytest.skip("needs row locks (SELECT ... FOR UPDATE) to hold the worker before its claim")
    _origin, clone = make_origin_and_clone(tmp_path, "lostjob", {"README.md": "x\n", ".tac/workflow.yaml": command_workflow()})
    repo = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="lostjob", local_path=str(clone))
    settings.TACX = {**settings.TACX, "LOST_JOB_SECONDS": 30}
    env = cluster_env(settings, tmp_path, workers=1)
    task, _ = services.task_create(repository=repo, issue_number=1, title="Lost job")
    assert Dispatcher().start(task)
    planning = Stage.objects.get(task=task, name="planning")
    (job,) = [j for j in OrmQ.objects.all() if j.name() == f"stage-{planning.pk}"]

    cluster = start_cluster(env, tmp_path / "cluster-1.log")
    second = None
    try:
        with transaction.atomic():
            Stage.objects.select_for_update().get(pk=planning.pk)  # the worker's claim waits here
            wait_for(lambda: OrmQ.objects.filter(pk=job.pk, lock__gt=timezone.now()).exists(), "a worker to take the job", timeout=60)
            time.sleep(0.3)  # the worker is now inside run_stage, blocked on the row lock
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
        last_fault = time.time()
        planning.refresh_from_db()
        assert planning.status == Stage.Status.QUEUED and planning.attempts == 0
        assert OrmQ.objects.filter(pk=job.pk, lock__gt=timezone.now() + timedelta(seconds=60)).exists()  # q2 waits `retry`

        # Pretend LOST_JOB_SECONDS passed (no sleeping in tests): the job was taken, and the
        # stage queued, 31 s ago.
        OrmQ.objects.filter(pk=job.pk).update(lock=F("lock") - timedelta(seconds=31))
        Stage.objects.filter(pk=planning.pk).update(queued_at=F("queued_at") - timedelta(seconds=31))
        second = start_cluster(env, tmp_path / "cluster-2.log")
        coordinator = Coordinator(host=socket.gethostname(), tick=0.1)
        finish_in_a_thread(coordinator, task.pk)
    finally:
        stop_clusters(cluster, second)

    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert task.finished_at.timestamp() - last_fault <= settings.TACX["LEASE_SECONDS"] + 60
    assert list(task.stages.values_list("attempts", flat=True)) == [1, 1, 1, 1]
    assert not OrmQ.objects.filter(pk=job.pk).exists()  # the dead worker's job was dropped
