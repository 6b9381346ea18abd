"""Claude Code (``claude -p … --output-format stream-json --verbose``).

Usage accounting (the CLI repeats one API message's usage on each of its content-block lines):
an API request is identified by ``(message.id, input_tokens, cache_creation, cache_read)``. Lines
of one request repeat the same prompt figures, so they are counted once (keeping the largest
``output_tokens`` seen); a line that reuses an id with *different* prompt figures is a different
request (scripted model servers reuse ids). A line without an id counts on its own. The final
``result`` line replaces these running figures: its ``modelUsage`` summed over models when
present (it includes auxiliary models and matches ``total_cost_usd``; the plain ``usage`` covers
the main loop only), else its ``usage``; ``total_cost_usd`` and ``num_turns`` likewise.

Live usage: the ``assistant`` lines carry the usage of the API's ``message_start`` (input and cache
figures, ``output_tokens: 1``); a message's real output count only reaches the stream through
``--include-partial-messages``, whose ``stream_event`` lines hold the raw API events. The parser
reads their ``message_start`` and ``message_delta`` (output count of the message) so the running
usage, and the budget meter that watches it, are exact before the ``result`` line; every other
stream event is dropped (its text arrives again in the ``assistant`` lines).

Fail fast: Claude Code retries a failing API for minutes (``system/api_retry``). An auth or
billing failure is fatal on the first such line; any other error after ``AUTH_RETRY_LIMIT``
retries in a row.
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

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
    resolve_executable,
    tacx_setting,
    truncate,
    truncate_strings,
)
from .mcp_config import CLAUDE_CONFIG, McpConfigError, claude_allowed_tools, claude_config, write_json

AUTH_ERRORS = {"authentication_failed": "could not authenticate", "billing_error": "has a billing problem"}
AUTH_STATUSES = {401, 403}


def auth_sentence(error: str, status: int | None) -> str:
    """"agent could not authenticate (HTTP 401 from the model API)" and its billing sibling."""
    problem = AUTH_ERRORS.get(error, "could not authenticate")
    source = f"HTTP {status} from the model API" if status else f"{error} from the model API"
    return f"agent {problem} ({source})"


def tool_output(content: object) -> str:
    """A tool_result's ``content``: a string, or a list of blocks (text kept, others named)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            block = as_dict(block)
            if isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif block.get("type"):
                parts.append(f"[{block['type']}]")
        return "\n".join(parts)
    return "" if content is None else json.dumps(content)


