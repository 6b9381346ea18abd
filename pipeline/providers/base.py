"""The tiny base of the agent providers: data types, the parser contract, executables, environment.

A *provider* wraps one coding-agent command-line program. For one attempt the stage runner asks it
for an argv list (``build_command``), the extra environment (``environment``; the whole scrubbed
environment comes from ``agent_environment``) and a fresh ``StreamParser``; it feeds every stdout
line to ``StreamParser.feed`` (which never raises), kills the agent as soon as ``parser.fatal`` is
set, and finally calls ``StreamParser.finish`` for the ``Outcome``.

Token semantics everywhere in TAC-X are Claude's: ``Usage.input_tokens`` counts only the input
tokens that were neither read from nor written to the prompt cache, so the prompt size is
``input_tokens + cache_read_tokens + cache_write_tokens``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from ..lib.mcp import ResolvedServer
from ..lib.pricing import cost_for
from ..lib.usage import Usage, tacx_setting
from .mcp_config import mark_mcp_calls

OUTPUT_LIMIT = 20_000  # characters kept of one tool output / raw line / long tool-input string
STDERR_TAIL = 500  # characters of stderr quoted in an error sentence
# Bytes of an attempt's stderr turned into ``stderr`` events (parsers with ``capture_stderr``);
# the rest is still written to the attempt's stderr file, read only for its tail.
STDERR_EVENTS_LIMIT = 200_000


class ProviderError(Exception):
    """A provider cannot be used as configured. ``permanent``: retrying the attempt cannot help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class Invocation:
    """What the runner hands a provider for one attempt (built from the workflow stage)."""

    prompt: str
    cwd: str
    model: str = ""
    max_turns: int | None = None
    allowed_tools: tuple[str, ...] = ()
    permission_mode: str = ""
    extra_args: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    # A session of this CLI to continue instead of starting cold ("" = cold); only set when
    # `Provider.can_resume` said yes.
    resume_session: str = ""
    # True when TAC-X's own sandbox contains the agent: a CLI with a sandbox of its own must not
    # nest it (codex runs with danger-full-access inside ours).
    sandboxed: bool = False
    # The stage's MCP servers with their secrets (pipeline.lib.mcp), written by `prepare_home`
    # into the attempt's private HOME (`home`) for providers that `supports_mcp`.
    mcp_servers: tuple[ResolvedServer, ...] = ()
    home: str = ""


@dataclass
class Event:
    """One normalised stream event; ``kind`` and the keys of ``data`` are listed in the module doc
    of ``pipeline.providers``."""

    kind: str
    data: dict


@dataclass
class Outcome:
    """How an attempt ended. ``error`` is "" on success, else one human sentence."""

    success: bool
    error: str
    final_text: str
    usage: Usage
    permanent: bool = False


def truncate(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text) - limit} more characters truncated]"
    return text[: max(0, limit - len(marker))] + marker


