"""The evidence step: what a stage must leave behind (a plan, a diff, a verdict), checked after the
agent ran; a stage without it fails with the reason."""

from __future__ import annotations

import re

from .. import git
from ..lib.redaction import redact
from . import readback
from .context import AttemptContext, StageFailure

PLAN_FILE = "plan.md"


REVIEW_FILE = "review.md"


VERDICT = re.compile(r"^\W*VERDICT:\s*(APPROVE|REQUEST_CHANGES)\b", re.M)


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
        readback.commit_all(self, f"tacx: changes left uncommitted by the builder (#{self.task.issue_number})")
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
