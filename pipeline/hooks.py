"""The repository's own commands that TAC-X runs itself: the workflow hooks (`setup`,
`before_stage`, `after_stage`, `cleanup`) and the `test_command`.

Every one of them goes through `run_hook(...)`: shell commands run in order in the worktree, each
in its own process group (a timeout or a stop kills the whole group, grandchildren included),
stdout and stderr together in one output whose tail is kept. This is the one place the agent
sandbox wraps (network allow-list per hook, `setup_env` secrets for `setup`/`test_command`).

The environment is built by `hook_environment(...)`: the same scrubbed base an agent gets (never
the forge token), TAC-X's context variables, and the `setup_env` secrets only for the hooks
allowed to see them.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import git
from .agent_process import group_alive, kill_group
from .lib.redaction import redact
from .lib.untrusted import Fences
from .models import StageResult
from .providers.base import BASE_ENV, BASE_ENV_PREFIXES, FORBIDDEN_ENV
from .sandbox import toolchains as toolchains_
from .workflow import FORBIDDEN_SETUP_ENV, HookConfig, Workflow

# The hooks that may receive the workflow's `setup_env` secrets. Agent stages never do.
SECRET_HOOKS = frozenset({"setup", "test_command"})
OUTPUT_TAIL_CHARS = 8000


# `sh` and `env` saying a program is missing or cannot run: "sh: 1: .venv/bin/pytest: not found",
# "/bin/sh: 1: exec: x: Permission denied", "env: 'python': No such file or directory".
_MISSING = re.compile(r"""(?m)(?:^|: )['"]?([^\s:'"]+)['"]?: (not found|command not found|No such file or directory|Permission denied)\s*$""")


def configuration_error(run: HookRun, *, cwd: Path) -> str | None:
    """Why `run` (the test command) is a configuration error rather than a failing test (exit 126
    or 127: the command, or the interpreter it names, cannot be found or run), with the missing
    path and the fix; None for any other result."""
    if run.status != "failed" or run.exit_code not in (126, 127):
        return None
    match = _MISSING.search(run.output)
    missing = match.group(1) if match else ""
    what = "cannot be run (exit 126)" if run.exit_code == 126 else "was not found (exit 127)"
    detail = f"`{run.command}` {what}"
    if missing:
        detail += f": {missing} ({match.group(2)})"
        path = Path(missing) if os.path.isabs(missing) else cwd / missing
        if path.is_symlink():
            target = os.path.realpath(path)
            detail += f"; it is a symlink to {target}, which the sandbox does not show" if os.path.exists(target) else f"; it is a symlink to {target}, which does not exist"
    return (
        f"{run.name} is misconfigured, not failing: {detail}. No test ran, so no agent runs again. "
        "Fix: make the command and its interpreter reachable inside the sandbox (name an interpreter installed on "
        "TAC-X's machine under `toolchains:` in .tac/workflow.yaml, install the tools in the worktree from the setup "
        "hook, or add their directory to TACX_SANDBOX_ALLOW_READ), or correct test_command in .tac/workflow.yaml"
    )


def missing_program_hint(run: HookRun) -> str:
    """For a hook that failed because a program was not found or could not run (exit 127/126):
    which, and how a program of TAC-X's machine becomes reachable in the sandbox ("" otherwise)."""
    if run.status != "failed" or run.exit_code not in (126, 127):
        return ""
    match = _MISSING.search(run.output)
    if not match:
        return ""
    return (
        f"{match.group(1)}: {match.group(2)} in the sandbox (exit {run.exit_code}); a program installed on TAC-X's "
        "machine is reachable in the sandbox only when the workflow names it under `toolchains:` (e.g. "
        "`toolchains: [python3.11, node]`) or the operator allows its directory with TACX_SANDBOX_ALLOW_READ"
    )


@dataclass
class HookRun:
    """What one hook did: `status` is passed | failed | timed_out | stopped | error."""

    name: str
    status: str
    exit_code: int | None
    duration: float
    output: str  # the tail of stdout+stderr, secrets redacted
    command: str  # the command that ended the run (the failing one, or the last)
    reason: str = ""
    blocked: tuple[dict, ...] = ()  # connections the sandbox refused while it ran
    # What the interpreters' names resolved to on the hook's PATH, in its sandbox (`interpreters`).
    interpreters: tuple[dict, ...] = ()

    def network_hint(self) -> str:
        """For a failed run the sandbox refused connections of: which hosts, and the workflow key
        that allows them ("" when nothing was refused)."""
        hosts = list(dict.fromkeys(str(b.get("host")) + (f":{b['port']}" if b.get("port") not in (None, "", 80, 443) else "") for b in self.blocked if b.get("host")))
        if not hosts:
            return ""
        key = "test_command.network.allow" if self.name == "test_command" else f"hooks.{self.name}.network.allow"
        return (
            f"the sandbox refused connections to {', '.join(hosts[:10])} (not on the allow-list of {self.name}); "
            f"if {self.name} needs them, add them to `{key}` in .tac/workflow.yaml, e.g. "
            f"`{key}: [{', '.join(hosts[:5])}]`"
        )

    @property
    def ok(self) -> bool:
        return self.status == "passed"

    def summary(self) -> str:
        code = "" if self.exit_code is None else f"exit {self.exit_code}, "
        return f"{self.name} {self.status} ({code}{self.duration:.1f} s)" + (f": {self.reason}" if self.reason else "")

    def event_data(self) -> dict:
        data = {
            "hook": self.name,
            "status": self.status,
            "exit_code": self.exit_code,
            "duration": round(self.duration, 3),
            "command": self.command,
            "output": self.output,
            "message": self.summary(),
        }
        if self.interpreters:
            data["interpreters"] = [dict(i) for i in self.interpreters]
        return data


