"""What every step of an attempt shares: the context built once (`AttemptContext`), how an attempt
ends (`RunResult`, `StageFailure`), the worker's name, and the attempt's view of the repository's
git directory."""

from __future__ import annotations

import enum
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import git, hooks, sandbox, worktree_reads
from ..models import BudgetPause, Round, Stage, StageResult, Task, Worker
from ..workflow import StageConfig, Workflow
from .recorder import EventRecorder


class RunResult(enum.Enum):
    NOT_CLAIMED = "not_claimed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REQUEUED = "requeued"
    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    PAUSED = "paused"  # a budget that pauses stopped it: the task waits for a person
    FANNED_OUT = "fanned_out"  # best of N: its candidates were started as stage jobs of their own


class StageFailure(Exception):
    """The attempt failed for a reason worth telling the user."""

    def __init__(self, message: str, *, outcome: str = StageResult.Outcome.FAILED, permanent: bool = False):
        super().__init__(message)
        self.outcome = outcome
        self.permanent = permanent


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:]) or "(no output)"


def git_access(self: AttemptContext) -> sandbox.GitAccess | None:
    """The task's own git directory and the mirror objects it borrows (TAC-X's pinned view)."""
    assert self.worktree is not None
    pinned = git.pinned_dirs(self.worktree)
    if not pinned:
        return None
    borrowed = git.borrowed_objects(self.worktree)
    return sandbox.GitAccess(store=Path(pinned["GIT_DIR"]), borrowed=(borrowed,) if borrowed else ())


@dataclass
class AttemptContext:
    """What every step of one attempt reads and fills in, built once in `run_stage`. The steps
    are functions of their own modules that take it as `self` (they were its methods); what the
    attempt writes while it runs goes through `recorder`."""

    stage: Stage
    task: Task
    cfg: StageConfig
    workflow: Workflow
    result: StageResult
    owner: str
    worker: Worker
    followup: Round | None = None
    verdict: str = ""
    tests: hooks.HookRun | None = None
    worktree: Path | None = None
    repo_dir: Path | None = None
    box_root: Path | None = None
    handback: worktree_reads.Reader | None = None  # the gate's reader of this worktree (attempt.readback)
    memory_proposals: list[str] = field(default_factory=list)  # read back from the memory file (attempt.memory)
    # Set when a budget that pauses stopped this attempt (its `stopping` row): finish_attempt
    # pauses the task instead of failing it.
    pause: BudgetPause | None = None
    # The raised budget pause this attempt goes on from (its stopped attempt's session, the note
    # in its prompt), or None.
    continues: BudgetPause | None = None
    resumes_session: bool = False  # the agent step resumes a CLI session (its prompt is shorter)
    # Best of N: the branch this attempt works on (a candidate's own, else the task's), a prompt
    # given instead of the stage's (the judge's), and whether this attempt is the selection.
    branch: str = ""
    prompt_text: str = ""
    selecting: bool = False
    recorder: EventRecorder = None  # type: ignore[assignment]  # made from the fields above

    def __post_init__(self) -> None:
        if self.recorder is None:
            self.recorder = EventRecorder(task=self.task, stage=self.stage, result=self.result, worker=self.worker, owner=self.owner)

    @property
    def box(self) -> sandbox.Box | None:
        """The agent's sandbox (held by the recorder, which records what it refused)."""
        return self.recorder.box

    @box.setter
    def box(self, value: sandbox.Box | None) -> None:
        self.recorder.box = value
