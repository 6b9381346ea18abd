"""Where a task's worktrees are, on which machine, and removing them (with the cleanup hook)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import socket
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from .. import git, hooks, live, repos, sandbox
from ..lib.redaction import redact_data
from ..models import AgentEvent, Task, TaskWorktree, Worker
from ..sandbox import toolchains
from ..workflow import Workflow, WorkflowError
from .candidates import candidate_branches_remove

log = logging.getLogger(__name__)


def task_worktree_record(*, task: Task, host: str, path: str) -> None:
    """Note that `host` holds a worktree of `task` at `path` (before it is created: a machine
    that dies while creating it still has its clean-up recorded)."""
    row, created = TaskWorktree.objects.get_or_create(task=task, host=host, path=path)
    if not created and row.removed_at is not None:
        TaskWorktree.objects.filter(pk=row.pk).update(removed_at=None)
    if task.worktree_removed_at is not None:
        Task.objects.filter(pk=task.pk).update(worktree_removed_at=None)
        task.worktree_removed_at = None


def task_worktree_remove(*, task: Task, worktree=None, host: str | None = None) -> bool:
    """Remove a finished task's worktree from this machine and record when.

    `worktree` is one TaskWorktree row of this machine; without it, every row of `host` (this
    machine by default), or, for a task from before such rows, its `worktree_path`. The task's
    `worktree_removed_at` is set once no machine holds a worktree of it any more. False (and
    nothing recorded) while the task is active, or when nothing was removed. A directory is
    deleted even if git no longer knows it, but only inside the worktree root.
    """
    if task.is_active:
        return False
    candidate_branches_remove(task=task)  # best of N: kept until the task ended
    if worktree is not None:
        rows = [worktree] if worktree.removed_at is None else []
    else:
        rows = list(task.worktrees.filter(host=host or socket.gethostname(), removed_at__isnull=True))
        if not rows and not task.worktrees.exists():
            if not task.worktree_path or task.worktree_removed_at:
                return False
            if not _worktree_delete(task=task, path=task.worktree_path):
                return False
            return _worktree_removed_mark(task=task)
    removed = False
    for row in rows:
        if not _worktree_delete(task=task, path=row.path):
            continue
        removed |= bool(TaskWorktree.objects.filter(pk=row.pk, removed_at__isnull=True).update(removed_at=timezone.now()))
    if removed and not task.worktrees.filter(removed_at__isnull=True).exists():
        _worktree_removed_mark(task=task)
    return removed


def _worktree_delete(*, task: Task, path: str) -> bool:
    """Delete one worktree directory of this machine (its cleanup hook first); True when gone."""
    path = Path(path)
    if path.exists():
        _cleanup_hook(task=task, path=path)
        try:
            repo_dir = repos.source_dir(task.repository, fetch=False)
        except git.GitError as exc:
            log.warning("task %s: no mirror to lock while removing worktree %s: %s", task.pk, path, exc)
            repo_dir = None
        # The worktree and the task's own git directory (its task store) go together.
        git.worktree_remove(repo_dir, path)
        root = Path(settings.TACX["WORKTREE_ROOT"]).resolve()
        if path.exists() and path.resolve().parent == root:
            shutil.rmtree(path, ignore_errors=True)
    return not path.exists()


def _worktree_removed_mark(*, task: Task) -> bool:
    now = timezone.now()
    done = Task.objects.filter(pk=task.pk, status__in=Task.FINISHED, worktree_removed_at__isnull=True).update(
        worktree_removed_at=now
    )
    if done:
        task.worktree_removed_at = now
    return bool(done)


def _cleanup_hook(*, task: Task, path) -> None:
    """The workflow's `cleanup` hook, before the worktree goes, in the sandbox like every hook
    (the worktree holds what the agent wrote: a Makefile's `clean` target is the agent's code); no
    git directory in its view. A failure is logged only."""
    try:
        workflow = Workflow.from_json(task.workflow) if task.workflow else None
    except WorkflowError:
        workflow = None
    hook = workflow.hook("cleanup") if workflow is not None else None
    if hook is None:
        return
    try:
        found = toolchains.resolve(workflow.toolchains)
    except toolchains.ToolchainError as exc:
        log.warning("task %s: cleanup hook without its toolchains: %s", task.pk, exc)
        found = []
    context = {
        "task_id": task.pk,
        "issue_number": task.issue_number,
        "repository": task.repository.full_name,
        "branch": task.branch,
    }
    env = hooks.hook_environment("cleanup", workflow=workflow, worktree=path, context=context, toolchains=found)
    boxes = None
    blocked: list[dict] = []
    try:
        if sandbox.enabled():
            boxes = sandbox.command_boxes(
                worktree=Path(path),
                git_access=None,
                allow_hosts=hook.network_allow,
                extra_read=toolchains.read_paths(found),
                extra_write=settings.TACX.get("SANDBOX_HOOK_WRITE", []),
            )
        wrap = boxes.wrap if boxes else None
        probed = hooks.interpreters(list(dict.fromkeys([*hooks.PROBED, *workflow.toolchains])), cwd=path, env=env, wrap=wrap)
        run = dataclasses.replace(
            hooks.run_hook(hook, cwd=path, env=env, grace=settings.TACX["KILL_GRACE_SECONDS"], wrap=wrap), interpreters=probed
        )
    except sandbox.SandboxUnavailable as exc:
        event = AgentEvent.objects.create(
            task=task,
            kind=AgentEvent.Kind.ERROR,
            data={"hook": "cleanup", "status": "error", "message": f"cleanup not run: {exc}"},
        )
        live.notify_after_commit(task.pk, event.pk)
        log.warning("task %s: cleanup hook not run: %s", task.pk, exc)
        return
    finally:
        if boxes is not None:
            blocked = boxes.close()
    for entry in blocked:
        AgentEvent.objects.create(task=task, kind=AgentEvent.Kind.SANDBOX, data={**entry, "hook": "cleanup"})
    kind = AgentEvent.Kind.SYSTEM if run.ok else AgentEvent.Kind.ERROR
    event = AgentEvent.objects.create(task=task, kind=kind, data=redact_data(run.event_data()))
    live.notify_after_commit(task.pk, event.pk)
    if not run.ok:
        log.warning("task %s: cleanup hook %s", task.pk, run.summary())


def worktrees_of_lost_machines_expire(*, lost_after_hours: float, now=None) -> int:
    """Record as removed the worktrees of machines that never came back: rows of finished tasks
    on a host with no Worker row (its coordinator, stage host or q2 workers) heard from for
    `lost_after_hours` (TACX_LOST_MACHINE_HOURS), past the retention too. Nothing is deleted (the
    machine is gone); a task whose last row this was gets `worktree_removed_at`. Returns the
    number of rows expired."""
    now = now or timezone.now()
    since = now - timedelta(hours=lost_after_hours)
    alive = Worker.objects.filter(heartbeat_at__gte=since).values_list("host", flat=True).distinct()
    rows = TaskWorktree.objects.filter(
        removed_at__isnull=True, task__status__in=Task.FINISHED, task__finished_at__lt=since, created_at__lt=since
    ).exclude(host__in=alive)
    tasks = set(rows.values_list("task_id", flat=True)[:500])
    expired = TaskWorktree.objects.filter(pk__in=list(rows.values_list("pk", flat=True)[:500])).update(removed_at=now)
    for task in Task.objects.filter(pk__in=tasks):
        if not task.worktrees.filter(removed_at__isnull=True).exists():
            _worktree_removed_mark(task=task)
    return expired
