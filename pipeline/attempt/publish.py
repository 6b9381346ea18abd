"""The pr_creation stage, done by TAC-X itself (never by an agent): the remaining changes committed
and pushed, and the pull request opened through the forge (`pipeline.pulls`)."""

from __future__ import annotations

from .. import git, pulls, repos
from ..models import Task
from .context import AttemptContext


def create_pull_request(self: AttemptContext) -> None:
    assert self.worktree is not None
    git.commit_all(self.worktree, f"tacx: remaining changes for #{self.task.issue_number}")
    git.push(self.worktree, repos.push_remote(self.task.repository), self.task.branch, auth_header=repos.auth_header(self.task.repository))
    body = pulls.pull_request_body(self.task)
    self.result.output_text = body
    self.result.output_file = "pull request body"
    url, number = pulls.pull_request_open(task=self.task, body=body)
    Task.objects.filter(pk=self.task.pk).update(pr_url=url, pr_number=number)
    self.task.pr_url, self.task.pr_number = url, number


def push_branch(self: AttemptContext) -> None:
    """The last step: the branch pushed when the stage moved its head."""
    self.result.head_commit = git.head(self.worktree)
    if self.result.head_commit != self.result.base_commit:
        git.push(self.worktree, repos.push_remote(self.task.repository), self.task.branch, auth_header=repos.auth_header(self.task.repository))