# The interpreters whose resolution every hook records (plus the workflow's toolchains).
PROBED = ("python3", "python", "node")
# Run in the hook's own sandbox, with its environment: what each name is on its PATH there, and
# where that leads. `command -v` only: nothing the names point to is run.
_PROBE = (
    'for n in "$@"; do p=$(command -v -- "$n" 2>/dev/null) || p=; r=; '
    'case "$p" in /*) r=$(readlink -f -- "$p" 2>/dev/null) || r=;; *) p=;; esac; '
    'printf "%s\\t%s\\t%s\\n" "$n" "$p" "$r"; done'
)
_PROBE_OUTPUT_MAX = 16 * 1024


def interpreters(
    names: Sequence[str],
    *,
    cwd: str | Path,
    env: Mapping[str, str],
    wrap: Callable[[list[str], dict[str, str]], tuple[list[str], dict[str, str], Path]] | None = None,
    timeout: float = 10.0,
) -> tuple[dict, ...]:
    """What each of `names` resolves to on the PATH of `env`, seen from inside the hook's sandbox
    (`wrap`): ``({"name": "python3", "path": "/usr/bin/python3", "real": "/usr/bin/python3.11"}, …)``,
    path "" when not found. Empty when the probe itself fails: it never fails a hook. The answer
    comes from a sandbox the repository's files are in, so only absolute paths are kept."""
    argv, cmd_env, cmd_cwd = ["/bin/sh", "-c", _PROBE, "tacx-probe", *names], dict(env), Path(cwd)
    if wrap is not None:
        argv, cmd_env, cmd_cwd = wrap(argv, cmd_env)
    try:
        proc = subprocess.Popen(
            argv, cwd=str(cmd_cwd), env=cmd_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
        )
    except OSError:
        return ()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, 0)
        proc.communicate()
        return ()
    finally:
        if group_alive(proc.pid):
            kill_group(proc.pid, 0)
    found: dict[str, dict] = {}
    for line in out[:_PROBE_OUTPUT_MAX].decode("utf-8", "replace").splitlines():
        fields = line.split("\t")
        if len(fields) != 3 or fields[0] not in names or fields[0] in found:
            continue
        path, real = (f if f.startswith("/") and len(f) <= 1024 and f.isprintable() else "" for f in fields[1:])
        found[fields[0]] = {"name": fields[0], "path": path, "real": real if path else ""}
    return tuple(found[n] for n in names if n in found)


def hook_environment(
    name: str,
    *,
    workflow: Workflow,
    worktree: Path,
    context: Mapping[str, str],
    base_env: Mapping[str, str] | None = None,
    toolchains: Sequence[toolchains_.Toolchain] = (),
) -> dict[str, str]:
    """The whole environment of hook `name`: the scrubbed base, `TACX_*` context, the
    `setup_env` secrets when `name` is `setup` or `test_command`, and the bin directories of the
    workflow's `toolchains` first on PATH (after the hook's own `env:`, so they stay first)."""
    source = os.environ if base_env is None else base_env
    env = {k: v for k, v in source.items() if (k in BASE_ENV or k.startswith(BASE_ENV_PREFIXES)) and k not in FORBIDDEN_ENV}
    env.update(git.identity_env())
    env.update({f"TACX_{k.upper()}": str(v) for k, v in context.items()})
    hook = workflow.test_command if name == "test_command" else workflow.hook(name)
    if hook is not None:
        env.update(dict(hook.env))  # plain settings: never redacted
    env["TACX_HOOK"] = name
    env["TACX_WORKTREE"] = str(worktree)
    if toolchains:
        env["PATH"] = toolchains_.hook_path(toolchains, env.get("PATH", os.defpath))
    if name in SECRET_HOOKS:
        for secret in workflow.setup_env:
            if secret in FORBIDDEN_SETUP_ENV or secret in FORBIDDEN_ENV:
                continue  # validated on load; checked again so a stored snapshot cannot widen it
            if secret in source:
                env[secret] = source[secret]
    return env


# A `setup_env` value is redacted only when it can be a secret: at least this long, and neither a
# number nor a common setting word (`PIP_NO_INDEX=1` must not blank every "1" of the output).
SECRET_MIN_LENGTH = 8
_COMMON_VALUES = frozenset(
    "true false yes no on off none null enabled disabled production development staging localhost "
    "release debug verbose warning critical".split()
)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def can_be_secret(value: str) -> bool:
    """Whether a `setup_env` value is redacted from output (see SECRET_MIN_LENGTH)."""
    value = value.strip()
    return len(value) >= SECRET_MIN_LENGTH and not _NUMBER.fullmatch(value) and value.lower() not in _COMMON_VALUES


