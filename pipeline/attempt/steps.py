"""The attempt as steps: prepare the worktree, before_stage, the agent, the memory file it left,
the evidence, after_stage, the tests, the push (or, for pr_creation, TAC-X's own pull request),
then the memory entries it proposed."""

from __future__ import annotations

from .. import git
from ..models import StageResult
from . import agent, commands, evidence, memory, publish, selection, worktree
from .context import AttemptContext


class Attempt(AttemptContext):
    """One attempt of one stage: its context (`AttemptContext`) and `execute()`, the steps in order."""

    def close_box(self) -> None:
        agent.close_box(self)

    def execute(self) -> None:
        self.worktree = worktree.prepare_worktree(self)
        self.result.base_commit = git.head(self.worktree)
        if self.selecting:
            selection.select(self)  # best of N: the stage's candidates ran; choose one
        elif self.stage.name == "pr_creation":
            publish.create_pull_request(self)
        else:
            commands.before_stage(self)
            try:
                memory.clear_leftover(self)
                agent.run_agent_stage(self)
                # Before the evidence: the memory file is read and gone before anything is committed.
                memory.take_proposals(self)
                evidence.check_evidence(self)
            finally:
                commands.after_stage(self)
            if self.stage.name == "building":
                commands.run_tests(self)
        if not self.selecting:
            publish.push_branch(self)
        memory.record_proposals(self)  # only a successful attempt's proposals are kept
        self.result.outcome = StageResult.Outcome.SUCCEEDED
