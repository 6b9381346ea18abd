"""opencode (``opencode run --format json --auto PROMPT``), checked on opencode-ai 1.18.33.

Lines: ``{"type", "timestamp", "sessionID", …}`` with ``step_start``, ``text`` (a whole text
part), ``reasoning``, ``tool_use`` (one line per finished call, input and output together),
``step_finish`` (``part.tokens`` and ``part.cost`` of that model call), ``error`` and, in newer
builds, ``done``.

Usage: ``step_finish`` figures are per call, so they are summed. Their semantics are Claude's
already (``tokens.input`` excludes ``tokens.cache.read``/``write``; measured: prompt 1300 with
300 cached → input 1000, read 300). ``tokens.output`` excludes ``tokens.reasoning``, so TAC-X's
output is their sum. opencode prices every call itself from its model configuration: the cost
is the sum of ``part.cost`` (``OpencodeProvider`` writes TAC-X's price table into that
configuration, so both agree). Turns = ``step_finish`` lines.

Turn limit: opencode 1.18 has no flag for it; the parser makes the run fatal when a call ends
with ``reason: "tool-calls"`` (the agent wants another) after ``max_turns`` calls, and the runner
stops the agent. Errors: an ``error`` line (``error.data.statusCode`` for API errors) and exit 1;
401/403 are not retried, 429/5xx are retried 5 times (2 s doubling, or the server's
``Retry-After``) with nothing on stdout meanwhile.

Configuration: ``OPENCODE_CONFIG_CONTENT`` (JSON) defines a provider ``tacx`` through
``@ai-sdk/openai-compatible`` at the stage's base URL (option ``base_url``, else
``OPENCODE_BASE_URL``) whose key is read from ``OPENCODE_API_KEY`` (``{env:…}``: the key is not
in the configuration text); ``model: foo`` runs ``tacx/foo``, ``model: p/foo`` runs ``p/foo`` as
configured elsewhere. ``OPENCODE_DISABLE_MODELS_FETCH`` and ``OPENCODE_DISABLE_AUTOUPDATE`` (and a few more
``OPENCODE_DISABLE_*``) plus an offline ``~/.npmrc`` keep it off the network: checked with strace,
it then connects to the model server only (without the ``.npmrc`` it downloads
``@opencode-ai/plugin`` from registry.npmjs.org at start-up). A worktree's ``opencode.json`` is
ignored (``OPENCODE_DISABLE_PROJECT_CONFIG``): it could redefine the provider and its URL. It keeps its sessions under ``$HOME/.local/share/opencode`` and a directory in
the temp dir: both private per attempt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from ..lib.pricing import price_for
from .api_errors import http_error_sentence
from .base import (
    Event,
    Invocation,
    Outcome,
    Provider,
    StreamParser,
    as_dict,
    as_int,
    exit_sentence,
    resolve_executable,
    truncate,
    truncate_strings,
)
from .mcp_config import opencode_mcp, write_json

PROVIDER_ID = "tacx"


class OpencodeStreamParser(StreamParser):
    """Parser for ``opencode run --format json``."""

    mcp_tool_prefix = "{server}_"

    def __init__(self, inv: Invocation | None = None, *, cli_version: str = ""):
        super().__init__(inv)
        self._usage.cli_version = cli_version
        self.stopped = False  # a step ended with reason "stop": the agent is done
        self.last_error = ""
        self.error_status: int | None = None

    def handle(self, obj: dict) -> list[Event] | None:
        kind = obj["type"]
        part = as_dict(obj.get("part"))
        if isinstance(obj.get("sessionID"), str):
            self._usage.session_id = obj["sessionID"]
        if kind == "step_start":
            return [Event("system", {"subtype": "step_start", "session_id": self._usage.session_id})]
        if kind == "text":
            text = str(part.get("text") or "")
            self.final_text = text
            return [Event("message", {"role": "assistant", "text": text})]
        if kind == "reasoning":
            return [Event("message", {"role": "reasoning", "text": str(part.get("text") or "")})]
        if kind == "tool_use":
            return self.on_tool(part)
        if kind == "step_finish":
            return self.on_step_finish(part)
        if kind == "error":
            return self.on_error(as_dict(obj.get("error")))
        if kind == "done":
            return [Event("system", {"subtype": "done", **truncate_strings({k: v for k, v in obj.items() if k not in ("type", "timestamp")})})]
        return None

    def on_tool(self, part: dict) -> list[Event]:
        state = as_dict(part.get("state"))
        call_id = str(part.get("callID") or part.get("id") or "")
        events = [Event("tool_call", {"id": call_id, "name": str(part.get("tool") or ""), "input": truncate_strings(state.get("input") or {})})]
        status = state.get("status")
        if status in ("completed", "error"):
            output = state.get("output") if status == "completed" else state.get("error")
            events.append(Event("tool_result", {"id": call_id, "output": truncate(str(output or "")), "is_error": status == "error"}))
        return events

    def on_step_finish(self, part: dict) -> list[Event]:
        tokens = as_dict(part.get("tokens"))
        cache = as_dict(tokens.get("cache"))
        u = self._usage
        u.input_tokens += as_int(tokens.get("input"))
        u.output_tokens += as_int(tokens.get("output")) + as_int(tokens.get("reasoning"))
        u.cache_read_tokens += as_int(cache.get("read"))
        u.cache_write_tokens += as_int(cache.get("write"))
        u.turns += 1
        cost = part.get("cost")
        if isinstance(cost, int | float) and not isinstance(cost, bool):
            try:
                self._reported_cost = (self._reported_cost or Decimal(0)) + Decimal(str(cost))
            except InvalidOperation:
                pass
        reason = str(part.get("reason") or "")
        self.stopped = reason == "stop"
        limit = self.inv.max_turns if self.inv else None
        if limit and u.turns >= limit and reason == "tool-calls":
            self.set_fatal(f"agent hit its turn limit (max turns {limit})", permanent=False)
        return [Event("system", {"subtype": "step_finish", "reason": reason}), *self.usage_event()]

    def on_error(self, error: dict) -> list[Event]:
        data = as_dict(error.get("data"))
        message = str(data.get("message") or error.get("name") or "unknown error")
        status = data.get("statusCode")
        self.last_error = message
        if isinstance(status, int) and not isinstance(status, bool):
            self.error_status = status
            if status in (401, 403):
                sentence, permanent = http_error_sentence(status, message)
                self.set_fatal(sentence, permanent=permanent)
        return [Event("error", {"message": truncate(message), "fatal": self.fatal is not None, "name": str(error.get("name") or "")})]

    def finish(self, *, exit_code: int | None, stderr_tail: str = "", killed_reason: str = "") -> Outcome:
        """Success iff the last step ended with ``stop``, no error line came and the exit code
        is 0."""
        if self.fatal:
            return self.fatal_outcome()
        if self.error_status is not None:
            sentence, permanent = http_error_sentence(self.error_status, self.last_error)
            return self.outcome(sentence, permanent=permanent)
        if self.last_error:
            return self.outcome(f"agent reported an error: {self.last_error}" + (f" (exit code {exit_code})" if exit_code else ""))
        if self.stopped and exit_code == 0:
            return self.outcome()
        what = " before finishing its last step" if self._usage.turns else " without a step"
        return self.outcome(exit_sentence(exit_code, what=what, stderr_tail=stderr_tail, killed_reason=killed_reason))


def price_config(model: str) -> dict[str, float]:
    """opencode's ``cost`` block (USD per million tokens) from TAC-X's price table, or {}."""
    price = price_for(model)
    if price is None:
        return {}
    return {"input": float(price.input), "output": float(price.output), "cache_read": float(price.cache_read), "cache_write": float(price.cache_write)}


class OpencodeProvider(Provider):
    name = "opencode"
    executable = "opencode"
    passthrough_env = ("OPENCODE_API_KEY", "OPENCODE_BASE_URL")
    base_url_env = ("OPENCODE_BASE_URL",)
    default_api_url = "https://api.openai.com/v1"
    supports_mcp = True

    def build_command(self, inv: Invocation) -> list[str]:
        """``opencode run --format json --auto [-m PROVIDER/MODEL] [extra_args] -- PROMPT``
        (``--auto``: headless permission prompts are otherwise refused). ``max_turns`` is
        enforced by the parser; ``allowed_tools`` and ``permission_mode`` are not used."""
        argv = [resolve_executable(self.executable), "run", "--format", "json", "--auto"]
        if inv.model:
            argv += ["-m", self.model_id(inv.model)]
        return [*argv, *inv.extra_args, "--", inv.prompt]

    @staticmethod
    def model_id(model: str) -> str:
        return model if "/" in model else f"{PROVIDER_ID}/{model}"

    def environment(self, inv: Invocation) -> dict[str, str]:
        """``OPENCODE_CONFIG_CONTENT`` (the ``tacx`` provider, see the module docstring), no
        model-list fetch, no update check."""
        base_url = str(inv.options.get("base_url") or os.environ.get("OPENCODE_BASE_URL") or self.default_api_url)
        models = {}
        if inv.model and "/" not in inv.model:
            models[inv.model] = {"name": inv.model, **({"cost": cost} if (cost := price_config(inv.model)) else {})}
        config = {
            "$schema": "https://opencode.ai/config.json",
            "provider": {PROVIDER_ID: {"npm": "@ai-sdk/openai-compatible", "name": "TAC-X", "options": {"baseURL": base_url, "apiKey": "{env:OPENCODE_API_KEY}"}, "models": models}},
            "autoupdate": False,
            "share": "disabled",
        }
        if inv.model:
            config["model"] = self.model_id(inv.model)
        return {
            "OPENCODE_CONFIG_CONTENT": json.dumps(config),
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
            "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
            "OPENCODE_DISABLE_SHARE": "1",
            # An opencode.json in the worktree must not redefine the provider (and send the key
            # elsewhere) or add tools: TAC-X's configuration is the only one.
            "OPENCODE_DISABLE_PROJECT_CONFIG": "1",
            "OPENCODE_BASE_URL": base_url,
        }

    def prepare_home(self, home: str, inv: Invocation, env: Mapping[str, str]) -> None:
        """``$HOME/.npmrc`` making npm offline: at start-up opencode 1.18 installs
        ``@opencode-ai/plugin`` from the npm registry into its config directory
        (``~/.config/opencode``) in the background, a download an agent stage does not need."""
        with open(os.path.join(home, ".npmrc"), "w", encoding="utf-8") as f:
            f.write("offline=true\n")
        if inv.mcp_servers:
            # The global configuration of the attempt's HOME: a worktree's opencode.json is
            # ignored (OPENCODE_DISABLE_PROJECT_CONFIG), so these are its only servers.
            config = {"$schema": "https://opencode.ai/config.json", "mcp": opencode_mcp(inv.mcp_servers)}
            write_json(os.path.join(home, ".config", "opencode", "opencode.json"), config)

    def parser(self, inv: Invocation | None = None) -> OpencodeStreamParser:
        return OpencodeStreamParser(inv, cli_version=self.version())
