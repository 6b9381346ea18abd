"""What every step of an attempt shares: how an attempt ends (`RunResult`, `StageFailure`), the
lease deadline, the worker's name, and the attempt's view of the repository's git directory."""

from __future__ import annotations

import enum
import os
import socket
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now

from .. import git, sandbox
from ..models import StageResult

if TYPE_CHECKING:
    from .steps import Attempt


class RunResult(enum.Enum):
    NOT_CLAIMED = "not_claimed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REQUEUED = "requeued"
    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"


class StageFailure(Exception):
    """The attempt failed for a reason worth telling the user."""

    def __init__(self, message: str, *, outcome: str = StageResult.Outcome.FAILED, permanent: bool = False):
        super().__init__(message)
        self.outcome = outcome
        self.permanent = permanent


def lease_expiry():
    """Lease deadlines use the database clock, so hosts with skewed clocks agree."""
    return ExpressionWrapper(Now() + timedelta(seconds=settings.TACX["LEASE_SECONDS"]), output_field=DateTimeField())


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:]) or "(no output)"


def git_access(self: Attempt) -> sandbox.GitAccess | None:
    """What of the repository's git directory the agent may use (TAC-X's pinned view)."""
    assert self.worktree is not None
    pinned = git.pinned_dirs(self.worktree)
    if not pinned:
        return None
    return sandbox.GitAccess(common=Path(pinned["GIT_COMMON_DIR"]), admin=Path(pinned["GIT_DIR"]), branch=self.task.branch)
