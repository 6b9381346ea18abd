"""django-q2 entry points. They take ids, not objects, and do nothing but call the runner:
q2 may deliver a job twice, and the claim inside `run_stage` makes the second delivery a no-op."""

from __future__ import annotations

from . import runner


def run_stage(stage_id: int) -> str:
    return runner.run_stage(stage_id).value
