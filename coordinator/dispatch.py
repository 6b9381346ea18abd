"""Dispatch: start queued tasks, oldest first, while fewer than the limits run.

Limits: `TACX["MAX_CONCURRENT_TASKS"]` running tasks in all, `Repository.max_concurrent_tasks`
per repository, and no more than the live stage slots (attempts, not processes: `admission_limit`).
A round (`start_round`) sets its task running again, so it is admitted under the same lock and
limits as a new task: rounds count against MAX_CONCURRENT_TASKS too. A task whose repository (or the whole installation) has used up its daily
budget is set `waiting` with the reason and looked at again every WAITING_RECHECK_SECONDS; it
starts (or goes back to `queued`) once the reason is gone.

Counting and starting happen while holding the `dispatch` lock row (SELECT ... FOR UPDATE; on
SQLite the immediate transaction locks the file), so two coordinators cannot both see "3 of 4
running" and start two. `task_dispatch` itself is conditional on the task being queued, so a
task is never started twice either way.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import transaction
from django.db.models import Count

from pipeline import budgets, git, repos, services, slots
from pipeline.models import Round, Task
from pipeline.services import rounds

from .backoff import Backoff
from .models import CoordinatorLock

log = logging.getLogger(__name__)

WAITING_RECHECK_SECONDS = 30.0
CANDIDATES_PER_PASS = 50


def admission_limit() -> int:
    """How many tasks may run: MAX_CONCURRENT_TASKS, and no more than the stage slots of the live
    django-q2 clusters (pipeline.slots) once any has reported. A running task holds a slot
    between its stages too, so its next stage is served before a new task's first one: tasks
    finish one after another instead of all together at the end."""
    limit = settings.TACX["MAX_CONCURRENT_TASKS"]
    if settings.TACX.get("ADMIT_BY_SLOTS", True):
        live = slots.live_slots()
        if live:
            limit = min(limit, live)
    return limit


def full(repository) -> bool:
    """Inside the dispatch lock: True when one more running task (or round) would pass a limit."""
    running = Task.objects.filter(status=Task.Status.RUNNING)
    if running.count() >= admission_limit():
        return True
    return running.filter(repository_id=repository.pk).count() >= repository.max_concurrent_tasks


def start_round(round_: Round) -> str:
    """Start a queued round (`rounds.round_start`) if the limits allow one more running task;
    "full" when they do not (it stays queued)."""
    CoordinatorLock.objects.get_or_create(name="dispatch")
    with transaction.atomic():
        CoordinatorLock.objects.select_for_update().get(name="dispatch")
        if full(round_.task.repository):
            return "full"
        return rounds.round_start(round_=round_)


class Dispatcher:
    """Holds what dispatching remembers between passes: when each waiting task was last
    checked, and which tasks crashed while being started (backed off)."""

    def __init__(self, *, backoff: Backoff | None = None, waiting_recheck: float = WAITING_RECHECK_SECONDS):
        self.backoff = backoff or Backoff(base=5.0, cap=600.0)
        self.waiting_recheck = waiting_recheck
        self._waiting_checked: dict[int, float] = {}

    def dispatch_one_task(self) -> bool:
        """Start, hold or release one task. Returns True when it changed something (call again
        at once), False when nothing can be started now."""
        limit = admission_limit()
        rows = Task.objects.filter(status=Task.Status.RUNNING).order_by().values("repository_id").annotate(n=Count("id"))
        running = {row["repository_id"]: row["n"] for row in rows}
        if sum(running.values()) >= limit:
            return False
        candidates = (
            Task.objects.filter(status__in=[Task.Status.QUEUED, Task.Status.WAITING], repository__enabled=True)
            .select_related("repository")
            .order_by("created_at", "id")[:CANDIDATES_PER_PASS]
        )
        now = time.monotonic()
        for task in candidates:
            if running.get(task.repository_id, 0) >= task.repository.max_concurrent_tasks:
                continue
            if not self.backoff.ready(("task", task.pk)):
                continue
            if task.status == Task.Status.WAITING and now - self._waiting_checked.get(task.pk, -1e9) < self.waiting_recheck:
                continue
            try:
                reason = budgets.repository_waiting_reason(task)
                if reason:
                    self._waiting_checked[task.pk] = now
                    if services.task_hold(task=task, reason=reason):
                        return True
                    continue
                self._waiting_checked.pop(task.pk, None)
                if task.status == Task.Status.WAITING:
                    services.task_release(task=task)  # no stale reason while it waits for a slot
                return self.start(task)
            except Exception:
                delay = self.backoff.failed(("task", task.pk))
                log.exception("task %s: could not be dispatched; trying again in %.0f s", task.pk, delay)
                return True
        return False

    def start(self, task: Task) -> bool:
        """Start `task` if the limits still allow it once the dispatch lock is held."""
        # Bring the mirror up to date before taking the lock: `task_dispatch` reads the
        # workflow from it, and under the lock that should be a quick no-op fetch, not a
        # download (on SQLite the lock is the whole database's write lock).
        try:
            repos.source_dir(task.repository)
        except git.GitError as exc:
            if not exc.permanent:
                delay = self.backoff.failed(("task", task.pk))
                log.warning("task %s: repository not readable yet (%s); trying again in %.0f s", task.pk, exc, delay)
                return True
        # The workflow is read and parsed before the lock too: a slow or hostile file must not
        # hold every other repository's dispatch (an invalid one fails the task here).
        workflow = services.task_workflow_read(task=task)
        if workflow is None:
            task.refresh_from_db()
            if task.status in (Task.Status.QUEUED, Task.Status.WAITING):
                delay = self.backoff.failed(("task", task.pk))
                log.warning("task %s: not started (repository not readable yet); trying again in %.0f s", task.pk, delay)
            return True
        CoordinatorLock.objects.get_or_create(name="dispatch")
        with transaction.atomic():
            CoordinatorLock.objects.select_for_update().get(name="dispatch")
            if full(task.repository):
                return False
            task.refresh_from_db()
            if task.status not in (Task.Status.QUEUED, Task.Status.WAITING):
                return True  # someone else started or cancelled it: look again
            started = services.task_dispatch(task=task, workflow=workflow)
        if started:
            self.backoff.succeeded(("task", task.pk))
            log.info("task %s (%s#%s) started", task.pk, task.repository, task.issue_number)
            return True
        task.refresh_from_db()
        if task.status in (Task.Status.QUEUED, Task.Status.WAITING):
            # Not failed, not started: the repository could not be read just now (transient).
            delay = self.backoff.failed(("task", task.pk))
            log.warning("task %s: not started (repository not readable yet); trying again in %.0f s", task.pk, delay)
        return True