class ClaudeStreamParser(StreamParser):
    """Parser for Claude Code stream-json (also used by the command provider's
    ``claude-stream-json`` format)."""

    mcp_tool_prefix = "mcp__{server}__"

    def __init__(self, inv: Invocation | None = None):
        super().__init__(inv)
        self.retry_limit = int(tacx_setting("AUTH_RETRY_LIMIT", 3))
        self.retries_in_a_row = 0
        self.requests: dict[tuple, dict[str, int]] = {}
        self.result: dict | None = None
        self.streaming: dict = {}  # the message being streamed (--include-partial-messages)

    def handle(self, obj: dict) -> list[Event] | None:
        kind = obj["type"]
        if kind == "system":
            return self.on_system(obj)
        if kind == "assistant":
            return self.on_assistant(obj)
        if kind == "user":
            return self.on_user(obj)
        if kind == "result":
            return self.on_result(obj)
        if kind == "stream_event":
            return self.on_stream_event(as_dict(obj.get("event")))
        if kind == "rate_limit_event":
            return [Event("system", {"subtype": "rate_limit", **as_dict(obj.get("rate_limit_info"))})]
        return None

    def on_system(self, obj: dict) -> list[Event]:
        subtype = str(obj.get("subtype") or "")
        if subtype == "init":
            self._usage.model = str(obj.get("model") or self._usage.model)
            self._usage.session_id = str(obj.get("session_id") or "")
            self._usage.cli_version = str(obj.get("claude_code_version") or "")
            data = {
                "subtype": "init",
                "model": self._usage.model,
                "session_id": self._usage.session_id,
                "cli_version": self._usage.cli_version,
                "cwd": obj.get("cwd", ""),
                "permission_mode": obj.get("permissionMode", ""),
                "tools": obj.get("tools", []),
                "mcp_servers": obj.get("mcp_servers", []),
            }
            return [Event("system", data)]
        if subtype == "api_retry":
            return self.on_api_retry(obj)
        data = {k: v for k, v in obj.items() if k not in ("type", "uuid")}
        return [Event("system", {"subtype": subtype, **truncate_strings(data)})]

    def on_api_retry(self, obj: dict) -> list[Event]:
        error = str(obj.get("error") or "unknown")
        status = obj.get("error_status") if isinstance(obj.get("error_status"), int) else None
        self.retries_in_a_row += 1
        what = f"{error} (HTTP {status})" if status else error
        message = f"model API error {what}, retry {obj.get('attempt', '?')} of {obj.get('max_retries', '?')}"
        if error in AUTH_ERRORS or status in AUTH_STATUSES:
            self.set_fatal(auth_sentence(error, status), permanent=True)
        elif self.retries_in_a_row >= self.retry_limit:
            self.set_fatal(f"agent's model API kept failing: {what}, {self.retries_in_a_row} retries in a row", permanent=False)
        return [Event("error", {"message": message, "fatal": self.fatal is not None})]

    def on_assistant(self, obj: dict) -> list[Event]:
        message = as_dict(obj.get("message"))
        events: list[Event] = []
        for block in message.get("content") or []:
            block = as_dict(block)
            btype = block.get("type")
            if btype == "text" and isinstance(block.get("text"), str):
                self.final_text = block["text"]
                events.append(Event("message", {"role": "assistant", "text": block["text"]}))
            elif btype == "thinking":
                events.append(Event("message", {"role": "thinking", "text": str(block.get("thinking") or "")}))
            elif btype in ("tool_use", "server_tool_use"):
                data = {"id": block.get("id", ""), "name": block.get("name", ""), "input": truncate_strings(block.get("input", {}))}
                events.append(Event("tool_call", data))
        error = obj.get("error")
        if error:
            text = self.final_text if message.get("model") == "<synthetic>" else ""
            if error in AUTH_ERRORS:
                self.set_fatal(auth_sentence(str(error), None), permanent=True)
            events.append(Event("error", {"message": f"model API error {error}" + (f": {text}" if text else ""), "fatal": self.fatal is not None}))
        else:
            self.retries_in_a_row = 0  # the API answered
            self.count_usage(message, obj)
        return events + self.usage_event()

    def count_usage(self, message: dict, obj: dict) -> None:
        usage = as_dict(message.get("usage"))
        if not usage:
            return
        prompt = (as_int(usage.get("input_tokens")), as_int(usage.get("cache_creation_input_tokens")), as_int(usage.get("cache_read_input_tokens")))
        key = (message.get("id") or f"line-{obj.get('uuid') or len(self.requests)}", *prompt)
        seen = self.requests.setdefault(key, {"output": 0})
        seen["output"] = max(seen["output"], as_int(usage.get("output_tokens")))
        if self.result is None:  # once the result line has spoken, its totals stand
            u = self._usage
            u.input_tokens = sum(k[1] for k in self.requests)
            u.cache_write_tokens = sum(k[2] for k in self.requests)
            u.cache_read_tokens = sum(k[3] for k in self.requests)
            u.output_tokens = sum(v["output"] for v in self.requests.values())
            u.turns = len(self.requests)

    def on_stream_event(self, event: dict) -> list[Event]:
        """A ``usage`` event when a message starts (its input figures) and when it ends (its
        output count); nothing for the other raw API events."""
        etype = event.get("type")
        if etype == "message_start":
            self.streaming = as_dict(event.get("message"))
            self.count_usage(self.streaming, {})
        elif etype == "message_delta" and self.streaming:
            # Keyed by message_start's figures, so the message's assistant lines count once.
            output = as_int(as_dict(event.get("usage")).get("output_tokens"))
            self.count_usage({**self.streaming, "usage": {**as_dict(self.streaming.get("usage")), "output_tokens": output}}, {})
        else:
            return []
        return self.usage_event()

    def on_user(self, obj: dict) -> list[Event]:
        content = as_dict(obj.get("message")).get("content")
        if isinstance(content, str):
            return [Event("message", {"role": "user", "text": content})]
        events = []
        for block in content or []:
            block = as_dict(block)
            if block.get("type") == "tool_result":
                output = truncate(tool_output(block.get("content")))
                events.append(Event("tool_result", {"id": block.get("tool_use_id", ""), "output": output, "is_error": bool(block.get("is_error"))}))
            elif isinstance(block.get("text"), str):
                events.append(Event("message", {"role": "user", "text": block["text"]}))
        return events

    def on_result(self, obj: dict) -> list[Event]:
        # Normalise first: ``finish`` only ever sees this clean summary, never the raw line.
        errors = obj.get("errors")
        status = obj.get("api_error_status")
        text = obj.get("result") if isinstance(obj.get("result"), str) else ""
        summary = {
            "subtype": str(obj.get("subtype") or ""),
            "is_error": bool(obj.get("is_error")),
            "text": text,
            "terminal_reason": str(obj.get("terminal_reason") or ""),
            "api_error_status": status if isinstance(status, int) and not isinstance(status, bool) else None,
            "errors": [str(e) for e in errors] if isinstance(errors, list) else [],
        }
        if text:
            self.final_text = text
        self.take_result_usage(obj)
        self.result = summary
        return [Event("result", {**summary, "text": truncate(text), "num_turns": self._usage.turns}), *self.usage_event()]

    def take_result_usage(self, obj: dict) -> None:
        u = self._usage
        model_usage = {str(k): as_dict(v) for k, v in as_dict(obj.get("modelUsage")).items()}
        if model_usage:
            u.input_tokens = sum(as_int(m.get("inputTokens")) for m in model_usage.values())
            u.output_tokens = sum(as_int(m.get("outputTokens")) for m in model_usage.values())
            u.cache_read_tokens = sum(as_int(m.get("cacheReadInputTokens")) for m in model_usage.values())
            u.cache_write_tokens = sum(as_int(m.get("cacheCreationInputTokens")) for m in model_usage.values())
            if not u.model:
                u.model = max(model_usage, key=lambda name: as_int(model_usage[name].get("outputTokens")))
        elif isinstance(obj.get("usage"), dict):
            usage = obj["usage"]
            u.input_tokens = as_int(usage.get("input_tokens"))
            u.output_tokens = as_int(usage.get("output_tokens"))
            u.cache_read_tokens = as_int(usage.get("cache_read_input_tokens"))
            u.cache_write_tokens = as_int(usage.get("cache_creation_input_tokens"))
        if "num_turns" in obj:
            u.turns = as_int(obj["num_turns"])
        u.session_id = str(obj.get("session_id") or u.session_id)
        cost = obj.get("total_cost_usd", obj.get("cost_usd"))
        if isinstance(cost, int | float) and not isinstance(cost, bool):
            try:
                self._reported_cost = Decimal(str(cost))
            except InvalidOperation:  # inf
                pass

    def finish(self, *, exit_code: int | None, stderr_tail: str = "", killed_reason: str = "") -> Outcome:
        """Success iff a ``result`` line said ``success`` with ``is_error`` false and the exit code
        is 0 (old builds could say ``error_during_execution`` with ``is_error`` false)."""
        result = self.result
        if self.fatal:
            # An error result with an HTTP status is the CLI's own, more precise account (the
            # synthetic auth message that made us fatal carries no status).
            if result is not None and result["is_error"] and result["api_error_status"] is not None:
                outcome = self.result_failure(result)
                outcome.permanent = outcome.permanent or self.fatal_permanent
                return outcome
            return self.fatal_outcome()
        if result is None:
            return self.outcome(exit_sentence(exit_code, what=" without a result", stderr_tail=stderr_tail, killed_reason=killed_reason))
        if not result["is_error"] and result["subtype"] == "success":
            if exit_code == 0:
                return self.outcome()
            return self.outcome(exit_sentence(exit_code, what=" after reporting success", stderr_tail=stderr_tail, killed_reason=killed_reason))
        return self.result_failure(result)

    def result_failure(self, result: dict) -> Outcome:
        """The sentence for an error ``result`` (its normalised summary)."""
        subtype, status = result["subtype"], result["api_error_status"]
        text = result["text"] or "; ".join(result["errors"])
        if subtype == "error_max_turns" or result["terminal_reason"] == "max_turns":
            limit = self.inv.max_turns if self.inv and self.inv.max_turns else None
            found = re.search(r"maximum number of turns \((\d+)\)", " ".join(result["errors"]))
            if limit is None and found:
                limit = int(found.group(1))
            detail = f"max turns {limit}" if limit is not None else f"after {self._usage.turns} turns"
            return self.outcome(f"agent hit its turn limit ({detail})")
        if subtype == "error_max_budget_usd":
            return self.outcome("agent hit its budget limit (--max-budget-usd)")
        if status in AUTH_STATUSES:
            return self.outcome(f"{auth_sentence('authentication_failed', status)}: {text}", permanent=True)
        if status is not None:
            return self.outcome(f"agent's model API returned HTTP {status}" + (f": {text}" if text else ""))
        return self.outcome(f"agent reported an error ({subtype or 'no subtype'})" + (f": {text}" if text else ""))


