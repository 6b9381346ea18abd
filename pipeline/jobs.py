"""django-q2 entry points. They take ids, not objects, and do nothing but call the runner:
q2 may deliver a job twice, and the claim inside `run_stage` makes the second delivery a no-op."""

from __future__ import annotations

from . import graceful_stop, runner, services


def run_stage(stage_id: int) -> str:
    if graceful_stop.cluster_stopping():
        # Prefetched by a cluster that is stopping: another worker takes it now.
        services.stage_hand_back(stage_id=stage_id)
        return "handed_back"
    return runner.run_stage(stage_id).value
