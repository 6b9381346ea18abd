"""The evidence step: what a stage must leave behind (a plan, a diff, a verdict), checked after the
agent ran; a stage without it fails with the reason."""

from __future__ import annotations

import re

from .. import git
from ..lib.redaction import redact
from ..lib.untrusted import sanitize_issue_title
from . import readback
from .context import AttemptContext, StageFailure

PLAN_FILE = "plan.md"


REVIEW_FILE = "review.md"


VERDICT = re.compile(r"^\W*VERDICT:\s*(APPROVE|REQUEST_CHANGES)\b", re.M)


SUBJECT_MAX = 72


def leftover_commit_subject(self: AttemptContext) -> str:
    """The subject of the commit TAC-X makes of what the builder left uncommitted: the builder's
    own last subject when it committed in this attempt, else the issue's title, e.g.
    "Fix ordinal suffix for 11-13 (#12)". One line; git gets it as an argument, never a shell."""
    path = self.worktree
    assert path is not None
    since = self.task.head_commit or self.task.base_commit
    own = ""
    if since and git.run(["rev-parse", "HEAD"], cwd=path, check=False) != since:
        own = git.run(["log", "-1", "--format=%s", "HEAD"], cwd=path, check=False)
    suffix = f" (#{self.task.issue_number})"
    subject = " ".join((own or sanitize_issue_title(self.task.title) or "Changes").split())
    if subject.endswith(suffix):
        subject = subject[: -len(suffix)]
    if len(subject) + len(suffix) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - len(suffix) - 1].rstrip() + "…"
    return subject + suffix


def check_evidence(self: AttemptContext) -> None:
    path = self.worktree
    assert path is not None
    name = self.stage.name
    if name == "planning":
        text = (readback.read_back(self, PLAN_FILE) or "").strip()
        if not text:
            raise StageFailure("planning left no plan: plan.md is missing or empty in the worktree")
        self.result.output_file = PLAN_FILE
        self.result.output_text = redact(text)
        # The plan lives in the database and the prompts, not in the pull request.
        if not git.run(["ls-files", PLAN_FILE], cwd=path):
            readback.unlink(self, PLAN_FILE)
    elif name == "building":
        readback.commit_all(self, leftover_commit_subject(self))
        if not git.run(["diff", "--name-only", f"{self.task.base_commit}..HEAD"], cwd=path):
            raise StageFailure("building left no changes: the branch has no diff against its base")
        self.result.output_text = redact(git.diff(self.task.base_commit, path, stat=True)[: readback.reader(self).file_max])
    elif name == "reviewing":
        found = readback.read_back(self, REVIEW_FILE)
        text = found or ""
        verdicts = VERDICT.findall(text) or VERDICT.findall(self.result.output_text or "")
        if not verdicts:
            raise StageFailure("the review has no verdict: expected a line `VERDICT: APPROVE` or `VERDICT: REQUEST_CHANGES` in review.md or the final message")
        self.verdict = verdicts[-1]
        self.result.verdict = self.verdict
        if text:
            self.result.output_file = REVIEW_FILE
            self.result.output_text = redact(text.strip())
        if found is not None and not git.run(["ls-files", REVIEW_FILE], cwd=path):
            readback.unlink(self, REVIEW_FILE)