def truncate_strings(value: Any, limit: int = OUTPUT_LIMIT) -> Any:
    """A JSON-like value with every string in it truncated (tool inputs may carry whole files)."""
    if isinstance(value, str):
        return truncate(value, limit)
    if isinstance(value, dict):
        return {k: truncate_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [truncate_strings(v, limit) for v in value]
    return value


def as_dict(value: Any) -> dict:
    """``value`` if it is a dict, else an empty one: the CLIs' JSON is not trusted to be well formed."""
    return value if isinstance(value, dict) else {}


def as_int(value: Any) -> int:
    """A token count from untrusted JSON: ints (and integral floats) pass, anything else is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    return 0


def raw_event(line: str, error: str) -> Event:
    return Event("raw", {"line": truncate(line), "error": error})


class StreamParser:
    """Turns the stdout lines of one attempt into events; stateful; never raises on bad input.

    Subclasses implement ``handle(obj)`` for one decoded JSON object and ``finish``. The base
    decodes lines, turns anything undecodable into a ``raw`` event, keeps the running ``Usage``
    and prices it when the CLI reports no cost.
    """

    # True: the runner hands stderr lines to ``feed_stderr`` as they come (non-model stages,
    # whose stderr is part of what they say); False: stderr is read only for the error sentence.
    capture_stderr = False
    # How the CLI names an MCP tool, before the tool's own name (``mcp__{server}__``): tool_call
    # events of a declared server get ``server`` and ``tool`` keys. "": the CLI names none.
    mcp_tool_prefix = ""

    def __init__(self, inv: Invocation | None = None):
        self.inv = inv
        self.fatal: str | None = None
        self.fatal_permanent = False
        self.final_text = ""
        self._usage = Usage(model=inv.model if inv else "")
        self._reported_cost: Decimal | None = None
        self._last_usage_key: tuple = (0, 0, 0, 0, None)  # nothing counted yet: no event

    # -- the contract ---------------------------------------------------------------------------
    def feed(self, line: str | bytes) -> list[Event]:
        """Events for one stdout line. A line that is not a JSON object with a string ``type``,
        or that the handler cannot understand, becomes one ``raw`` event; parsing goes on."""
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        text = line.strip()
        if not text:
            return []
        try:
            obj = json.loads(text)
        except ValueError as exc:
            return [raw_event(text, f"not JSON: {exc}")]
        if not isinstance(obj, dict):
            return [raw_event(text, f"not a JSON object but a {type(obj).__name__}")]
        if not isinstance(obj.get("type"), str):
            return [raw_event(text, "JSON object without a string 'type'")]
        try:
            events = self.handle(obj)
        except Exception as exc:  # noqa: BLE001 - a surprising shape must not stop the stage
            return [raw_event(text, f"not understood: {type(exc).__name__}: {exc}")]
        if events is None:
            return [raw_event(text, f"unknown line type {obj['type']!r}")]
        if self.mcp_tool_prefix and self.inv is not None:
            mark_mcp_calls(events, self.inv.mcp_servers, self.mcp_tool_prefix)
        return events

    def feed_stderr(self, line: str) -> list[Event]:
        """Events for one stderr line (only called when ``capture_stderr``): a ``stderr`` event,
        cut to ``OUTPUT_LIMIT`` characters; nothing for a blank line."""
        text = line.rstrip("\r\n")
        return [Event("stderr", {"text": truncate(text)})] if text.strip() else []

    def handle(self, obj: dict) -> list[Event] | None:
        """Events for one decoded line; ``None`` means the line type is not understood."""
        raise NotImplementedError

    @property
    def usage(self) -> Usage:
        """Running totals; ``cost_usd`` is the CLI's own figure when it gave one, else priced."""
        usage = replace(self._usage)
        usage.cost_usd = self._reported_cost if self._reported_cost is not None else cost_for(usage.model, usage)
        return usage

    def finish(self, *, exit_code: int | None, stderr_tail: str = "", killed_reason: str = "") -> Outcome:
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------------------
    def set_fatal(self, message: str, *, permanent: bool) -> None:
        """Record the first reason the run cannot succeed (later ones are consequences)."""
        if self.fatal is None:
            self.fatal = message
            self.fatal_permanent = permanent

    def usage_event(self) -> list[Event]:
        """A ``usage`` event with the running totals, or nothing when they did not change."""
        u = self._usage
        key = (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens, self._reported_cost)
        if key == self._last_usage_key:
            return []
        self._last_usage_key = key
        usage = self.usage
        return [
            Event(
                "usage",
                {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_read_tokens": usage.cache_read_tokens,
                    "cache_write_tokens": usage.cache_write_tokens,
                    "cost_usd": None if usage.cost_usd is None else str(usage.cost_usd),
                },
            )
        ]

    def outcome(self, error: str = "", *, permanent: bool = False) -> Outcome:
        return Outcome(success=not error, error=error, final_text=self.final_text, usage=self.usage, permanent=permanent)

    def fatal_outcome(self) -> Outcome:
        assert self.fatal is not None
        return self.outcome(self.fatal, permanent=self.fatal_permanent)


def exit_sentence(exit_code: int | None, *, what: str = "", stderr_tail: str = "", killed_reason: str = "") -> str:
    """"agent exited with code N<what> (<killed_reason>): <stderr tail>" for a run that failed
    without saying why in its stream."""
    if exit_code is None:
        text = f"agent ended{what}"
    else:
        text = f"agent exited with code {exit_code}{what}"
    if killed_reason:
        text += f" ({killed_reason})"
    tail = stderr_tail.strip()
    if tail:
        text += ": " + tail[-STDERR_TAIL:]
    return text


# -- executables -----------------------------------------------------------------------------------
def resolve_executable(name: str) -> str:
    """Absolute path of the agent program ``name``: the first hit in ``settings.TACX
    ["AGENT_BIN_DIRS"]`` (the npm-installed CLIs), then ``PATH``. A name containing a path
    separator is taken as a path. Raises ``ProviderError(permanent=True)`` when it is missing."""
    if not name:
        raise ProviderError("no agent program configured", permanent=True)
    if os.sep in name:
        if os.path.isfile(name) and os.access(name, os.X_OK):
            return os.path.abspath(name)
        raise ProviderError(f"agent program {name!r} does not exist or is not executable", permanent=True)
    dirs = [str(d) for d in tacx_setting("AGENT_BIN_DIRS", [])]
    for directory in dirs:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    searched = ", ".join(dirs) if dirs else "no AGENT_BIN_DIRS"
    raise ProviderError(
        f"agent program {name!r} not found in {searched} or on PATH "
        "(install the CLIs with `npm ci`, or set TACX_AGENT_BIN_DIRS)",
        permanent=True,
    )


_versions: dict[str, str] = {}
_versions_lock = threading.Lock()
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:[-+.][0-9A-Za-z.-]+)?")


