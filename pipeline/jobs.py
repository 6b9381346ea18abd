"""django-q2 entry points. They take ids, not objects, and do nothing but hand the stage on:
q2 may deliver a job twice, and the claim inside `attempt.run_stage` makes the second delivery
a no-op. `task_run_inline` runs a task's stages in this process instead (run_task, tests, the demo).
The top floor of `pipeline`: with `stage_host`, the modules of the pipeline that run attempts.

The process model (README "Process model"): `run_stage` hands the stage to this machine's stage
host (pipeline.stage_host), which runs it in a thread next to its other attempts, and returns at
once. A host that is full, stopping, or not up (being restarted) refuses: the stage is enqueued
again for any host after REFUSE_PAUSE seconds, so nothing waits in a worker's memory and a
refusing host does not spin. With `TACX_STAGE_HOST_ATTEMPTS=0` (the previous model, kept for
the benchmark's baseline), and under a plain `manage.py qcluster` (no host), the attempt runs
in the job itself, one per q2 worker process.
"""

from __future__ import annotations

import os
import time

from . import attempt, graceful_stop, services, slots, stage_host
from .models import Stage, Task

REFUSE_PAUSE = 0.5  # seconds before a refused stage is enqueued again


def run_stage(stage_id: int) -> str:
    if graceful_stop.cluster_stopping():
        # Prefetched by a cluster that is stopping: another worker takes it now.
        services.stage_hand_back(stage_id=stage_id)
        return "handed_back"
    if slots.host_attempts() <= 0 or not os.environ.get(stage_host.ENV):
        # The previous model (or a plain `qcluster`, with no host): one attempt per worker.
        return attempt.run_stage(stage_id).value
    answer = stage_host.submit(stage_id)
    if answer in ("started", "not_claimed"):
        return answer
    time.sleep(REFUSE_PAUSE)
    services.stage_hand_back(stage_id=stage_id, why=f"refused by the stage host ({answer})")
    return answer


def task_run_inline(*, task: Task) -> Task:
    """Run every queued stage of a started task in this process (run_task, tests, demo)."""
    while True:
        stage = task.stages.filter(status=Stage.Status.QUEUED).order_by("position", "id").first()
        if stage is None:
            break
        attempt.run_stage(stage.pk, enqueue_next=False)
    task.refresh_from_db()
    return task
