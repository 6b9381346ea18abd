"""The diff beside the transcript: the worktree's changes against the task's base while it runs
(`pipeline.worktree_diff`, read through the hand-back gate), the pushed branch's once it is done;
per file. The page fetches this partial again (debounced) when the event stream says the agent
did something, so an idle task costs nothing and a busy one at most one diff every few seconds
per viewer; viewers of the same task share it while no new event arrived."""

from __future__ import annotations

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from pipeline import worktree_diff
from pipeline.models import Task

from . import selectors, streams
from .access import page_view

# Viewers of one task share a computed live diff while no new event arrived (a few seconds).
CACHE_SECONDS = 5


def branch_files(task: Task) -> dict:
    """The pushed branch's diff per file (the final diff), or why there is none."""
    diff = selectors.task_diff(task)
    if diff is None:
        return {"diff_files": None, "diff_error": "", "diff_truncated": False}
    return {"diff_files": worktree_diff.patch_files(diff.text), "diff_error": diff.error, "diff_truncated": diff.truncated}


def live_context(task: Task) -> dict:
    if task.is_active and task.worktree_path and not task.worktree_removed_at:
        key = f"tacx-live-diff:{task.pk}:{task.base_commit}:{streams.latest_id(task_id=task.pk)}"
        live = cache.get(key)
        if live is None:
            live = worktree_diff.worktree_diff(worktree=task.worktree_path, base=task.base_commit)
            if live is not None:
                cache.set(key, live, CACHE_SECONDS)
        if live is not None:
            return {
                "task": task,
                "source": "worktree",
                "diff_files": live.files,
                "diff_error": live.error,
                "diff_more": live.more,
            }
    return {"task": task, "source": "branch", **branch_files(task)}


@page_view("pipeline.view_task", require_GET, never_cache)
def task_live_diff(request: HttpRequest, task_id: int) -> HttpResponse:
    return render(request, "dashboard/partials/live_diff.html", live_context(selectors.task_get(task_id)))
