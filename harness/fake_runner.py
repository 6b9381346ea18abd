"""A stand-in for the stage runner, for the dashboard's tests, browser test and benchmarks.

It writes the same rows in the same order as ``pipeline.runner`` does for one attempt (claim,
StageResult, events in batches with a live notification, finish through ``pipeline.services``),
without a git worktree or an agent program, so a test can move a task through its stages at the
pace it wants and watch the pages and streams follow.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from pipeline import live, services
from pipeline.models import AgentEvent, Repository, Stage, StageResult, Task, Worker
from pipeline.workflow import default_workflow


def task_running(*, repository: Repository, issue_number: int, title: str = "Add a greeting") -> Task:
    """A task created and started with the bundled workflow: running, first stage queued."""
    task, _ = services.task_create(repository=repository, issue_number=issue_number, title=title, trigger_source="api")
    services.task_start(task=task, workflow=default_workflow(), enqueue=False)
    task.refresh_from_db()
    return task


def stage_claim(task: Task, name: str) -> StageResult:
    """queued -> running, a worker and an open attempt, as ``runner.run_stage`` claims a stage."""
    stage = task.stages.get(name=name)
    owner = f"{socket.gethostname()}:{os.getpid()}:test"
    claimed = Stage.objects.filter(pk=stage.pk, status=Stage.Status.QUEUED).update(
        status=Stage.Status.RUNNING,
        lease_owner=owner,
        lease_expires_at=services.lease_deadline(),
        heartbeat_at=Now(),
        attempts=F("attempts") + 1,
        started_at=Now(),
        finished_at=None,
        error="",
    )
    assert claimed == 1, f"stage {name} of task {task.pk} is not queued"
    stage.refresh_from_db()
    worker = Worker.objects.create(kind=Worker.Kind.AGENT, name=owner, host=socket.gethostname(), pid=os.getpid(), stage=stage)
    result = StageResult.objects.create(
        stage=stage, task=task, attempt=stage.attempts, round=task.review_round, provider=stage.provider, model=stage.model, worker=worker
    )
    services.event_status(
        task, f"stage {name} attempt {stage.attempts} started", stage=name, stage_status="running", attempt=stage.attempts
    )
    return result


def events_add(result: StageResult, events: list[tuple[str, dict]]) -> list[AgentEvent]:
    """One batch of agent events, then the live notification (what ``Attempt.flush_events`` does)."""
    start = AgentEvent.objects.filter(result=result).count()
    rows = [
        AgentEvent(task_id=result.task_id, result=result, seq=start + i + 1, kind=kind, data=data) for i, (kind, data) in enumerate(events)
    ]
    created = AgentEvent.objects.bulk_create(rows)
    usage = [data for kind, data in events if kind == "usage"]
    if usage:  # the runner keeps the open attempt's running totals up to date as it flushes
        last = usage[-1]
        StageResult.objects.filter(pk=result.pk, outcome=StageResult.Outcome.RUNNING).update(
            input_tokens=last.get("input_tokens", 0),
            output_tokens=last.get("output_tokens", 0),
            cache_read_tokens=last.get("cache_read_tokens", 0),
            cache_write_tokens=last.get("cache_write_tokens", 0),
            cost_usd=Decimal(last.get("cost_usd") or "0"),
        )
    if created and created[-1].pk:
        live.notify(result.task_id, created[-1].pk)
    return created


def sample_conversation(path: str = "plan.md") -> list[tuple[str, dict]]:
    """What a planner's transcript looks like once normalised."""
    return [
        ("system", {"subtype": "init", "model": "claude-sonnet-4-5", "cli_version": "2.1.197"}),
        ("message", {"role": "assistant", "text": "I will read the code and write **the plan**."}),
        ("tool_call", {"id": "toolu_1", "name": "Write", "input": {"file_path": path, "content": "# Plan\n\n1. Add greet()\n"}}),
        ("tool_result", {"id": "toolu_1", "output": f"File created successfully at: {path}", "is_error": False}),
        ("usage", {"input_tokens": 1200, "output_tokens": 340, "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": "0.0087"}),
    ]


def attempt_finish(
    result: StageResult,
    *,
    success: bool = True,
    error: str = "",
    output_text: str = "",
    verdict: str = "",
    tokens: tuple[int, int] = (1200, 340),
    cost: str = "0.0087",
    retry: bool = False,
) -> None:
    """Close the attempt and move the task on, as ``runner.finish_attempt`` does."""
    stage = result.stage
    result.outcome = StageResult.Outcome.SUCCEEDED if success else StageResult.Outcome.FAILED
    result.success = success
    result.completed_at = timezone.now()
    result.error = error
    result.output_text = output_text
    result.verdict = verdict
    result.exit_code = 0 if success else 1
    result.input_tokens, result.output_tokens = tokens
    result.cost_usd = Decimal(cost)
    with transaction.atomic():
        result.save()
        services.result_add_to_totals(result=result)
        Worker.objects.filter(stage=stage, exited_at__isnull=True).update(exited_at=Now(), exit_code=result.exit_code)
        task = Task.objects.get(pk=result.task_id)
        if success:
            Stage.objects.filter(pk=stage.pk).update(
                status=Stage.Status.SUCCEEDED, lease_owner="", lease_expires_at=None, finished_at=Now()
            )
            services.event_status(task, f"stage {stage.name} succeeded", stage=stage.name, stage_status="succeeded")
            stage.refresh_from_db()
            services.stage_succeeded_advance(stage=stage, enqueue=False)
            return
        Stage.objects.filter(pk=stage.pk).update(
            status=Stage.Status.QUEUED if retry else Stage.Status.FAILED,
            lease_owner="",
            lease_expires_at=None,
            failed_attempts=F("failed_attempts") + 1,
            finished_at=None if retry else Now(),
            error=error,
        )
        services.event_status(
            task,
            f"stage {stage.name} attempt {result.attempt} failed: {error}",
            stage=stage.name,
            stage_status="queued" if retry else "failed",
        )
        if not retry:
            services.task_fail(task=task, reason=f"stage {stage.name} failed: {error}")


@contextlib.contextmanager
def daphne_serving(*, env: dict[str, str], log_path: Path, timeout: float = 30) -> Iterator[str]:
    """Serve the project with daphne on a free loopback port (tests and benchmarks need the
    websocket side, which a WSGI live server lacks); yields the base URL, stops it after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "tacx_site.asgi:application"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("daphne did not start:\n" + log_path.read_text()) from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
