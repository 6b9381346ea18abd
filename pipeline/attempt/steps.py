"""The attempt as steps: prepare the worktree, before_stage, the agent, the evidence, after_stage,
the tests, the push (or, for pr_creation, TAC-X's own pull request)."""

from __future__ import annotations

from .. import git
from ..models import StageResult
from . import agent, commands, evidence, publish, worktree
from .context import AttemptContext


class Attempt(AttemptContext):
    """One attempt of one stage: its context (`AttemptContext`) and `execute()`, the steps in order."""

    def close_box(self) -> None:
        agent.close_box(self)

    def execute(self) -> None:
        self.worktree = worktree.prepare_worktree(self)
        self.result.base_commit = git.head(self.worktree)
        if self.stage.name == "pr_creation":
            publish.create_pull_request(self)
        else:
            commands.before_stage(self)
            try:
                agent.run_agent_stage(self)
                evidence.check_evidence(self)
            finally:
                commands.after_stage(self)
            if self.stage.name == "building":
                commands.run_tests(self)
        publish.push_branch(self)
        self.result.outcome = StageResult.Outcome.SUCCEEDED
