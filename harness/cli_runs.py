"""Helpers to run the real agent CLIs against a :class:`ScriptedModelServer` (tests, demo, bench).

They build exactly the argv and environment documented in :mod:`harness.modelserver`; the
provider modules build the same for production runs. Every environment here is scrubbed: only
``PATH`` is inherited, ``HOME`` (and ``CODEX_HOME``) are fresh directories chosen by the caller.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.agent_process import pump_lines
from pipeline.lib.jsonl import json_objects
from pipeline.providers import get_provider
from pipeline.providers.base import Invocation, agent_environment

PROJECT_DIR = Path(__file__).resolve().parents[1]
BIN_DIR = PROJECT_DIR / "node_modules" / ".bin"
CLAUDE_BIN = BIN_DIR / "claude"
CODEX_BIN = BIN_DIR / "codex"
CLAUDE_VERSION = "2.1.197"
CODEX_VERSION = "0.169.0"
GEMINI_VERSION = "0.61.0"
QWEN_VERSION = "0.24.4"
OPENCODE_VERSION = "1.18.33"
CLI_VERSIONS = {"claude": CLAUDE_VERSION, "codex": CODEX_VERSION, "gemini": GEMINI_VERSION, "qwen": QWEN_VERSION, "opencode": OPENCODE_VERSION}
# The variable each provider reads its model API key from.
API_KEY_ENV = {"gemini": "GEMINI_API_KEY", "qwen": "OPENAI_API_KEY", "opencode": "OPENCODE_API_KEY"}

# Any value works: the scripted server ignores keys. Never a real key, and distinctive so tests
# can assert it does not leak into transcripts.
DUMMY_API_KEY = "tacx-scripted-dummy-key-0000"
CODEX_PROVIDER = "tacx"
CODEX_KEY_ENV = "TACX_MODEL_API_KEY"

# Claude Code 2.1.197: CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 alone removes every
# non-loopback connection (no DNS lookups at all) and the session-title model call; the other
# three are the documented finer-grained switches, kept for older/newer versions.
CLAUDE_QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
}

# Codex 0.169.0 resolves github.com/api.github.com/chatgpt.com (plugin catalogue sync) unless
# plugins are off, and ab.chatgpt.com (analytics) unless analytics are off.
CODEX_QUIET_CONFIG = ("features.plugins=false", "analytics.enabled=false")


def make_git_repo(path: Path, files: Mapping[str, str] | None = None) -> Path:
    """Create a git repository at ``path`` with one commit (``README.md`` plus ``files``)."""
    path.mkdir(parents=True, exist_ok=True)
    for name, content in {"README.md": "# Sample\n", **(files or {})}.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "agent@tacx.invalid"],
        ["git", "config", "user.name", "TAC-X Agent"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "Initial commit"],
    ):
        subprocess.run(argv, cwd=path, check=True, capture_output=True)
    return path


def git_log(repo: Path) -> list[str]:
    """Subjects of the commits on HEAD, newest first."""
    out = subprocess.run(
        ["git", "log", "--format=%s"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.splitlines()


def _url(server: Any) -> str:
    return server if isinstance(server, str) else server.url


def _base_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }


def claude_env(
    server: Any,
    home: Path,
    *,
    api_key: str = DUMMY_API_KEY,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for ``claude`` against ``server`` (a server or its URL), with HOME ``home``.

    Add ``IS_SANDBOX=1`` through ``extra`` for ``--permission-mode bypassPermissions`` or
    ``--dangerously-skip-permissions`` as root; ``CLAUDE_CODE_MAX_RETRIES=0`` to fail fast.
    """
    return {
        **_base_env(home),
        "ANTHROPIC_BASE_URL": _url(server),
        "ANTHROPIC_API_KEY": api_key,
        **CLAUDE_QUIET_ENV,
        **(extra or {}),
    }


def claude_argv(
    prompt: str,
    *,
    model: str = "claude-sonnet-4-5",
    allowed_tools: Sequence[str] = ("Bash", "Write", "Edit"),
    permission_mode: str | None = None,
    max_turns: int | None = None,
    binary: Path | str = CLAUDE_BIN,
) -> list[str]:
    """``claude -p`` argv printing stream-json; the prompt goes after ``--``."""
    argv = [
        str(binary),
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        model,
    ]
    if permission_mode:
        argv += ["--permission-mode", permission_mode]
    if allowed_tools:
        argv += ["--allowedTools", *allowed_tools]
    if max_turns is not None:
        argv += ["--max-turns", str(max_turns)]
    return [*argv, "--", prompt]


def codex_env(
    home: Path, codex_home: Path, *, api_key: str = DUMMY_API_KEY
) -> dict[str, str]:
    """Environment for ``codex exec``: fresh HOME and CODEX_HOME, the key in ``TACX_MODEL_API_KEY``."""
    codex_home.mkdir(parents=True, exist_ok=True)
    return {**_base_env(home), "CODEX_HOME": str(codex_home), CODEX_KEY_ENV: api_key}


