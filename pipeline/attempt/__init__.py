"""One attempt of one stage, start to finish (this package was `pipeline.runner`).

`run_stage(stage_id)` (in `run`) claims the stage, opens the attempt's row, builds the
`Attempt` (the context every step reads) and calls `Attempt.execute()`, which runs the steps in
order (`steps`): prepare the worktree (`worktree`), the before_stage hook (`commands`), the
agent (`agent`, with its prompt from `prompt`), the evidence check (`evidence`), the
after_stage hook, the tests (`commands`) and the push; pr_creation opens the pull request
instead (`publish`). What the attempt writes while it runs (events, totals, the lease, riding
out a database outage) goes through its `EventRecorder` (`recorder`). `finish_attempt` records
the result and moves the task along.

This is the floor above `pipeline.services`: it may import services and everything below;
only `pipeline.jobs` and the management commands import it.
"""

from .context import AttemptContext, RunResult, StageFailure, worker_name
from .evidence import PLAN_FILE, REVIEW_FILE, VERDICT
from .recorder import EventRecorder, lease_expiry
from .run import finish_attempt, run_stage
from .steps import Attempt

__all__ = [
    "PLAN_FILE",
    "REVIEW_FILE",
    "VERDICT",
    "Attempt",
    "AttemptContext",
    "EventRecorder",
    "RunResult",
    "StageFailure",
    "finish_attempt",
    "lease_expiry",
    "run_stage",
    "worker_name",
]
