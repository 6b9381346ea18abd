"""The first step: the task's worktree on this machine, at the head the previous stage left (fetched
from the origin, whichever machine ran it), with the setup hook run once per fresh copy."""

from __future__ import annotations

import socket
from pathlib import Path

from django.conf import settings

from .. import git, hooks, repos, services
from ..lib.candidates import candidate_branch, candidate_worktree_name
from ..models import Stage, Task
from .commands import run_repository_command
from .context import AttemptContext, StageFailure, _tail
from .memory import MEMORY_FILE


def prepare_worktree(self: AttemptContext) -> Path:
    task, repository = self.task, self.task.repository
    path = git.worktree_path(settings.TACX["WORKTREE_ROOT"], repository.full_name, task.issue_number, task.pk)
    # Another machine may have run the earlier stages: fetch before every stage (not only
    # when this machine has no worktree yet), so the head they pushed is here.
    repo_dir = repos.source_dir(repository, fetch=repos.stage_needs_fetch(repository, task))
    changed = []
    if not task.branch:
        task.branch = git.branch_name(task.issue_number, task.title)
        changed.append("branch")
    if not task.base_commit:
        task.base_commit = git.resolve(repo_dir, repos.base_ref(repository))
        changed.append("base_commit")
    if not task.head_commit and not task.stages.filter(status=Stage.Status.SUCCEEDED).exists():
        task.head_commit = task.base_commit  # a new branch starts at its base
        changed.append("head_commit")
    if task.worktree_path != str(path) and not self.stage.parent_id:
        task.worktree_path = str(path)
        changed.append("worktree_path")
    if task.worktree_host != socket.gethostname():
        # The latest stage's machine (every machine's worktree is in TaskWorktree).
        task.worktree_host = socket.gethostname()
        changed.append("worktree_host")
    if changed:
        task.save(update_fields=changed)
    branch = task.branch
    if self.stage.parent_id:
        # A candidate: its own worktree and branch (pipeline.lib.candidates), from the same head.
        path = path.with_name(candidate_worktree_name(path.name, self.stage.candidate))
        branch = self.stage.candidate_info.get("branch") or candidate_branch(task.branch, self.stage.candidate)
    self.branch = branch
    created = not (path / ".git").exists()
    services.task_worktree_record(task=task, host=socket.gethostname(), path=str(path))
    if task.head_commit:
        # Start exactly where the previous stage left the branch (whichever machine ran it),
        # or at a fast-forward of it on the origin; never on this machine's own stale copy.
        start = task.head_commit
        pushed = repos.pushed_head(repository, repo_dir, branch)
        if pushed and pushed != start and git.is_ancestor(repo_dir, start, pushed):
            start = pushed
        git.worktree_at(repo_dir, path, branch, start)
    else:
        # A task that was already running before head commits were recorded.
        git.worktree_add(repo_dir, path, branch, task.base_commit)
    self.repo_dir = repo_dir
    self.worktree = path
    # The memory file an agent leaves is TAC-X's to read and remove, never part of a commit.
    environment = (*self.workflow.environment, MEMORY_FILE) if self.workflow.memory else self.workflow.environment
    git.write_excludes(path, environment=environment)
    setup = self.workflow.hook("setup")
    host = socket.gethostname()
    # Once per worktree: when it was just (re-)created, or when the last successful setup
    # happened on another machine (this one's copy never ran it).
    if setup is not None and (created or task.setup_host != host):
        if task.setup_host:
            Task.objects.filter(pk=task.pk).update(setup_host="")
            task.setup_host = ""
        run = run_repository_command(self, setup)
        assert run is not None
        if not run.ok:
            hint = run.network_hint() or hooks.missing_program_hint(run)
            raise StageFailure(f"setup hook {run.status}: " + (f"{hint}. Output: " if hint else "") + _tail(run.output), permanent=True)
        # What setup made (a venv, node_modules, build output) stays out of every commit.
        git.write_excludes(path, environment=environment, setup=git.untracked_paths(path))
        Task.objects.filter(pk=task.pk).update(setup_host=host)
        task.setup_host = host
    return path
