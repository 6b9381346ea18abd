"""Cleaning up after failures: expired leases, orphaned agents, old worktrees.

Order matters for "never two agents for one stage": when a stage's lease has expired, this
host's agent process groups of that stage are killed *before* `services.stage_reap_expired`
records the attempt as "worker lost" and re-queues the stage (after commit, a new worker may
start the next attempt within a fraction of a second).

An agent runs in its own session, so it outlives a django-q2 worker killed with SIGKILL. Before
killing a process group recorded on a Worker row, `group_is_agents` checks it is still that
agent's: some process of the group works inside the task's worktree (or, with no worktree
recorded, the group's leader started after the Worker row). Process ids get reused; killing a
stranger's group is worse than leaving an orphan for the next scan.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from pipeline import git, services
from pipeline.agent_process import group_alive, group_members, kill_group
from pipeline.models import Stage, StageResult, Task, TaskWorktree, Worker
from pipeline.sandbox import leftovers

from .backoff import Backoff

log = logging.getLogger(__name__)

# Agents of attempts recorded as "worker lost" are looked for this long afterwards.
ORPHAN_LOOKBACK = timedelta(hours=6)


# --- which process group is whose ----------------------------------------------------------------


def process_start_time(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch), from /proc; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith(b"btime"))
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def group_is_agents(worker: Worker) -> bool:
    """True when process group `worker.pgid` is alive and is still this worker's agent."""
    pgid = worker.pgid
    if not pgid or not group_alive(pgid):
        return False
    members = group_members(pgid) or []
    worktree = (worker.stage.task.worktree_path if worker.stage_id else "") or ""
    if worktree:
        root = os.path.realpath(worktree)
        for pid in members:
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd == root or cwd.startswith(root + os.sep):
                return True
        return False
    started = process_start_time(pgid)
    return started is not None and started >= worker.started_at.timestamp() - 2


def kill_agent(worker: Worker, why: str) -> bool:
    """Kill the worker's agent process group if it is still that agent; True if it was."""
    if not group_is_agents(worker):
        return False
    log.warning("killing orphaned agent process group %s of %s (stage %s): %s", worker.pgid, worker.name, worker.stage_id, why)
    kill_group(worker.pgid, settings.TACX["KILL_GRACE_SECONDS"])
    return True


# --- the steps -----------------------------------------------------------------------------------


def reap_one_stage(*, host: str) -> bool:
    """Kill this host's agents of lease-expired stages, then reap one such stage (attempt
    recorded "worker lost", stage re-queued up to its attempt limit). True if one was reaped."""
    now = timezone.now()
    expired = Stage.objects.filter(status=Stage.Status.RUNNING, lease_expires_at__lt=now)
    if not expired.exists():
        return False
    local = Worker.objects.filter(
        kind=Worker.Kind.AGENT, host=host, stage__in=expired, exited_at__isnull=True, pgid__isnull=False
    ).select_related("stage__task")
    for worker in local:
        kill_agent(worker, "its lease expired")
    # Not inside an outer transaction: the reaper enqueues each re-queued stage on commit.
    reaped = services.stage_reap_expired(now=now, limit=1)
    for result in reaped:
        log.warning("stage %s attempt %s: worker lost; %s", result.stage_id, result.attempt, result.error)
    return bool(reaped)


class LostJobFinder:
    """Re-enqueues queued stages whose django-q2 job was lost before the claim (see
    `services.stage_requeue_lost`). Looks at most every `interval` seconds: reading the broker's
    queue decodes every job."""

    def __init__(self, *, interval: float = 5.0):
        self.interval = interval
        self._next_scan = 0.0

    def requeue_lost_jobs(self, *, force: bool = False) -> bool:
        if not force and time.monotonic() < self._next_scan:
            return False
        self._next_scan = time.monotonic() + self.interval
        requeued = services.stage_requeue_lost(older_than=settings.TACX["LOST_JOB_SECONDS"])
        for stage_id in requeued:
            log.warning("stage %s: its q2 job was lost before the stage was claimed; enqueued again", stage_id)
        return bool(requeued)


