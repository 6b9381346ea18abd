"""A graceful stop hands prefetched stages back (issue 10, item 2): a cluster that gets SIGTERM
finishes the stage it is running, but a stage job it had already taken from the queue is
enqueued again for another worker instead of being run before the cluster exits.

Real parts: `manage.py run_workers` (django-q2's qcluster with the hand-back) as a subprocess on
the test database (ORM broker), the runner, a command agent that waits for the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_origin_and_clone
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ
from github_standin import command_workflow
from test_coordinator_reaping import database_url
from test_coordinator_worker_killed import wait_for

from pipeline import services
from pipeline.models import AgentEvent, Repository, Stage, StageResult, Task

WAITING_PLANNER = """
import os, pathlib, time
open("started", "w").close()
deadline = time.time() + 60
while not os.path.exists("go") and time.time() < deadline:
    time.sleep(0.05)
pathlib.Path("plan.md").write_text("# Plan\\n")
"""


def jobs(stage: Stage) -> list[OrmQ]:
    return [job for job in OrmQ.objects.all() if job.name() == f"stage-{stage.pk}"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_stopping_cluster_hands_its_prefetched_stage_back_and_finishes_the_running_one(tmp_path, settings):
    workflow = command_workflow(planning=WAITING_PLANNER, stages=("planning",), timeout=120)
    _origin, clone = make_origin_and_clone(tmp_path, "stopme", {"README.md": "x\n", ".tac/workflow.yaml": workflow})
    repo = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="stopme", local_path=str(clone), max_concurrent_tasks=5)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection),
        "TACX_WORKTREE_ROOT": str(settings.TACX["WORKTREE_ROOT"]),
        "TACX_VAR_DIR": str(tmp_path / "var"),
        "TACX_Q_WORKERS": "1",  # one worker, one job prefetched behind the one it runs
        "TACX_STAGE_HOST_ATTEMPTS": "0",  # the previous model: the worker runs the stage (a host takes both at once)
        "TACX_Q_TIMEOUT": "300",
        "TACX_Q_POLL": "0.1",
        "TACX_SANDBOX_ALLOW_READ": os.pathsep.join(settings.TACX["SANDBOX_ALLOW_READ"]),
    }
    first, _ = services.task_create(repository=repo, issue_number=1, title="First")
    assert services.task_dispatch(task=first)
    running = Stage.objects.get(task=first, name="planning")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_workers"], cwd=ROOT, env=env, start_new_session=True,
        stdout=(tmp_path / "cluster.log").open("w"), stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: Stage.objects.get(pk=running.pk).status == Stage.Status.RUNNING, "the first stage to run", 60)
        second, _ = services.task_create(repository=repo, issue_number=2, title="Second")
        assert services.task_dispatch(task=second)
        prefetched = Stage.objects.get(task=second, name="planning")
        # The cluster takes the second job into its queue while its only worker is busy.
        wait_for(lambda: (js := jobs(prefetched)) and all(j.lock and j.lock > timezone.now() for j in js), "the prefetch", 60)
        os.kill(proc.pid, signal.SIGTERM)  # a graceful stop (the main process only, as `kill PID`)
        wait_for(lambda: (Path(tmp_path / "var" / "q2") / f"stopping-{proc.pid}").exists(), "the stop to begin", 30)
        worktree = Path(wait_for(lambda: Task.objects.get(pk=first.pk).worktree_path, "the worktree", 30))
        wait_for(lambda: (worktree / "started").exists(), "the first agent", 60)
        (worktree / "go").touch()
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (tmp_path / "cluster.log").read_text()[-3000:]
    # The running stage finished; the prefetched one was not run but is waiting for a worker.
    assert Stage.objects.get(pk=running.pk).status == Stage.Status.SUCCEEDED, log
    prefetched.refresh_from_db()
    assert (prefetched.status, prefetched.attempts) == (Stage.Status.QUEUED, 0), log
    assert not StageResult.objects.filter(stage=prefetched).exists()
    waiting = jobs(prefetched)
    assert waiting and all(j.lock is None or j.lock <= timezone.now() for j in waiting), "its job is in the queue again, untaken"
    assert any("handed back" in e.data.get("message", "") for e in AgentEvent.objects.filter(task=second, kind="status"))
