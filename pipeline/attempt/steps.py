"""The attempt as steps: prepare the worktree, before_stage, the agent, the evidence, after_stage,
the tests, the push (or, for pr_creation, TAC-X's own pull request)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import git, hooks, sandbox
from ..models import Round, Stage, StageResult, Task, Worker
from ..workflow import StageConfig, Workflow
from . import agent, commands, evidence, publish, worktree
from .recorder import EventRecorder


@dataclass
class Attempt:
    """One attempt of one stage: the context every step reads, built once in `run_stage`, and
    `execute()`, the steps in order. The steps are functions of their own modules that take
    the attempt as `self`; what the attempt writes while it runs goes through `recorder`."""

    stage: Stage
    task: Task
    cfg: StageConfig
    workflow: Workflow
    result: StageResult
    owner: str
    worker: Worker
    followup: Round | None = None
    verdict: str = ""
    tests: hooks.HookRun | None = None
    worktree: Path | None = None
    repo_dir: Path | None = None
    box_root: Path | None = None
    recorder: EventRecorder = None  # type: ignore[assignment]  # made from the fields above

    def __post_init__(self) -> None:
        if self.recorder is None:
            self.recorder = EventRecorder(task=self.task, stage=self.stage, result=self.result, worker=self.worker, owner=self.owner)

    @property
    def box(self) -> sandbox.Box | None:
        """The agent's sandbox (held by the recorder, which records what it refused)."""
        return self.recorder.box

    @box.setter
    def box(self, value: sandbox.Box | None) -> None:
        self.recorder.box = value

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