class OrphanKiller:
    """Finds agent process groups on this host that no running stage owns any more: the
    worker died and another coordinator (or host) reaped the stage, or the runner vanished
    after its stage moved on. Scans at most every `interval` seconds; a worker found dead is
    not looked at again by this process. Every `dirs_interval` seconds it also removes the
    sandbox server directories of this host's dead workers (pipeline.sandbox.leftovers)."""

    def __init__(self, *, host: str, interval: float = 5.0, dirs_interval: float = 60.0):
        self.host = host
        self.interval = interval
        self.dirs_interval = dirs_interval
        self._next_scan = 0.0
        self._next_dirs_scan = 0.0
        self._dead: set[int] = set()

    def reap_sandbox_dirs(self, *, force: bool = False) -> list[Path]:
        if not force and time.monotonic() < self._next_dirs_scan:
            return []
        self._next_dirs_scan = time.monotonic() + self.dirs_interval
        return leftovers.reap(settings.TACX.get("SANDBOX_TMP") or None)

    def kill_one_orphan(self, *, force: bool = False) -> bool:
        self.reap_sandbox_dirs(force=force)
        if not force and time.monotonic() < self._next_scan:
            return False
        self._next_scan = time.monotonic() + self.interval
        since = timezone.now() - ORPHAN_LOOKBACK
        lost = StageResult.objects.filter(outcome=StageResult.Outcome.WORKER_LOST, completed_at__gte=since).values("worker_id")
        candidates = (
            Worker.objects.filter(kind=Worker.Kind.AGENT, host=self.host, pgid__isnull=False)
            .filter(Q(exited_at__isnull=True) | Q(pk__in=lost))
            .exclude(stage__status=Stage.Status.RUNNING, stage__lease_owner=F("name"))
            .exclude(pk__in=self._dead)
            .select_related("stage__task")
            .order_by("-id")[:100]
        )
        killed = False
        for worker in candidates:
            if kill_agent(worker, "no running stage owns it"):
                killed = True
            self._dead.add(worker.pk)
        return killed


def clean_one_worktree(*, backoff: Backoff, host: str | None = None) -> bool:
    """Remove one worktree this machine holds of a task finished longer ago than the retention.
    Every machine that ran a stage of a task holds a worktree of it (TaskWorktree); each
    machine's coordinator removes its own."""
    host = host or socket.gethostname()
    cutoff = timezone.now() - timedelta(hours=settings.TACX["WORKTREE_RETENTION_HOURS"])
    rows = (
        TaskWorktree.objects.filter(
            host=host, removed_at__isnull=True, task__status__in=Task.FINISHED, task__finished_at__lt=cutoff
        )
        .select_related("task__repository")
        .order_by("task__finished_at")[:20]
    )
    for row in rows:
        if _remove(row.task, backoff, key=("worktree", row.task_id, row.pk), worktree=row):
            return True
    # Tasks from before TaskWorktree rows: the machine of their last stage.
    legacy = (
        Task.objects.filter(
            status__in=Task.FINISHED, finished_at__lt=cutoff, worktree_removed_at__isnull=True, worktrees__isnull=True
        )
        .filter(worktree_host__in=["", host])
        .exclude(worktree_path="")
        .select_related("repository")
        .order_by("finished_at")[:20]
    )
    if any(_remove(task, backoff, key=("worktree", task.pk), host=host) for task in legacy):
        return True
    # Worktrees of machines that never came back: nobody else can remove them (README "Many machines").
    if services.worktrees_of_lost_machines_expire(lost_after_hours=settings.TACX["LOST_MACHINE_HOURS"]):
        return True
    # A task's git directory whose worktree is gone (deleted by hand, or a machine that died
    # between creating the one and the other).
    orphan = git.remove_orphan_store(Path(settings.TACX["WORKTREE_ROOT"]), older_than=3600)
    if orphan is not None:
        log.info("task git directory %s removed: its worktree is gone", orphan.name)
        return True
    return False


def _remove(task: Task, backoff: Backoff, *, key, worktree: TaskWorktree | None = None, host: str | None = None) -> bool:
    if not backoff.ready(key):
        return False
    path = worktree.path if worktree is not None else task.worktree_path
    try:
        removed = services.task_worktree_remove(task=task, worktree=worktree, host=host)
    except Exception:
        log.exception("task %s: removing worktree %s failed", task.pk, path)
        removed = False
    if removed:
        log.info("task %s: worktree %s removed", task.pk, Path(path).name)
        return True
    backoff.failed(key)
    return False
