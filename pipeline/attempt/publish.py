"""The pr_creation stage, done by TAC-X itself (never by an agent): the remaining changes committed
and pushed, and the pull request opened through the forge (`pipeline.pulls`)."""

from __future__ import annotations

from .. import git, publish_guard, pulls, repos, services
from . import readback
from .context import AttemptContext


def create_pull_request(self: AttemptContext) -> None:
    assert self.worktree is not None
    readback.commit_all(self, f"tacx: remaining changes for #{self.task.issue_number}")
    publish_branch(self)
    body = pulls.pull_request_body(self.task)
    self.result.output_text = body
    self.result.output_file = "pull request body"
    url, number = pulls.pull_request_open(task=self.task, body=body)
    services.pull_opened_record(task=self.task, url=url, number=number)


def push_branch(self: AttemptContext) -> None:
    """The last step: the branch pushed when the stage moved its head."""
    self.result.head_commit = git.head(self.worktree)
    if self.result.head_commit != self.result.base_commit:
        publish_branch(self)


def publish_branch(self: AttemptContext, *, force: bool = False) -> None:
    """Every push of the task's branch: the gate's check of what is pushed (no symlink out of the
    worktree, no unexpected submodule), the publish guard (no secret TAC-X holds, raw or
    encoded), then the push from the task's own git directory through the mirror."""
    assert self.worktree is not None
    readback.check_commits(self, staged=False)
    publish_guard.check_push(self.worktree, self.task)
    repos.publish(self.task.repository, self.worktree, self.branch or self.task.branch, force=force)
