"""The agent step: the coding-agent CLI run once in the sandbox with a private HOME, its stream
recorded by the attempt's `EventRecorder`, its usage, session and final text kept, and the
repository's git directory checked for tampering afterwards."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from django.conf import settings

from .. import budgets, git, sandbox, services, sessions
from ..agent_process import run_agent
from ..lib import dbretry, redaction
from ..lib import mcp as mcp_
from ..lib.redaction import redact
from ..models import AgentEvent, StageResult
from ..providers import get_provider
from ..providers.base import Invocation, agent_environment
from ..sandbox import toolchains
from . import memory, publish, readback
from .commands import task_toolchains
from .context import AttemptContext, StageFailure, git_access
from .prompt import render_prompt


def run_agent_stage(self: AttemptContext) -> None:
    cfg, result = self.cfg, self.result
    provider = get_provider(cfg.provider)
    resume = session_to_resume(self, provider)
    self.resumes_session = bool(resume)
    prompt = self.prompt_text or render_prompt(self)
    result.prompt = redact(prompt)
    result.prompt_hash = hashlib.sha256(prompt.encode()).hexdigest()
    memory.record_given(self)
    mcp_servers = stage_mcp_servers(self, provider)
    # A private HOME per attempt, in both modes: the CLI's settings are TAC-X's, and nothing
    # of the operator's HOME (~/.ssh, ~/.config, other CLIs' tokens) is on the agent's path.
    self.box_root = sandbox.new_root()
    home = self.box_root / "home"
    (home / "tmp").mkdir(parents=True)
    invocation = Invocation(
        prompt=prompt,
        cwd=str(self.worktree),
        model=cfg.model,
        max_turns=cfg.max_turns,
        allowed_tools=tuple(cfg.allowed_tools),
        permission_mode=cfg.permission_mode,
        extra_args=tuple(cfg.extra_args),
        options=dict(cfg.options),
        resume_session=resume,
        sandboxed=sandbox.enabled(),
        mcp_servers=mcp_servers,
        home=str(home),
    )
    result.resumed_session_id = invocation.resume_session[:200]
    argv = provider.build_command(invocation)
    env = agent_environment(provider, invocation)
    # Commits the agent makes need an identity; its HOME has no git config of ours.
    env.update(git.identity_env())
    result.cli_version = provider.version()[:100]
    env["HOME"], env["TMPDIR"] = str(home), str(home / "tmp")
    provider.prepare_home(str(home), invocation, env)
    if invocation.resume_session:
        sessions.session_restore(provider=provider, home=home, session_id=invocation.resume_session, task_id=self.task.pk, cwd=str(self.worktree))
    access = git_access(self)
    # The workflow's toolchains are readable for the agent too (a venv setup made links to one),
    # but not put on its PATH: the agent CLI itself may be a script run by `node`.
    found = task_toolchains(self)
    if sandbox.enabled():
        self.box = sandbox.prepare(
            argv=argv,
            env=env,
            worktree=self.worktree,
            git_access=access,
            allow_hosts=[provider.api_url(env), str(cfg.options.get("base_url") or ""), *self.workflow.allowed_hosts(cfg)],
            home=home,
            root=self.box_root,
            extra_read=toolchains.read_paths(found),
        )
        argv, env = self.box.argv, self.box.env
        self.recorder.append_event(AgentEvent.Kind.SYSTEM, {"subtype": "sandbox", "mode": sandbox.mode(), "allowed_hosts": self.box.allowed_hosts})
    else:
        self.recorder.append_event(AgentEvent.Kind.SYSTEM, {"subtype": "sandbox", "mode": "off", "allowed_hosts": []})
    guarded = git.guard_snapshot(access.common, access.admin) if access else None
    parser = provider.parser(invocation)
    meter = budgets.Meter.for_attempt(task=self.task, stage_cfg=cfg, workflow=self.workflow)
    self.recorder.parser, self.recorder.meter = parser, meter
    self.recorder.on_budget_pause = lambda reached: begin_pause(self, reached, once=True)
    if (refusal := meter.refusal()) is not None:
        if meter.reached is not None and meter.reached.pauses:
            begin_pause(self, meter.reached)
        raise StageFailure(refusal + (PAUSING if self.pause else ""), outcome=StageResult.Outcome.BUDGET_EXCEEDED, permanent=True)
    tacx = settings.TACX
    self.recorder.agent_started()
    proc = run_agent(
        argv,
        cwd=str(self.box.cwd if self.box is not None else self.worktree),
        env=env,
        parser=parser,
        timeout=cfg.timeout,
        stall_timeout=cfg.stall_timeout or tacx.get("STALL_SECONDS") or None,
        grace=tacx["KILL_GRACE_SECONDS"],
        on_start=self.recorder.on_start,
        on_events=self.recorder.on_events,
        on_tick=self.recorder.on_tick,
        on_idle=self.recorder.on_idle,
        tick_seconds=min(1.0, tacx["HEARTBEAT_SECONDS"]),
        stdin_data=provider.stdin_data(invocation),
    )
    budget_stop = proc.stop is not None and proc.stop.outcome == StageResult.Outcome.BUDGET_EXCEEDED
    if budget_stop and meter.reached is not None and meter.reached.pauses and self.pause is None:
        # Not recorded when the meter stopped the agent (the database was away): now, before the
        # work is kept.
        begin_pause(self, meter.reached)
    if self.box is not None:
        self.box.finish()
    self.recorder.collect_blocked()
    if access is not None and guarded is not None:
        # Before any other git command of TAC-X's: the agent's hands off git's programs.
        tampered = git.guard_check(access.common, access.admin, guarded)
        git.pin_worktree(self.repo_dir, self.worktree)
        if tampered:
            raise StageFailure(
                "the agent changed the repository's git configuration or hooks ("
                + ", ".join(Path(p).name for p in tampered[:5])
                + "); TAC-X put them back and will not use this attempt",
                permanent=True,
            )
    else:
        git.pin_worktree(self.repo_dir, self.worktree)
    # Before TAC-X runs git on what the agent left: no embedded repository, no unexpected gitlink.
    readback.check_worktree(self)
    outcome = proc.outcome
    usage = outcome.usage
    result.exit_code = proc.exit_code
    self.recorder.apply_usage(usage)
    result.turns = usage.turns
    result.session_id = usage.session_id[:200]
    if result.session_id and ((self.stage.name == "building" and not self.selecting and not self.stage.parent_id) or self.pause is not None):
        # Its private HOME goes away: keep the session for a round (or the answer to a budget
        # pause) to resume.
        sessions.session_keep(provider=provider, home=home, session_id=result.session_id, task_id=self.task.pk)
    result.model = (usage.model or cfg.model)[:100]
    if usage.cli_version:
        result.cli_version = usage.cli_version[:100]
    result.output_text = redact(outcome.final_text or "")
    if proc.stop is not None:
        if budget_stop and self.worktree is not None:
            # Keep the work done so far: it is on the branch for a human to pick up (and for
            # the stage to go on from when a paused budget is raised).
            if readback.commit_all(self, f"tacx: work in progress of {self.stage.name} when the budget ran out (#{self.task.issue_number})"):
                publish.publish_branch(self)
            result.head_commit = git.head(self.worktree)
        reason = proc.stop.reason + (PAUSING if budget_stop and self.pause is not None else "")
        raise StageFailure(reason, outcome=proc.stop.outcome, permanent=outcome.permanent)
    if not outcome.success:
        raise StageFailure(outcome.error or f"agent exited with code {proc.exit_code}", permanent=outcome.permanent)


PAUSING = "; the task pauses until a person raises the limit or ends it"


def begin_pause(self: AttemptContext, reached: budgets.Reached, *, once: bool = False) -> None:
    """A budget that pauses stopped this attempt: its `stopping` record, written the moment the
    meter stops the agent (`once`: from the recorder, one try) or, failing that, before the work
    is kept (waiting out a database outage). From then on a worker that dies leaves a record the
    reaper turns into the pause (services.budget_pauses), not into a retry."""

    def begin() -> None:
        self.pause = services.budget_pause_begin(task=self.task, stage=self.stage, result=self.result, reached=reached)

    if once:
        begin()
    else:
        dbretry.retry(begin, what=f"stage {self.stage.pk}: recording the budget pause")


def stage_mcp_servers(self: AttemptContext, provider) -> tuple[mcp_.ResolvedServer, ...]:
    """The stage's MCP servers with their secrets, read from TAC-X's environment now (never
    stored); the values are redacted from everything this attempt records. The CLI spawns the
    stdio servers inside the attempt's sandbox; the HTTP servers' hosts are on its allow-list
    (the workflow was refused otherwise)."""
    servers = self.workflow.mcp_servers(self.cfg)
    if not servers:
        return ()
    if not provider.supports_mcp:  # refused on load; a snapshot must not get past it either
        raise StageFailure(f"the {provider.name} provider has no MCP support (MCP servers: {', '.join(s.name for s in servers)})", permanent=True)
    try:
        resolved, values = mcp_.resolve(servers)
    except mcp_.SecretMissing as exc:
        raise StageFailure(str(exc), permanent=True) from None
    redaction.attempt_secrets_add(values)
    return resolved


def session_to_resume(self: AttemptContext, provider) -> str:
    """The session to resume when the workflow allows it and the CLI can resume it here ("" for
    a cold start): the stopped attempt's, when this attempt goes on after a raised budget pause;
    in a follow-up round's building stage, the previous building session."""
    if not self.workflow.resume_session:
        return ""
    if self.continues is not None:
        stopped = self.continues.result
        session = stopped.session_id if stopped.provider == self.cfg.provider else ""
    elif self.followup is None or self.stage.name != "building":
        return ""
    elif StageResult.objects.filter(followup=self.followup, stage=self.stage).exclude(pk=self.result.pk).exists():
        return ""  # a retry inside the round: start cold rather than resume what failed
    else:
        session = sessions.resumable_session(task=self.task, stage_name="building", provider=self.cfg.provider)
    available = session and sessions.session_available(provider=provider, session_id=session, task_id=self.task.pk, cwd=str(self.worktree))
    return session if available else ""


def close_box(self: AttemptContext) -> None:
    if self.box is not None:
        self.box.finish()
    if self.box_root is not None:
        self.recorder.collect_blocked()
        shutil.rmtree(self.box_root, ignore_errors=True)
        self.box_root = None