def executable_version(path: str) -> str:
    """Version printed by ``<path> --version`` (e.g. "2.1.197"), cached per path; "" on failure."""
    with _versions_lock:
        if path in _versions:
            return _versions[path]
    try:
        proc = subprocess.run(
            [path, "--version"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
        )
        first = (proc.stdout or "").strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        first = ""
    match = _VERSION.search(first)
    version = match.group(0) if match else first[:100]
    with _versions_lock:
        _versions[path] = version
    return version


def write_home_settings(home: str, folder: str, settings: dict) -> None:
    """``settings`` as ``<home>/<folder>/settings.json``, the CLI's own configuration in the
    attempt's private HOME (``Provider.prepare_home``)."""
    os.makedirs(os.path.join(home, folder), exist_ok=True)
    # Owner-only: with MCP servers it holds their secrets.
    fd = os.open(os.path.join(home, folder, "settings.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)


# -- environment -----------------------------------------------------------------------------------
BASE_ENV = ("PATH", "HOME", "LANG", "TERM", "TMPDIR", "USER", "LOGNAME", "SHELL", "TZ")
BASE_ENV_PREFIXES = ("LC_",)
# Never handed to an agent, whatever a provider declares: the agent must not hold the push token.
FORBIDDEN_ENV = frozenset({"GITHUB_TOKEN", "GH_TOKEN", "GITHUB_WEBHOOK_SECRET"})
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)


def env_name_allowed(name: str, passthrough: tuple[str, ...]) -> bool:
    """Whether ``name`` may go from TAC-X's environment into an agent's.

    ``passthrough`` entries ending in ``_`` are prefixes, others exact names. A name that looks
    like a secret (``SECRET_NAME``) passes only when listed exactly, never through a prefix, so
    ``ANTHROPIC_`` does not smuggle in an unrelated ``ANTHROPIC_ADMIN_TOKEN``.
    """
    if name in FORBIDDEN_ENV:
        return False
    if name in BASE_ENV or name.startswith(BASE_ENV_PREFIXES) or name in passthrough:
        return True
    if SECRET_NAME.search(name):
        return False
    return any(p.endswith("_") and name.startswith(p) for p in passthrough)


def agent_environment(provider: Provider, inv: Invocation, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of the agent process: the allowed part of ``base_env`` (default
    ``os.environ``) plus ``provider.environment(inv)``. Forbidden names never pass."""
    source = os.environ if base_env is None else base_env
    env = {k: v for k, v in source.items() if env_name_allowed(k, provider.passthrough_env)}
    env.update({k: v for k, v in provider.environment(inv).items() if k not in FORBIDDEN_ENV})
    return env


# -- the provider base class -----------------------------------------------------------------------
# A session id goes into a glob and a file name: hex digits and dashes only.
_SESSION_ID = re.compile(r"[0-9a-fA-F-]{8,64}")
# Linux refuses to exec an argv with one argument over MAX_ARG_STRLEN (128 KiB) or all of them
# (with the environment) over ARG_MAX: "Argument list too long". A prompt this long (a 50,000
# character CJK issue body is 150 KB) goes to the agent on stdin instead. Inside the agent sandbox
# the whole command line is one `bash -c` argument, shell-quoted twice (TAC-X's sandbox server,
# then srt's wrapper), so the prompt is measured as it is after two rounds of quoting: a body
# made of quotes grows about tenfold.
PROMPT_ARG_LIMIT = 100_000  # bytes


def prompt_too_long_for_argv(prompt: str) -> bool:
    import shlex

    quoted = shlex.quote(shlex.quote(prompt))
    return len(quoted.encode("utf-8", "surrogatepass")) > PROMPT_ARG_LIMIT


class Provider:
    """One agent CLI: argv, environment and parser. Subclasses set the three class attributes."""

    name: ClassVar[str] = ""
    executable: ClassVar[str] = ""
    passthrough_env: ClassVar[tuple[str, ...]] = ()
    # Environment variables holding the model API's base URL, first set one wins; the agent
    # sandbox always lets the agent reach that URL's host:port (else ``default_api_url``).
    base_url_env: ClassVar[tuple[str, ...]] = ()
    default_api_url: ClassVar[str] = ""
    # Where the CLI keeps a session it can continue: the variable naming its directory, that
    # directory's default under HOME, and the glob of one session's file in it ({id}: the
    # session id). None: its sessions are not continued.
    session_store: ClassVar[tuple[str, str, str] | None] = None
    # The CLI reads a prompt too long for an argument from stdin (see ``stdin_data``).
    long_prompt_on_stdin: ClassVar[bool] = False
    # The CLI can use MCP servers, written by `prepare_home` (workflow.MCP_PROVIDERS agrees).
    supports_mcp: ClassVar[bool] = False

    def api_url(self, env: Mapping[str, str]) -> str:
        """The model API URL this attempt talks to, from its environment; "" when none."""
        for name in self.base_url_env:
            if env.get(name):
                return env[name]
        return self.default_api_url

    def prepare_home(self, home: str, inv: Invocation, env: dict[str, str]) -> None:
        """Write the CLI's own configuration into the attempt's private, empty ``home`` (the
        agent's HOME inside the sandbox): settings that make it run headless, offline-safe and
        without prompts. May adjust ``env`` (the agent's environment) to point into ``home``.
        Default: nothing."""

    def build_command(self, inv: Invocation) -> list[str]:
        """The argv list for one attempt (never a shell string); argv[0] is an absolute path."""
        raise NotImplementedError

    def can_resume(self, session_id: str, *, cwd: str, env: Mapping[str, str] | None = None) -> bool:
        """Whether `build_command` can continue `session_id` here: the CLI keeps its sessions
        (``session_store``) and this one's file is on this machine (``env``: the environment
        that names the CLI's directory, default ``os.environ``). Otherwise the round starts cold."""
        if self.session_store is None or not _SESSION_ID.fullmatch(session_id or ""):
            return False
        variable, default, pattern = self.session_store
        source = os.environ if env is None else env
        directory = Path(source.get(variable) or Path(source.get("HOME") or Path.home()) / default)
        return any(directory.glob(pattern.format(id=session_id)))

    def session_globs(self, session_id: str) -> tuple[str, ...]:
        """Where this CLI keeps a session's files, as globs relative to HOME (kept between
        attempts by `pipeline.sessions`). None without a ``session_store``."""
        if self.session_store is None or not _SESSION_ID.fullmatch(session_id or ""):
            return ()
        _, default, pattern = self.session_store
        return (f"{default}/{pattern.format(id=session_id)}",)

    def session_targets(self, rel: Path, *, cwd: str) -> tuple[Path, ...]:
        """Where a kept session file goes in a new HOME (relative) for the CLI to find it when
        run from `cwd`. Default: where it was."""
        return (rel,)

    def environment(self, inv: Invocation) -> dict[str, str]:
        """Variables this provider sets for the agent (on top of the scrubbed environment)."""
        return {}

    def stdin_data(self, inv: Invocation) -> bytes | None:
        """What the agent reads on stdin (None: an empty stdin): the prompt when it is too long
        for an argument and the CLI reads it from stdin (``long_prompt_on_stdin``; its
        ``build_command`` leaves it out then)."""
        return inv.prompt.encode("utf-8") if self.long_prompt_on_stdin and prompt_too_long_for_argv(inv.prompt) else None

    def parser(self, inv: Invocation | None = None) -> StreamParser:
        """A fresh parser for one attempt. ``inv`` lets it know the requested model (for pricing
        CLIs that do not report one) and the turn limit (for the error sentence)."""
        raise NotImplementedError

    def version(self) -> str:
        """``<exe> --version`` of the resolved executable, cached; "" when it cannot be run."""
        try:
            return executable_version(resolve_executable(self.executable))
        except ProviderError:
            return ""
