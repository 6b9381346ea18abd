"""The repository's own commands in the worktree (hooks and the test command), run by TAC-X in the
agent sandbox with a private HOME, each recorded as events of the attempt."""

from __future__ import annotations

import dataclasses

from django.conf import settings

from .. import git, hooks, sandbox, setup_cache
from ..agent_process import StopAgent
from ..models import AgentEvent
from ..sandbox import toolchains
from ..workflow import HookConfig
from . import readback
from .context import AttemptContext, StageFailure, _tail, git_access


def task_toolchains(self: AttemptContext) -> list[toolchains.Toolchain]:
    """The workflow's toolchains as found on this machine. A name this machine does not have
    fails the attempt permanently: another attempt here would not find it either."""
    try:
        return toolchains.resolve(self.workflow.toolchains)
    except toolchains.ToolchainError as exc:
        raise StageFailure(f"invalid workflow: {exc}", permanent=True) from None


def setup_cache_mount(self: AttemptContext, hook: HookConfig) -> tuple[setup_cache.Mount | None, str]:
    """The setup cache `hook` (the setup hook) gets, or (None, why it gets none). Only a setup of
    the base branch's code may write it: code an agent committed must leave nothing for the next
    task of the repository."""
    assert self.worktree is not None
    if not setup_cache.enabled():
        return None, "off on this TAC-X (TACX_SETUP_CACHE_MAX_BYTES=0)"
    if not hook.cache_enabled:
        return None, "off in the workflow (hooks.setup.cache: false)"
    if git.head(self.worktree) != self.task.base_commit:
        return None, "not used: the worktree holds commits made after the base branch (only a setup of the base branch's code writes the cache)"
    key = setup_cache.key_for(hook, self.worktree)
    if key.problem:
        self.recorder.append_event(AgentEvent.Kind.ERROR, {"subtype": "handback", "message": key.problem})
        return None, f"not used: {key.problem}"
    return setup_cache.mount(repository_id=self.task.repository_id, key=key, hook=hook, hook_env=dict(hook.env)), ""


def run_repository_command(self: AttemptContext, hook: HookConfig | None) -> hooks.HookRun | None:
    """Run a hook or the test command in the worktree and record it as an event of this
    attempt (the setup hook with its cache, `setup_cache_mount`). None when the workflow has no
    such hook."""
    if hook is None:
        return None
    assert self.worktree is not None
    context = {
        "task_id": self.task.pk,
        "issue_number": self.task.issue_number,
        "repository": self.task.repository.full_name,
        "branch": self.task.branch,
        "stage": self.stage.name,
        "round": self.task.review_round,
    }
    found = task_toolchains(self)
    env = hooks.hook_environment(hook.name, workflow=self.workflow, worktree=self.worktree, context=context, toolchains=found)
    self.recorder.append_event(AgentEvent.Kind.SYSTEM, {"hook": hook.name, "status": "running", "message": f"{hook.name} started"})
    self.recorder.flush_events()

    stops: list[StopAgent] = []

    def should_stop() -> str | None:
        stop = self.recorder.on_tick()
        if stop is None:
            return None
        stops.append(stop)
        return stop.reason

    cache, cache_off = setup_cache_mount(self, hook) if hook.name == "setup" else (None, "")
    cache_bytes: int | None = None
    boxes: sandbox.CommandBoxes | None = None
    blocked: list[dict] = []
    try:
        if cache is not None:
            env.update(cache.env)
        boxes = hook_sandbox(self, hook, found, cache)
        wrap = boxes.wrap if boxes is not None else None
        # Which interpreters the hook's names reach, asked in a sandbox like the hook's own.
        probed = hooks.interpreters(list(dict.fromkeys([*hooks.PROBED, *self.workflow.toolchains])), cwd=self.worktree, env=env, wrap=wrap)
        run = hooks.run_hook(
            hook,
            cwd=self.worktree,
            env=env,
            grace=settings.TACX["KILL_GRACE_SECONDS"],
            should_stop=should_stop,
            # The reaper kills a dead worker's process group by Worker.pgid: the hook's, now.
            on_start=self.recorder.on_start,
            poll_seconds=min(1.0, settings.TACX["HEARTBEAT_SECONDS"]),
            secret_values=hooks.secret_values(hook.name, workflow=self.workflow, env=env),
            wrap=wrap,
        )
    finally:
        if boxes is not None:
            blocked = boxes.close()
            for entry in blocked:
                self.recorder.append_event(AgentEvent.Kind.SANDBOX, {**entry, "hook": hook.name})
        if cache is not None:
            cache_bytes = setup_cache.finish(cache)  # releases the key's lock, whatever happened
    run = dataclasses.replace(run, blocked=tuple(blocked), interpreters=probed)
    data = run.event_data()
    if hook.name == "setup":
        data["cache"] = setup_cache.summary(cache, size=cache_bytes, off=cache_off)
    self.recorder.append_event(AgentEvent.Kind.SYSTEM if run.ok else AgentEvent.Kind.ERROR, data)
    self.recorder.flush_events()
    if stops:
        raise StageFailure(f"{hook.name} stopped: {stops[0].reason}", outcome=stops[0].outcome)
    readback.check_worktree(self)  # the repository's command ran there: TAC-X's git comes next
    return run


