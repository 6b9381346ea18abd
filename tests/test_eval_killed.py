"""A kill -9 of the evaluation's worker mid-run loses no instance and runs none twice.

Real parts: `manage.py eval_run` as a subprocess on the test database, running the instances'
stage jobs in its own threads (the default); a slow agent (the `command` provider, in the agent
sandbox) that applies the right fix of whichever issue its base still has; grading in the
sandbox. The process group is killed with SIGKILL while one instance is graded and agents are at
work; `eval_run --resume` then finishes the run: every instance has exactly one task and one
verdict, a killed attempt is recorded as worker lost and run again, an instance graded before
the kill is not touched again.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from io import StringIO

import pytest
from conftest import ROOT, wait_for
from django.core.management import call_command
from django.db import connection
from test_coordinator_reaping import database_url
from test_eval_run_claude import project_instances

from evaluation.instances import to_jsonl
from evaluation.models import EvalResult, EvalRun
from pipeline.models import StageResult, Task
from tests import eval_project

# The agent: a few seconds of work, then the fix of the first bug its base still has (each
# instance's base has exactly its own issue's bug first).
AGENT = """
import pathlib, subprocess, time
time.sleep(4)
calc = pathlib.Path("calc.py")
text = calc.read_text()
if "return a - b" in text:
    text = text.replace("return a - b", "return a + b")
elif "def ordering" not in text:
    text += {ordering!r}
else:
    text = text.replace("while n != 0:", "while n > 0:")
calc.write_text(text)
subprocess.run(["git", "add", "calc.py"], check=True)
subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@x", "commit", "-qm", "fix"], check=True)
print("fixed")
"""


def workflow() -> str:
    return (
        "\n".join(
            [
                "stages:",
                "  - name: building",
                "    provider: command",
                "    timeout: 120",
                "    max_attempts: 3",
                "    options:",
                f"      argv: {json.dumps([sys.executable, '-c', AGENT.format(ordering=eval_project.ORDERING)])}",
                "  - name: pr_creation",
            ]
        )
        + "\n"
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_sigkilled_eval_worker_loses_no_instance_and_runs_none_twice(tmp_path, settings):
    repo, _ = eval_project.build(tmp_path)
    instances = tmp_path / "instances.jsonl"
    instances.write_text(to_jsonl(project_instances(repo)))
    wf = tmp_path / "slow-fix.yaml"
    wf.write_text(workflow())
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection),
        "TACX_WORKTREE_ROOT": str(settings.TACX["WORKTREE_ROOT"]),
        "TACX_VAR_DIR": str(settings.VAR_DIR),
        "TACX_SANDBOX_ALLOW_READ": os.pathsep.join(settings.TACX["SANDBOX_ALLOW_READ"]),
        "TACX_LEASE_SECONDS": "3",
        "TACX_HEARTBEAT_SECONDS": "0.5",
    }
    argv = [
        sys.executable,
        "manage.py",
        "eval_run",
        str(instances),
        "--workflow",
        str(wf),
        "--concurrency",
        "2",
        "--test-timeout",
        "5",
        "--test-runner",
        shlex.join(eval_project.RUNNER),
    ]
    log = tmp_path / "eval-run.log"
    driver = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        # One instance graded, and an agent at work on another: kill the whole worker.
        wait_for(
            lambda: (
                EvalResult.objects.filter(status=EvalResult.Status.DONE).exists()
                and StageResult.objects.filter(outcome=StageResult.Outcome.RUNNING).exists()
            ),
            "one instance graded while another's agent works",
            timeout=120,
        )
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    run = EvalRun.objects.get()
    assert run.status == EvalRun.Status.RUNNING, log.read_text()
    graded_before = {r.pk: (r.finished_at, r.task_id) for r in EvalResult.objects.filter(status=EvalResult.Status.DONE)}
    killed = set(StageResult.objects.filter(outcome=StageResult.Outcome.RUNNING).values_list("pk", flat=True))
    assert graded_before and killed

    settings.TACX = {**settings.TACX, "LEASE_SECONDS": 3, "HEARTBEAT_SECONDS": 0.5}
    out = StringIO()
    started = time.monotonic()
    call_command("eval_run", "--resume", str(run.pk), stdout=out, stderr=StringIO())
    resume_seconds = time.monotonic() - started

    run.refresh_from_db()
    assert run.status == EvalRun.Status.FINISHED, out.getvalue()
    results = list(EvalResult.objects.filter(run=run).select_related("task").order_by("position"))
    # No instance lost: each has its verdict, every fix resolved.
    assert [(r.instance_id, r.status, r.outcome) for r in results] == [(f"calc-{n}", "done", "resolved") for n in (1, 2, 3)], [
        r.reason for r in results
    ]
    # None run twice: one task per instance, one successful building attempt per task; the
    # attempts the kill cut short are recorded as worker lost and were not counted as success.
    assert Task.objects.filter(trigger_source="eval").count() == 3
    for r in results:
        attempts = list(StageResult.objects.filter(task=r.task).order_by("attempt").values_list("outcome", flat=True))
        assert attempts.count(StageResult.Outcome.SUCCEEDED) == 1, (r.instance_id, attempts)
        assert set(attempts) <= {StageResult.Outcome.SUCCEEDED, StageResult.Outcome.WORKER_LOST}, attempts
        assert r.attempts == len(attempts)
    assert set(StageResult.objects.filter(pk__in=killed).values_list("outcome", flat=True)) == {StageResult.Outcome.WORKER_LOST}
    # An instance graded before the kill was not graded (nor run) again.
    for pk, (finished_at, task_id) in graded_before.items():
        again = EvalResult.objects.get(pk=pk)
        assert (again.finished_at, again.task_id) == (finished_at, task_id)
    assert resume_seconds < 120