def secret_values(name: str, *, workflow: Workflow, env: Mapping[str, str]) -> tuple[str, ...]:
    """The values of the `setup_env` secrets that hook `name` received and that can be secrets
    (`can_be_secret`), to redact them."""
    if name not in SECRET_HOOKS:
        return ()
    return tuple(env[n] for n in workflow.setup_env if env.get(n) and can_be_secret(env[n]))


def run_hook(
    hook: HookConfig,
    *,
    cwd: str | Path,
    env: Mapping[str, str],
    grace: float = 5.0,
    should_stop: Callable[[], str | None] | None = None,
    on_start: Callable[[int], None] | None = None,
    poll_seconds: float = 0.5,
    secret_values: tuple[str, ...] = (),
    wrap: Callable[[list[str], dict[str, str]], tuple[list[str], dict[str, str], Path]] | None = None,
) -> HookRun:
    """Run `hook.run` in order in `cwd` with exactly `env`; stop at the first failure.

    The time limit `hook.timeout` covers all commands together. `should_stop` is asked every
    `poll_seconds` (cancel, lost lease) and returns a reason to stop or None. `on_start` gets
    each command's process group id. Whatever happens the group is gone when this returns.
    `wrap` (the agent sandbox: `sandbox.CommandBoxes.wrap`, see attempt.commands.hook_sandbox) turns each command's argv and
    environment into the sandboxed argv, environment and working directory; it enforces
    `hook.network_allow`. `secret_values` are blanked out of the output whatever their names.
    """
    started = time.monotonic()
    deadline = started + hook.timeout
    status, exit_code, reason, command = "passed", 0, "", ""
    with tempfile.TemporaryFile() as out:
        for command in hook.run:
            out.write(f"$ {command}\n".encode())
            out.flush()
            argv, cmd_env, cmd_cwd = ["/bin/sh", "-c", command], dict(env), Path(cwd)
            if wrap is not None:
                argv, cmd_env, cmd_cwd = wrap(argv, cmd_env)
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=str(cmd_cwd),
                    env=cmd_env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, killed whole
                )
            except OSError as exc:
                status, exit_code, reason = "error", None, f"could not start /bin/sh: {exc}"
                break
            pgid = proc.pid
            if on_start is not None:
                on_start(pgid)
            stopped = ""
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    stopped = "timed_out"
                    break
                try:
                    proc.wait(timeout=min(poll_seconds, remaining))
                    break
                except subprocess.TimeoutExpired:
                    pass
                if should_stop is not None and (why := should_stop()):
                    stopped, reason = "stopped", why
                    break
            if stopped:
                kill_group(pgid, grace)
                try:
                    proc.wait(timeout=grace + 10)
                except subprocess.TimeoutExpired:
                    kill_group(pgid, 0)
                    proc.wait()
                status, exit_code = stopped, None
                if stopped == "timed_out":
                    reason = f"timed out after {hook.timeout} s"
            # Whatever the command left running in the background ends with it.
            if group_alive(pgid):
                kill_group(pgid, min(grace, 1.0))
            if stopped:
                break
            if proc.returncode != 0:
                status, exit_code = "failed", proc.returncode
                break
        out.seek(0, os.SEEK_END)
        size = out.tell()
        out.seek(max(0, size - OUTPUT_TAIL_CHARS * 4))
        tail = out.read().decode("utf-8", errors="replace")
    for value in sorted((v for v in secret_values if v), key=len, reverse=True):
        tail = tail.replace(value, "[REDACTED]")
    tail = tail[-OUTPUT_TAIL_CHARS:]
    return HookRun(
        name=hook.name,
        status=status,
        exit_code=exit_code,
        duration=time.monotonic() - started,
        output=redact(tail),
        command=command,
        reason=reason,
    )


def tests_headline(result: StageResult | None, *, configured: bool) -> str:
    """One line: whether the test command passed ("not run" when there is none)."""
    if not configured:
        return "not run (the workflow has no test_command)"
    if result is None or not result.tests_status:
        return "not run yet"
    code = "" if result.tests_exit_code is None else f"exit {result.tests_exit_code}, "
    return f"{result.tests_status} ({code}{result.tests_duration or 0:.1f} s)"


def tests_report(result: StageResult | None, *, configured: bool, fences: Fences, tail_lines: int = 60) -> str:
    """The test evidence as a prompt shows it: the headline and the output's tail, fenced as
    untrusted (the tests run code the builder wrote)."""
    headline = tests_headline(result, configured=configured)
    if result is None or not result.tests_status:
        return f"tests: {headline}"
    tail = "\n".join(result.tests_output.strip().splitlines()[-tail_lines:])
    return f"tests: {headline}\noutput (last lines):\n{fences.wrap(tail or '(no output)', 'test_output')}"