def hook_sandbox(
    self: AttemptContext, hook: HookConfig, found: list[toolchains.Toolchain] = (), cache: setup_cache.Mount | None = None
) -> sandbox.CommandBoxes | None:
    """The boxes `hook` runs in: the worktree, a private HOME of its own (never the agent's: what
    setup writes there, e.g. a token in ~/.npmrc, stays out of the agent's reach), the workflow's
    toolchains (`found`) readable, the setup cache writable (`cache`: given for the setup hook
    only) and the hook's own network allow-list. None with the sandbox off."""
    if not sandbox.enabled():
        return None
    assert self.worktree is not None
    extra_write = [*settings.TACX.get("SANDBOX_HOOK_WRITE", [])]
    if cache is not None:
        extra_write.append(str(cache.dir))
    boxes = sandbox.command_boxes(
        worktree=self.worktree,
        git_access=git_access(self),
        allow_hosts=hook.network_allow,
        extra_read=toolchains.read_paths(found),
        extra_write=extra_write,
    )
    if cache is not None:
        cache.link_into(boxes.home)
    return boxes


def before_stage(self: AttemptContext) -> None:
    """The workflow's before_stage hook; a failure fails the attempt before the agent runs."""
    before = run_repository_command(self, self.workflow.hook("before_stage"))
    if before is not None and not before.ok:
        raise StageFailure(f"before_stage hook {before.status}: {_tail(before.output)}")


def after_stage(self: AttemptContext) -> None:
    """The workflow's after_stage hook, whatever the agent did."""
    # Logged only: a failing after_stage hook does not undo the agent's work.
    run_repository_command(self, self.workflow.hook("after_stage"))


def run_tests(self: AttemptContext) -> None:
    """The workflow's test_command, run by TAC-X after building: its result is evidence for
    the reviewer and the PR; a failure sends the task back to building (finish_attempt)."""
    run = run_repository_command(self, self.workflow.test_command)
    if run is None:
        return
    self.tests = run
    r = self.result
    r.tests_status, r.tests_exit_code, r.tests_duration, r.tests_output = run.status, run.exit_code, run.duration, run.output
    misconfigured = hooks.configuration_error(run, cwd=self.worktree)
    if misconfigured:
        # Not a failing test: another builder round cannot fix the operator's configuration.
        raise StageFailure(misconfigured, permanent=True)
    # Everything the builder made is committed; what the tests left behind (caches, reports)
    # must not reach the branch through a later "remaining changes" commit.
    assert self.worktree is not None
    git.run(["reset", "--hard", "--quiet", "HEAD"], cwd=self.worktree)
    git.run(["clean", "-fdq"], cwd=self.worktree)
