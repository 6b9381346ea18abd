"""django-q2 entry points. They take ids, not objects, and do nothing but call the runner:
q2 may deliver a job twice, and the claim inside `run_stage` makes the second delivery a no-op.
`task_run_inline` runs a task's stages in this process instead (run_task, tests, the demo).
The top floor of `pipeline`: the one module of the pipeline that runs attempts."""

from __future__ import annotations

from . import attempt, graceful_stop, services
from .models import Stage, Task


def run_stage(stage_id: int) -> str:
    if graceful_stop.cluster_stopping():
        # Prefetched by a cluster that is stopping: another worker takes it now.
        services.stage_hand_back(stage_id=stage_id)
        return "handed_back"
    return attempt.run_stage(stage_id).value


def task_run_inline(*, task: Task) -> Task:
    """Run every queued stage of a started task in this process (run_task, tests, demo)."""
    while True:
        stage = task.stages.filter(status=Stage.Status.QUEUED).order_by("position", "id").first()
        if stage is None:
            break
        attempt.run_stage(stage.pk, enqueue_next=False)
    task.refresh_from_db()
    return task