class ClaudeProvider(Provider):
    name = "claude"
    executable = "claude"
    passthrough_env = ("ANTHROPIC_", "CLAUDE_CODE_", "IS_SANDBOX", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
    base_url_env = ("ANTHROPIC_BASE_URL",)
    default_api_url = "https://api.anthropic.com"
    long_prompt_on_stdin = True
    # Each session is `~/.claude/projects/<cwd with / as ->/<id>.jsonl` (under CLAUDE_CONFIG_DIR
    # when set); `--resume <id>` continues it from the same cwd.
    session_store = ("CLAUDE_CONFIG_DIR", ".claude", "projects/*/{id}.jsonl")
    supports_mcp = True

    def build_command(self, inv: Invocation) -> list[str]:
        """``claude -p --output-format stream-json --verbose --include-partial-messages [flags]
        [extra_args] -- PROMPT`` (partial messages: exact live usage for the budget meter).

        ``-p`` is a flag and the prompt a positional argument; it goes last after ``--`` so that
        the variadic ``--allowedTools`` cannot swallow it and a prompt starting with ``-`` is not
        read as an option (checked against Claude Code 2.1.197)."""
        argv = [resolve_executable(self.executable), "-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages"]
        if inv.model:
            argv += ["--model", inv.model]
        if inv.max_turns:
            argv += ["--max-turns", str(inv.max_turns)]
        if inv.permission_mode:
            argv += ["--permission-mode", inv.permission_mode]
        if inv.mcp_servers:
            # The stage's servers only (no worktree .mcp.json, no user settings); the flag after
            # the variadic --mcp-config ends it.
            argv += ["--mcp-config", self.mcp_config_path(inv), "--strict-mcp-config"]
        allowed = [*inv.allowed_tools, *claude_allowed_tools(inv.mcp_servers)]
        if allowed:
            argv += ["--allowedTools", *allowed]
        if inv.resume_session:
            argv += ["--resume", inv.resume_session]
        if prompt_too_long_for_argv(inv.prompt):
            return [*argv, *inv.extra_args]  # `claude -p` reads the prompt from stdin
        return [*argv, *inv.extra_args, "--", inv.prompt]

    @staticmethod
    def mcp_config_path(inv: Invocation) -> str:
        if not inv.home:
            raise ProviderError("claude: MCP servers need the attempt's HOME to write --mcp-config into", permanent=True)
        return os.path.join(inv.home, CLAUDE_CONFIG)

    def prepare_home(self, home: str, inv: Invocation, env: dict[str, str]) -> None:
        """The stage's MCP servers as the ``--mcp-config`` file (pipeline.providers.mcp_config)."""
        if inv.mcp_servers:
            try:
                write_json(os.path.join(home, CLAUDE_CONFIG), claude_config(inv.mcp_servers))
            except McpConfigError as exc:
                raise ProviderError(str(exc), permanent=True) from None

    def session_targets(self, rel: Path, *, cwd: str) -> tuple[Path, ...]:
        """The project directory is the cwd with every non-alphanumeric character as `-`: put
        the session under the one for this attempt's cwd too (a sandbox may show another path)."""
        here = Path(".claude") / "projects" / re.sub(r"[^A-Za-z0-9]", "-", cwd) / rel.name
        return (rel,) if here == rel else (rel, here)

    def environment(self, inv: Invocation) -> dict[str, str]:
        """``IS_SANDBOX=1`` (we run as root; bypass modes need it), no telemetry or self-update;
        option ``base_url`` becomes ``ANTHROPIC_BASE_URL``; with MCP servers, wait for them."""
        env = {
            "IS_SANDBOX": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }
        if inv.options.get("base_url"):
            env["ANTHROPIC_BASE_URL"] = str(inv.options["base_url"])
        if inv.mcp_servers:
            # 2.1.197 starts `-p` before its MCP servers connect (a first tool call fails with
            # "still connecting"); "false" makes it wait for them, bounded by MCP_TIMEOUT.
            env["MCP_CONNECTION_NONBLOCKING"] = "false"
        return env

    def parser(self, inv: Invocation | None = None) -> ClaudeStreamParser:
        return ClaudeStreamParser(inv)