def codex_provider_config(server: Any, *, fail_fast: bool = False) -> str:
    """The ``-c model_providers.tacx={...}`` value pointing codex at ``server``.

    ``fail_fast`` sets ``stream_max_retries=0`` (and ``request_max_retries=0``) so an HTTP error
    ends the turn at once instead of after 5 reconnects (~6 s).
    """
    fields = [
        f'name="{CODEX_PROVIDER}"',
        f'base_url="{_url(server)}/v1"',
        'wire_api="responses"',
        f'env_key="{CODEX_KEY_ENV}"',
    ]
    if fail_fast:
        fields += ["stream_max_retries=0", "request_max_retries=0"]
    return f"model_providers.{CODEX_PROVIDER}={{{', '.join(fields)}}}"


def codex_argv(
    server: Any,
    workdir: Path,
    prompt: str,
    *,
    model: str = "gpt-5",
    sandbox: str = "danger-full-access",
    fail_fast: bool = False,
    binary: Path | str = CODEX_BIN,
) -> list[str]:
    """``codex exec --json`` argv against ``server``, working in ``workdir``.

    The default is ``danger-full-access``: codex's own ``workspace-write`` sandbox depends on the
    machine (with Debian's bubblewrap on PATH and a CODEX_HOME under a temporary directory,
    codex 0.169 runs no shell command at all and still exits 0), and TAC-X runs codex inside
    its own sandbox with ``danger-full-access`` anyway.
    """
    argv = [
        str(binary),
        "exec",
        "--json",
        "--skip-git-repo-check",
        "-C",
        str(workdir),
        "--sandbox",
        sandbox,
    ]
    argv += [
        "-m",
        model,
        "-c",
        f"model_provider={CODEX_PROVIDER}",
        "-c",
        codex_provider_config(server, fail_fast=fail_fast),
    ]
    for setting in CODEX_QUIET_CONFIG:
        argv += ["-c", setting]
    return [*argv, "--", prompt]


def run_agent(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a CLI to completion; stdin is /dev/null (codex reads stdin when it is not a TTY)."""
    return subprocess.run(
        list(argv),
        check=False,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_agent(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path
) -> subprocess.Popen[str]:
    """Start a CLI in the background (stdout piped, line-buffered text) for tests that kill it."""
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )


def jsonl(text: str | Iterable[str]) -> list[dict[str, Any]]:
    """Parse JSON lines, skipping blank and non-JSON lines."""
    return json_objects(text.splitlines() if isinstance(text, str) else text)


def read_lines_until(
    process: subprocess.Popen[str],
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> tuple[list[str], dict[str, Any] | None]:
    """Read ``process``'s stdout lines until a JSON line satisfies ``predicate`` or ``timeout``.

    Returns ``(lines read, the matching object or None)``. Reads in a helper thread so a CLI
    that prints nothing cannot block the caller past ``timeout``.
    """
    assert process.stdout is not None
    found, _ = pump_lines(process.stdout, name="cli-stdout")
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = found.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line)
        for value in jsonl(line):
            if predicate(value):
                return lines, value
    return lines, None


def stop_process_group(process: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process started in a session of its own (a stack, a cluster): SIGTERM its group,
    then SIGKILL the group if it is still there after ``timeout`` seconds, and reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def stop_agent(process: subprocess.Popen[str], timeout: float = 10) -> int:
    """Kill a CLI started by :func:`start_agent` (if still running) and reap it."""
    if process.poll() is None:
        process.kill()
    return process.wait(timeout=timeout)


def provider_base_url(name: str, server: Any) -> str:
    """The base URL a provider is given for ``server``: the Gemini CLI appends
    ``/v1beta/models/…`` itself, the OpenAI-compatible clients want ``…/v1``."""
    return _url(server) if name == "gemini" else f"{_url(server)}/v1"


def provider_command(
    name: str,
    server: Any,
    workdir: Path,
    home: Path,
    *,
    prompt: str,
    model: str,
    max_turns: int | None = None,
    options: Mapping[str, Any] | None = None,
    api_key: str = DUMMY_API_KEY,
) -> tuple[Any, Any, list[str], dict[str, str]]:
    """``(provider, invocation, argv, env)`` for one run of the gemini, qwen or opencode
    provider against ``server``, exactly as the stage runner builds them: the provider's argv,
    its scrubbed environment (only PATH, LANG, the private ``home`` and its ``tmp`` as TMPDIR,
    the key) and its settings written into ``home`` by ``prepare_home``."""
    provider = get_provider(name)
    inv = Invocation(
        prompt=prompt,
        cwd=str(workdir),
        model=model,
        max_turns=max_turns,
        options={"base_url": provider_base_url(name, server), **(options or {})},
    )
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    base = {**_base_env(home), "TMPDIR": str(tmp), API_KEY_ENV[name]: api_key}
    env = agent_environment(provider, inv, base)
    provider.prepare_home(str(home), inv, env)
    return provider, inv, provider.build_command(inv), env
