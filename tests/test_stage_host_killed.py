"""Issue 23 (item 4): kill -9 of the stage host that holds several running attempts.

Real parts: `manage.py run_workers` (a q2 cluster on the test database, ORM broker, and the
stage host of HELD slots it supervises, pipeline.stage_host); HELD tasks whose planning agents (the
`command` provider, sandboxed) each append "<its id> <time>" to a log in their worktree; the
coordinator's reaper. The stage host holding all HELD attempts is killed with SIGKILL (run_workers
starts a new one); each stage must be re-run exactly once (attempt 1 worker_lost,
attempt 2 succeeded), no result row left open, and no two agents of one stage ever overlapping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, make_origin_and_clone, wait_for
from django.db import connection
from github_standin import command_workflow
from test_coordinator_worker_killed import SLOW_PLANNER, agent_runs, cluster_env

from coordinator.dispatch import Dispatcher
from coordinator.loop import Coordinator
from harness.cli_runs import stop_process_group
from pipeline import services
from pipeline.models import Repository, Stage, StageResult, Task, Worker

HELD = 4


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_kill_9_of_a_host_with_several_attempts_re_runs_each_exactly_once(tmp_path, settings):
    tag = f"held-{os.urandom(6).hex()}"
    workflow = command_workflow(planning=SLOW_PLANNER.format(tag=tag), stages=("planning",), timeout=120)
    _origin, clone = make_origin_and_clone(tmp_path, "hosted", {"README.md": "x\n", ".tac/workflow.yaml": workflow})
    repo = Repository.objects.create(
        kind=Repository.Kind.LOCAL, full_name="hosted", local_path=str(clone), max_concurrent_tasks=HELD
    )
    settings.TACX = {**settings.TACX, "LEASE_SECONDS": 15, "HEARTBEAT_SECONDS": 0.5, "MAX_CONCURRENT_TASKS": HELD}
    env = cluster_env(
        settings,
        tmp_path,
        workers=1,
        TACX_STAGE_HOST_ATTEMPTS=str(HELD),
        TACX_LEASE_SECONDS="15",
        TACX_HEARTBEAT_SECONDS="0.5",
        TACX_KILL_GRACE_SECONDS="1",
    )
    tasks = []
    for n in range(1, HELD + 1):
        task, _ = services.task_create(repository=repo, issue_number=n, title=f"held {n}")
        assert Dispatcher().start(task)
        tasks.append(task)
    stages = [Stage.objects.get(task=t, name="planning") for t in tasks]
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "run_workers"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=(tmp_path / "cluster.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        # Every agent is working, all in one worker process.
        logs = [
            Path(wait_for(lambda t=t: Task.objects.get(pk=t.pk).worktree_path, "a worktree", timeout=90)) / "agent.log"
            for t in tasks
        ]
        for log in logs:
            wait_for(lambda log=log: log.exists() and sum(1 for _ in log.open()) >= 3, "every agent to start", timeout=90)
        hosts = set(Worker.objects.filter(kind=Worker.Kind.AGENT, exited_at__isnull=True).values_list("pid", flat=True))
        assert len(hosts) == 1, f"the attempts ran in {len(hosts)} processes"
        os.kill(hosts.pop(), signal.SIGKILL)
        killed = time.time()
        assert Stage.objects.filter(pk__in=[s.pk for s in stages], status=Stage.Status.RUNNING).count() == HELD

        # The coordinator reaps each expired lease (the killed host's agents with it) and the
        # new worker q2 started runs each stage again.
        coordinator = Coordinator(host=socket.gethostname(), tick=0.1)
        runner = threading.Thread(target=run_until_finished, args=(coordinator, [t.pk for t in tasks]), daemon=True)
        runner.start()
        runner.join(timeout=150)
        assert not runner.is_alive(), "the tasks did not finish"
    finally:
        stop_process_group(cluster)

    for task, stage, log in zip(tasks, stages, logs, strict=True):
        task.refresh_from_db()
        stage.refresh_from_db()
        assert task.status == Task.Status.SUCCEEDED, (
            f"{task.status}: {task.status_reason}\n{(tmp_path / 'cluster.log').read_text()[-3000:]}"
        )
        assert stage.attempts == 2
        outcomes = list(StageResult.objects.filter(stage=stage).order_by("attempt").values_list("outcome", flat=True))
        assert outcomes == [StageResult.Outcome.WORKER_LOST, StageResult.Outcome.SUCCEEDED]
        runs = sorted(agent_runs(log).values())
        assert len(runs) == 2
        (_, first_end), (second_start, _) = runs
        assert first_end < second_start, f"two agents ran for one stage at once: {runs}"
        assert task.finished_at.timestamp() - killed <= settings.TACX["LEASE_SECONDS"] + 60


def run_until_finished(coordinator: Coordinator, task_ids: list[int]) -> None:
    try:
        deadline = time.monotonic() + 140
        while time.monotonic() < deadline:
            coordinator.run_cycle()
            if not Task.objects.filter(pk__in=task_ids, status__in=Task.ACTIVE).exists():
                return
            time.sleep(0.1)
    finally:
        coordinator.close()
        connection.close()
