"""The attempt's side of the hand-back gate (`pipeline.worktree_reads`): every file TAC-X reads
back from the worktree, every check before TAC-X runs git on what an agent or a hook left, and
what a refusal becomes (an `error` event of the attempt and a permanent failure)."""

from __future__ import annotations

from .. import git, worktree_reads
from ..models import AgentEvent
from .context import AttemptContext, StageFailure


def reader(self: AttemptContext) -> worktree_reads.Reader:
    """This attempt's reader of its worktree (one overall byte cap per attempt)."""
    if self.handback is None:
        assert self.worktree is not None
        self.handback = worktree_reads.Reader(self.worktree)
    return self.handback


def refused(self: AttemptContext, exc: worktree_reads.Refused) -> StageFailure:
    """A refusal of the gate as an event of the attempt and the failure that ends it."""
    self.recorder.append_event(AgentEvent.Kind.ERROR, {"subtype": "handback", "message": str(exc), "path": exc.path})
    return StageFailure(str(exc), permanent=True)


def read_back(self: AttemptContext, rel: str) -> str | None:
    """A file the agent left in the worktree, through the gate (None when absent)."""
    try:
        return reader(self).read_text(rel)
    except worktree_reads.Refused as exc:
        raise refused(self, exc) from None


def unlink(self: AttemptContext, rel: str) -> None:
    """Remove a file the agent left (never through a symlinked parent, never what a link names)."""
    try:
        reader(self).unlink(rel)
    except worktree_reads.Refused as exc:
        raise refused(self, exc) from None


def check_worktree(self: AttemptContext) -> None:
    """Before TAC-X runs git on the worktree after an agent or a hook ran there: no embedded
    repository, no gitlink the workflow did not allow."""
    assert self.worktree is not None
    try:
        worktree_reads.refuse_nested_repositories(self.worktree, allow_submodules=self.workflow.allow_submodules)
    except worktree_reads.Refused as exc:
        raise refused(self, exc) from None


def check_commits(self: AttemptContext, *, staged: bool) -> None:
    """Refuse symlinks out of the worktree and unexpected submodules in what TAC-X commits
    (`staged`) or pushes (the branch since its base)."""
    assert self.worktree is not None
    try:
        worktree_reads.refuse_changes(self.worktree, self.task.base_commit, staged=staged, allow_submodules=self.workflow.allow_submodules)
        limit = self.workflow.commit_limit
        worktree_reads.refuse_oversize(self.worktree, self.task.base_commit, staged=staged, max_files=limit.files, max_bytes=limit.bytes)
    except worktree_reads.Refused as exc:
        raise refused(self, exc) from None


def commit_all(self: AttemptContext, message: str) -> bool:
    """Commit what is left in the worktree, refusing what the gate refuses in what was staged."""
    assert self.worktree is not None
    return git.commit_all(self.worktree, message, check=lambda: check_commits(self, staged=True))
