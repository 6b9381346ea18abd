"""Issue 23 (bad input and limits): in one stage host, a hung agent never delays another
attempt's events or lease renewals, and a full host refuses a stage instead of queueing it.

Three real attempts run at once in this process's `stage_host.Attempts` (threads, as in the
host), each a sandboxed `command` agent: one never reads its stdin (a prompt far larger than a
pipe's buffer is written to it), one floods its stdout (60,000 lines as fast as it can), and one
prints a line stamped with the wall clock every 0.1 s. From another connection the test watches
the steady one: each of its lines must be stored within a second of being printed, and its
stage's heartbeat (renewed with its lease) must never stand still for more than two periods.
"""

from __future__ import annotations

import json
import sys
import time

import pytest
from django.utils import timezone

from pipeline import jobs, services, stage_host
from pipeline.models import AgentEvent, Stage, Task

STEADY = "import pathlib, time\nfor i in range(60):\n    print(f'LINE {i} {time.time():.6f}', flush=True)\n    time.sleep(0.1)\npathlib.Path('plan.md').write_text('#')\n"
FLOOD = "import pathlib, sys\nw = sys.stdout.write\nfor i in range(60000):\n    w(f'flood {i} ' + 'y' * 100 + '\\n')\npathlib.Path('plan.md').write_text('#')\n"
DEAF = "import pathlib, time\nprint('not reading stdin', flush=True)\ntime.sleep(8)\npathlib.Path('plan.md').write_text('#')\n"


def workflow(script: str, **options) -> str:
    opts = {"argv": [sys.executable, "-c", script], **options}
    return f"publish: none\nstages:\n  - name: planning\n    provider: command\n    timeout: 120\n    max_attempts: 1\n    options: {json.dumps(opts)}\n"


def started(repository, number: int, script: str, *, body: str = "", **options) -> Stage:
    task, _ = services.task_create(
        repository=repository,
        issue_number=number,
        title=f"t{number}",
        body=body,
        trigger_source="api",
        workflow_override=workflow(script, **options),
    )
    assert services.task_dispatch(task=task, enqueue=False), task.status_reason
    return Stage.objects.get(task=task, name="planning")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_deaf_and_a_flooding_agent_do_not_delay_another_attempts_events_or_lease(local_repository, settings):
    settings.TACX = {**settings.TACX, "HEARTBEAT_SECONDS": 0.5, "LEASE_SECONDS": 30}
    deaf = started(local_repository, 1, DEAF, body="x" * 400_000, stdin="prompt")
    flood = started(local_repository, 2, FLOOD)
    steady = started(local_repository, 3, STEADY)
    attempts = stage_host.Attempts(3)
    for stage in (deaf, flood, steady):
        assert attempts.start(stage.pk)

    delays: list[float] = []
    beats: list[float] = []  # when the steady stage's heartbeat was seen to move
    last_beat, seen, first_line, last_line = None, 0, float("inf"), 0.0
    deadline = time.monotonic() + 120
    while attempts.busy() and time.monotonic() < deadline:
        now = time.time()
        row = Stage.objects.filter(pk=steady.pk).values("status", "heartbeat_at").first()
        if row["status"] == Stage.Status.RUNNING and row["heartbeat_at"] != last_beat:
            last_beat = row["heartbeat_at"]
            beats.append(now)
        for event_id, data in AgentEvent.objects.filter(task=steady.task, kind=AgentEvent.Kind.OUTPUT, id__gt=seen).values_list(
            "id", "data"
        ):
            seen = max(seen, event_id)
            if str(data.get("text", "")).startswith("LINE "):
                delays.append(now - float(data["text"].split()[2]))
                first_line = min(first_line, float(data["text"].split()[2]))
                last_line = max(last_line, float(data["text"].split()[2]))
        time.sleep(0.1)
    assert attempts.join(timeout=30)

    for stage in (deaf, flood, steady):
        task = Task.objects.get(pk=stage.task_id)
        assert task.status == Task.Status.SUCCEEDED, f"{stage.task_id}: {task.status} {task.status_reason}"
    assert len(deaf.task.results.get().prompt) > 300_000  # its stdin feeder was stuck on a full pipe
    flooded = AgentEvent.objects.filter(task=flood.task, kind=AgentEvent.Kind.OUTPUT).count()
    assert flooded >= 60_000
    assert len(delays) == 60
    assert max(delays) < 1.5, f"the steady agent's lines were stored up to {max(delays):.2f} s after they were printed"
    # While its agent runs (from its first line on: before, the attempt prepares its worktree
    # and no agent is there to delay it), its heartbeat moves every period.
    running = [b for b in beats if b >= first_line]
    gaps = [b - a for a, b in zip(running, running[1:], strict=False)]
    # (Counted by the span the beats cover, not by their number: a loaded CI machine samples
    # fewer of them, but a heartbeat that stalls shows as a gap or as an end before the lines'.)
    assert len(running) >= 3, running
    assert running[0] - first_line <= 2.0 and last_line - running[-1] <= 2.0, (first_line, running, last_line)
    assert max(gaps) <= 2.0, f"the steady attempt's heartbeat stood still for {max(gaps):.2f} s"
    # The flood ran while the steady agent did: its events are from the same seconds.
    span = AgentEvent.objects.filter(task=flood.task, kind=AgentEvent.Kind.OUTPUT).order_by("id")
    assert span.first().created_at < timezone.now() and flooded


@pytest.mark.django_db(transaction=True)
def test_a_full_host_refuses_a_stage_and_queues_nothing_in_memory(local_repository, monkeypatch, settings):
    settings.TACX = {**settings.TACX, "STAGE_HOST_ATTEMPTS": 1}
    busy = started(local_repository, 1, DEAF)
    waiting = started(local_repository, 2, DEAF)
    attempts = stage_host.Attempts(1)
    assert attempts.start(busy.pk)
    assert stage_host.answer(attempts, waiting.pk) == "full"
    assert stage_host.answer(attempts, busy.pk) == "not_claimed" or Stage.objects.get(pk=busy.pk).status == Stage.Status.QUEUED
    assert stage_host.answer(attempts, waiting.pk, stopping=True) == "stopping"
    # The q2 job of a refused stage enqueues it again (for any host) and keeps nothing here.
    enqueued: list[int] = []
    monkeypatch.setattr("pipeline.services.progress.enqueue_stage_job", enqueued.append)
    monkeypatch.setattr(jobs, "REFUSE_PAUSE", 0.0)
    monkeypatch.setenv(stage_host.ENV, "/the-host-socket")  # as under run_workers
    monkeypatch.setattr(stage_host, "submit", lambda stage_id: stage_host.answer(attempts, stage_id))
    assert jobs.run_stage(waiting.pk) == "full"
    assert enqueued == [waiting.pk]
    assert Stage.objects.get(pk=waiting.pk).status == Stage.Status.QUEUED
    assert attempts.busy() == 1
    assert AgentEvent.objects.filter(task=waiting.task, data__message__icontains="refused by the stage host (full)").exists()
    assert attempts.join(timeout=60)
