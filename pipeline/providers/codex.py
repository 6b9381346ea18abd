"""OpenAI Codex CLI (``codex exec --json``), event format of codex-cli ≥ 0.44 (checked on 0.169.0).

Usage: ``turn.completed.usage`` is the thread's cumulative total, so the running figures are the
latest line's, never a sum. OpenAI counts cached tokens inside ``input_tokens``; TAC-X's
``input_tokens`` is the non-cached part: ``input_tokens - cached_input_tokens -
cache_write_input_tokens`` (both cache figures are parts of the prompt). ``output_tokens`` already
includes ``reasoning_output_tokens``. Codex reports no cost and no model: cost comes from
``pipeline.lib.pricing`` at the model the invocation asked for (unknown model → no cost).

Turns: Codex exposes no count of model requests; ``turns`` is the number of turns the thread ran
(``turn.completed`` + ``turn.failed`` lines), i.e. 1 for a plain ``codex exec``.

Errors: ``Reconnecting... n/m`` lines are transient, except that ``AUTH_RETRY_LIMIT`` of them in a
row naming HTTP 401/403 make the run fatal (permanent: the key is wrong). ``turn.failed`` is
fatal. ``item.completed`` items of type ``error`` are warnings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from collections.abc import Mapping
from typing import Any

from .base import (
    Event,
    Invocation,
    Outcome,
    Provider,
    ProviderError,
    StreamParser,
    as_dict,
    as_int,
    exit_sentence,
    prompt_too_long_for_argv,
    raw_event,
    resolve_executable,
    tacx_setting,
    truncate,
    truncate_strings,
)
from .mcp_config import codex_servers

AUTH_FAILURE = re.compile(r"\b(40[13])\b|unauthori[sz]ed|forbidden|invalid api key|incorrect api key", re.IGNORECASE)
MODEL_PROVIDER = "tacx"
MODEL_API_KEY_ENV = "TACX_MODEL_API_KEY"
SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
CONFIG_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
# No plugin-catalogue sync (github.com, chatgpt.com) and no analytics (ab.chatgpt.com): off-box
# calls an agent stage does not need (found with strace, see harness.modelserver). Stage
# options come later on the command line and can turn them back on.
HELPERS_MISSING = "could not create PATH aliases"
# codex 0.169 on a declared server (TAC-X writes them `required`) that did not start: it ends
# before the first turn, saying so on stderr.
MCP_START_FAILED = re.compile(r"required MCP servers failed to initialize: ([^\n]*?)(?: \(code -?\d+\))?$", re.MULTILINE)
QUIET_CONFIG = ("-c", "features.plugins=false", "-c", "analytics.enabled=false")


def auth_failure_sentence(message: str) -> str | None:
    """The auth sentence when a Codex error message shows an HTTP 401/403, else ``None``."""
    match = AUTH_FAILURE.search(message)
    if not match:
        return None
    status = match.group(1) or ("403" if "forbidden" in match.group(0).lower() else "401")
    return f"agent could not authenticate (HTTP {status} from the model API)"


class CodexStreamParser(StreamParser):
    """Parser for ``codex exec --json`` (also the command provider's ``codex-json`` format)."""

    mcp_tool_prefix = "{server}."  # its mcp_tool_call items: see tool_call

    def __init__(self, inv: Invocation | None = None, *, cli_version: str = ""):
        super().__init__(inv)
        self._usage.cli_version = cli_version
        self.retry_limit = int(tacx_setting("AUTH_RETRY_LIMIT", 3))
        self.auth_reconnects = 0
        self.started: set[str] = set()
        self.turn_completed = False
        self.turn_failed = ""
        self.last_error = ""
        self.commands_seen = 0
        self.commands_open: dict[str, str] = {}  # command items started but not completed
        self.commands_refused: list[str] = []  # command items codex's own sandbox did not run

    def handle(self, obj: dict) -> list[Event] | None:
        kind = obj["type"]
        if kind == "thread.started":
            self._usage.session_id = str(obj.get("thread_id") or "")
            return [Event("system", {"subtype": "thread.started", "session_id": self._usage.session_id})]
        if kind == "turn.started":
            return [Event("system", {"subtype": "turn.started"})]
        if kind in ("item.started", "item.updated", "item.completed"):
            return self.on_item(kind, as_dict(obj.get("item")), obj)
        if kind == "turn.completed":
            return self.on_turn_completed(obj)
        if kind == "turn.failed":
            return self.on_turn_failed(obj)
        if kind == "error":
            return self.on_error(str(obj.get("message") or ""))
        if kind == "item.plan.delta":
            return []
        if kind == "request_user_input":
            return [Event("system", {"subtype": "request_user_input", **truncate_strings({k: v for k, v in obj.items() if k != "type"})})]
        return None

    def on_item(self, kind: str, item: dict, obj: dict) -> list[Event]:
        item_id = str(item.get("id") or "")
        itype = item.get("type")
        done = kind == "item.completed"
        if itype == "agent_message":
            if not done:
                return []
            self.final_text = str(item.get("text") or "")
            return [Event("message", {"role": "assistant", "text": self.final_text})]
        if itype == "reasoning":
            return [Event("message", {"role": "reasoning", "text": str(item.get("text") or "")})] if done else []
        if itype == "error":
            return [Event("error", {"message": str(item.get("message") or ""), "fatal": False})] if done else []
        if itype in ("todo_list", "plan"):
            return [Event("system", {"subtype": itype, **truncate_strings({k: v for k, v in item.items() if k not in ("id", "type")})})]
        call = self.tool_call(itype, item)
        if call is None:
            return [raw_event(json.dumps(obj), f"unknown item type {itype!r}")]
        events = []
        if item_id not in self.started and kind != "item.updated":
            self.started.add(item_id)
            events.append(Event("tool_call", {"id": item_id, **call}))
        if itype == "command_execution":
            if item_id not in self.commands_open:
                self.commands_seen += 1
            command = str(item.get("command") or "")[:200]
            if not done:
                self.commands_open[item_id] = command
            else:
                self.commands_open.pop(item_id, None)
                if str(item.get("status") or "") == "declined" or (item.get("exit_code") is None and str(item.get("status") or "") == "failed"):
                    self.commands_refused.append(command)
        if done:
            result = self.tool_result(itype, item)
            if result is not None:
                events.append(Event("tool_result", {"id": item_id, **result}))
        return events

    @staticmethod
    def tool_call(itype: Any, item: dict) -> dict | None:
        """``{name, input}`` of a tool-like item, ``None`` for an unknown item type."""
        if itype == "command_execution":
            return {"name": "shell", "input": {"command": item.get("command", "")}}
        if itype == "file_change":
            return {"name": "file_change", "input": {"changes": item.get("changes") or []}}
        if itype == "mcp_tool_call":
            name = f"{item.get('server', '')}.{item.get('tool', '')}"
            return {"name": name, "input": truncate_strings(item.get("arguments") or {})}
        if itype == "web_search":
            return {"name": "web_search", "input": {"query": item.get("query", "")}}
        if itype == "collab_tool_call":
            return {"name": f"collab.{item.get('tool', '')}", "input": truncate_strings({"prompt": item.get("prompt", "")})}
        return None

    @staticmethod
    def tool_result(itype: Any, item: dict) -> dict | None:
        """``{output, is_error, ...}`` of a completed tool-like item (``None``: it has no result)."""
        status = str(item.get("status") or "")
        failed = status in ("failed", "declined")
        if itype == "command_execution":
            exit_code = item.get("exit_code")
            output = truncate(str(item.get("aggregated_output") or ""))
            return {"output": output, "is_error": failed or (isinstance(exit_code, int) and exit_code != 0), "exit_code": exit_code}
        if itype == "file_change":
            changes = [as_dict(c) for c in item.get("changes") or []]
            output = "\n".join(f"{c.get('kind', '?')} {c.get('path', '')}" for c in changes)
            return {"output": truncate(output), "is_error": failed}
        if itype == "mcp_tool_call":
            error = as_dict(item.get("error")).get("message")
            content = as_dict(item.get("result")).get("content") or []
            texts = [str(as_dict(c).get("text", "")) for c in content if isinstance(c, dict)]
            return {"output": truncate(str(error) if error else "\n".join(texts)), "is_error": failed or bool(error)}
        return None

    def own_sandbox(self) -> bool:
        """Whether codex ran its own sandbox (it does unless told danger-full-access)."""
        if self.inv is None:
            return True
        return not self.inv.sandboxed and self.inv.options.get("sandbox") != "danger-full-access"

    def on_turn_completed(self, obj: dict) -> list[Event]:
        usage = as_dict(obj.get("usage"))
        cached = as_int(usage.get("cached_input_tokens"))
        written = as_int(usage.get("cache_write_input_tokens"))
        u = self._usage
        u.input_tokens = max(as_int(usage.get("input_tokens")) - cached - written, 0)
        u.cache_read_tokens = cached
        u.cache_write_tokens = written
        u.output_tokens = as_int(usage.get("output_tokens"))
        u.turns += 1
        self.turn_completed = True
        self.auth_reconnects = 0
        result = Event("result", {"subtype": "turn.completed", "is_error": False, "text": truncate(self.final_text)})
        return [*self.usage_event(), result]

    def on_turn_failed(self, obj: dict) -> list[Event]:
        message = str(as_dict(obj.get("error")).get("message") or "turn failed without a message")
        self.turn_failed = message
        self._usage.turns += 1
        auth = auth_failure_sentence(message)
        if auth:
            self.set_fatal(auth, permanent=True)
        else:
            self.set_fatal(f"agent turn failed: {message}", permanent=False)
        return [
            Event("error", {"message": message, "fatal": True}),
            Event("result", {"subtype": "turn.failed", "is_error": True, "text": truncate(message)}),
        ]

    def on_error(self, message: str) -> list[Event]:
        auth = auth_failure_sentence(message)
        if message.startswith("Reconnecting"):
            self.auth_reconnects = self.auth_reconnects + 1 if auth else 0
            if auth and self.auth_reconnects >= self.retry_limit:
                self.set_fatal(auth, permanent=True)
        else:
            self.last_error = message
            if auth:  # codex gave up retrying: the turn will fail
                self.set_fatal(auth, permanent=True)
        return [Event("error", {"message": truncate(message), "fatal": self.fatal is not None})]

    def finish(self, *, exit_code: int | None, stderr_tail: str = "", killed_reason: str = "") -> Outcome:
        """Success iff a turn completed, none failed, nothing was fatal and the exit code is 0."""
        if self.fatal:
            return self.fatal_outcome()
        if exit_code == 2:  # clap rejected the argv: the same argv will be rejected again
            return self.outcome(exit_sentence(exit_code, what=" (bad command line)", stderr_tail=stderr_tail), permanent=True)
        if self.turn_completed and exit_code == 0:
            # Codex exits 0 even when its own sandbox kept a command from running: a command
            # that never ran is a failed attempt, not a success with nothing done.
            if self.commands_refused:
                return self.outcome(f"a shell command never ran (codex's sandbox refused it): {self.commands_refused[0]}")
            if self.commands_open:
                return self.outcome(f"a shell command never finished: {next(iter(self.commands_open.values()))}")
            if HELPERS_MISSING in stderr_tail and not self.commands_seen and self.own_sandbox():
                # Measured with codex 0.169: when it cannot install its sandbox helpers (a
                # CODEX_HOME under a temporary directory, with bubblewrap on PATH) it runs no
                # shell command at all, says nothing in its stream, and exits 0.
                return self.outcome(
                    "codex could not set up its own sandbox and ran no shell command (it warned: "
                    f"{HELPERS_MISSING}); run it inside TAC-X's sandbox (the default) or with sandbox: danger-full-access",
                    permanent=True,
                )
            return self.outcome()
        failed = MCP_START_FAILED.search(stderr_tail) if not self.turn_completed else None
        if failed:
            return self.outcome(f"codex could not start the stage's MCP servers: {truncate(failed.group(1), 600)}")
        what = " after completing its turn" if self.turn_completed else " without completing a turn"
        if self.last_error:
            what += f"; last error: {self.last_error}"
        return self.outcome(exit_sentence(exit_code, what=what, stderr_tail=stderr_tail, killed_reason=killed_reason))


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal for ``codex -c key=value`` (strings JSON-quoted: valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{k if CONFIG_KEY.match(str(k)) and '.' not in str(k) else json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise ProviderError(f"codex option value {value!r} cannot be written as TOML", permanent=True)


def config_args(options: Mapping[str, Any]) -> list[str]:
    """``-c`` pairs for options ``base_url`` (a custom Responses-API model provider whose key is
    read from ``TACX_MODEL_API_KEY``) and ``config`` (mapping of dotted keys, or "k=v" strings)."""
    args: list[str] = []
    base_url = options.get("base_url")
    if base_url:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ProviderError(f"codex option base_url must be an http(s) URL, not {base_url!r}", permanent=True)
        table = {"name": MODEL_PROVIDER, "base_url": base_url, "wire_api": "responses", "env_key": MODEL_API_KEY_ENV}
        args += ["-c", f"model_provider={MODEL_PROVIDER}", "-c", f"model_providers.{MODEL_PROVIDER}={toml_value(table)}"]
    config = options.get("config") or {}
    if isinstance(config, Mapping):
        for key, value in config.items():
            if not CONFIG_KEY.match(str(key)):
                raise ProviderError(f"codex option config has a bad key {key!r}", permanent=True)
            args += ["-c", f"{key}={toml_value(value)}"]
    elif isinstance(config, list | tuple) and all(isinstance(c, str) and "=" in c for c in config):
        for pair in config:
            args += ["-c", pair]
    else:
        raise ProviderError("codex option config must be a mapping or a list of 'key=value' strings", permanent=True)
    return args


def write_mcp_servers(path: str, inv: Invocation) -> None:
    """The stage's MCP servers as ``mcp_servers`` of the private ``config.toml``, in place of the
    operator's (the file is rewritten as top-level ``key = value`` lines: the same TOML)."""
    config: dict[str, Any] = {}
    if os.path.isfile(path):
        try:
            with open(path, "rb") as f:
                config = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ProviderError(f"codex: the configured config.toml cannot be read to add MCP servers: {exc}", permanent=True) from None
    config["mcp_servers"] = codex_servers(inv.mcp_servers)
    lines = [f"{key if CONFIG_KEY.match(key) and '.' not in key else json.dumps(key)} = {toml_value(value)}" for key, value in config.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the copy of the operator's file kept its mode; this one holds secrets
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


class CodexProvider(Provider):
    name = "codex"
    executable = "codex"
    passthrough_env = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_API_KEY", "CODEX_HOME", MODEL_API_KEY_ENV)
    base_url_env = ("OPENAI_BASE_URL",)
    default_api_url = "https://api.openai.com"
    long_prompt_on_stdin = True
    # Each thread is `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-…-<id>.jsonl` (prepare_home makes
    # HOME/.codex the attempt's CODEX_HOME); `codex exec resume <id>` continues it.
    session_store = ("CODEX_HOME", ".codex", "sessions/*/*/*/rollout-*-{id}.jsonl")
    supports_mcp = True

    def build_command(self, inv: Invocation) -> list[str]:
        """``codex exec --json --skip-git-repo-check -C CWD [-m M] [--sandbox S] QUIET_CONFIG
        [-c k=v …] [extra_args] -- PROMPT``. Codex has no turn limit or tool allow-list flags, so
        ``max_turns``, ``allowed_tools`` and ``permission_mode`` are not used. The runner must give
        the process an empty stdin (codex appends piped stdin to the prompt)."""
        sandbox = inv.options.get("sandbox")
        if sandbox and sandbox not in SANDBOXES:
            raise ProviderError(f"codex option sandbox must be one of {', '.join(SANDBOXES)}, not {sandbox!r}", permanent=True)
        if inv.resume_session:
            # `codex exec resume` has no -C or --sandbox: the runner's cwd is the worktree and the
            # sandbox is the same setting as a config key (checked against codex 0.169).
            argv = [resolve_executable(self.executable), "exec", "resume", "--json", "--skip-git-repo-check"]
            if inv.model:
                argv += ["-m", inv.model]
            if inv.sandboxed or sandbox:
                argv += ["-c", f"sandbox_mode={toml_value('danger-full-access' if inv.sandboxed else str(sandbox))}"]
            prompt = "-" if prompt_too_long_for_argv(inv.prompt) else inv.prompt
            return [*argv, *QUIET_CONFIG, *config_args(inv.options), *inv.extra_args, "--", inv.resume_session, prompt]
        argv = [resolve_executable(self.executable), "exec", "--json", "--skip-git-repo-check", "-C", inv.cwd]
        if inv.model:
            argv += ["-m", inv.model]
        if inv.sandboxed:
            # Inside TAC-X's sandbox codex must not start its own: nested bubblewrap fails, and
            # codex 0.169's workspace-write with Debian's bwrap on PATH runs no command at all
            # while still exiting 0. TAC-X's sandbox is the boundary.
            argv += ["--sandbox", "danger-full-access"]
        elif sandbox:
            argv += ["--sandbox", str(sandbox)]
        # `-` as the prompt: codex reads it from stdin (a prompt too long for an argument).
        prompt = "-" if prompt_too_long_for_argv(inv.prompt) else inv.prompt
        return [*argv, *QUIET_CONFIG, *config_args(inv.options), *inv.extra_args, "--", prompt]

    def environment(self, inv: Invocation) -> dict[str, str]:
        """Option ``codex_home`` becomes ``CODEX_HOME`` (Codex's config, auth and session files).
        The directory is created if missing: codex 0.169 exits 1 on a ``CODEX_HOME`` that does
        not exist (the inherited one is created too)."""
        home = str(inv.options.get("codex_home") or os.environ.get("CODEX_HOME") or "")
        if home:
            os.makedirs(home, exist_ok=True)
        return {"CODEX_HOME": home} if inv.options.get("codex_home") else {}

    def prepare_home(self, home: str, inv: Invocation, env: dict[str, str]) -> None:
        """Codex keeps config, auth and sessions in ``CODEX_HOME``: a private one inside the
        attempt's HOME, seeded with ``auth.json`` and ``config.toml`` of the configured one (a
        ChatGPT login keeps working; sessions of other attempts stay out of reach)."""
        private = os.path.join(home, ".codex")
        os.makedirs(private, exist_ok=True)
        source = env.get("CODEX_HOME") or ""
        for name in ("auth.json", "config.toml"):
            path = os.path.join(source, name)
            if source and os.path.isfile(path):
                shutil.copyfile(path, os.path.join(private, name))
        env["CODEX_HOME"] = private
        if inv.mcp_servers:
            write_mcp_servers(os.path.join(private, "config.toml"), inv)

    def parser(self, inv: Invocation | None = None) -> CodexStreamParser:
        return CodexStreamParser(inv, cli_version=self.version())
