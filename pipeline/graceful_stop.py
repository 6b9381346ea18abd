"""A stopping django-q2 cluster hands its prefetched stages back instead of running them.

q2's graceful stop (SIGTERM) stops fetching, then lets its workers run every job already
prefetched into the cluster's queue before they exit: 53 s to stop a cluster of 20 s stages,
while other machines sat idle. `manage.py run_workers` (q2's `qcluster` with this) marks the
cluster as stopping when it gets the signal; a stage job taken from its queue afterwards does
not claim the stage but enqueues it again at once for any other cluster (or this one after its
restart). The stage that a worker is already running finishes as before.

The mark is a file under `var/q2/` named after the cluster's main process, whose pid every
process of the cluster inherits in TACX_Q_MASTER_PID.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

ENV = "TACX_Q_MASTER_PID"


def _flag(pid: int) -> Path:
    return Path(settings.VAR_DIR) / "q2" / f"stopping-{pid}"


def mark_stopping(pid: int) -> None:
    path = _flag(pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def clear(pid: int) -> None:
    _flag(pid).unlink(missing_ok=True)


def cluster_stopping() -> bool:
    """True in a worker of a cluster that `run_workers` was asked to stop."""
    pid = os.environ.get(ENV)
    return bool(pid) and _flag(int(pid)).exists()
