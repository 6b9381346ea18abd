"""Qwen Code (``qwen -p PROMPT -o stream-json``), checked on @qwen-code/qwen-code 0.24.4.

Qwen Code is a Gemini CLI fork whose stream-json copies Claude Code's (``system/init``,
``assistant`` and ``user`` lines with content blocks, a final ``result`` with ``is_error``,
``num_turns`` and ``usage``), so the parser is Claude's with three differences measured against
the scripted model server:

* token semantics are OpenAI's: ``usage.input_tokens`` INCLUDES ``cache_read_input_tokens``
  (it is the API's ``prompt_tokens``), so TAC-X's input is the difference; there is no
  cache-write figure (an OpenAI-compatible API has none). ``result.usage`` equals the sum of
  the API's usage over every call; no cost is reported: it is priced.
* the version is ``qwen_code_version`` on the init line;
* failures: an API error ends the run with exit 1 and a ``result`` of subtype
  ``error_during_execution`` whose ``error.message`` is "[API Error: <status> <message>]";
  401/403 are not retried (the attempt fails in seconds). The turn limit
  (``--max-session-turns``) ends the run with exit 53 and no ``result`` line (the reason is on
  stderr only).

Retries: 429 and 5xx answers are retried inside the CLI by two nested loops, the OpenAI SDK's
(``model.generationConfig.maxRetries`` in settings, set by ``prepare_home``) and Qwen Code's own
(7 attempts, 1.5 s doubling to 30 s, or the server's ``Retry-After``), with nothing on stdout
meanwhile: the stage's timeout and stall timeout bound them.

It reads a ``.env`` file walking up from its working directory for variables that are not set,
so the base URL and the model are always set explicitly (a worktree's ``.env`` must not redirect
the API key to another host).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .api_errors import http_error_sentence, status_in_message
from .base import (
    Event,
    Invocation,
    Outcome,
    Provider,
    ProviderError,
    exit_sentence,
    resolve_executable,
    tacx_setting,
    write_home_settings,
)
from .claude import ClaudeStreamParser
from .mcp_config import McpConfigError, gemini_servers

TURN_LIMIT_EXIT = 53


def openai_usage(usage: object) -> object:
    """A Qwen usage dict in Claude semantics (input without the cache reads)."""
    if not isinstance(usage, dict):
        return usage
    cached = usage.get("cache_read_input_tokens")
    total = usage.get("input_tokens")
    if isinstance(cached, int) and isinstance(total, int) and not isinstance(cached, bool):
        return {**usage, "input_tokens": max(total - cached, 0)}
    return usage


class QwenStreamParser(ClaudeStreamParser):
    """Parser for ``qwen -o stream-json`` (see the module docstring)."""

    def __init__(self, inv: Invocation | None = None, *, cli_version: str = ""):
        super().__init__(inv)
        self._usage.cli_version = cli_version

    def on_system(self, obj: dict) -> list[Event]:
        version = obj.get("qwen_code_version")
        events = super().on_system({**obj, "claude_code_version": version} if version else obj)
        if not self._usage.cli_version and isinstance(version, str):
            self._usage.cli_version = version
        return events

    def count_usage(self, message: dict, obj: dict) -> None:
        super().count_usage({**message, "usage": openai_usage(message.get("usage"))}, obj)

    def take_result_usage(self, obj: dict) -> None:
        super().take_result_usage({**obj, "usage": openai_usage(obj.get("usage"))})

    def on_result(self, obj: dict) -> list[Event]:
        error = obj.get("error")
        if isinstance(error, dict) and not obj.get("result") and isinstance(error.get("message"), str):
            obj = {**obj, "result": error["message"]}  # the Claude parser reads the text there
        return super().on_result(obj)

    def finish(self, *, exit_code: int | None, stderr_tail: str = "", killed_reason: str = "") -> Outcome:
        if self.fatal is None and self.result is None and exit_code == TURN_LIMIT_EXIT:
            limit = self.inv.max_turns if self.inv and self.inv.max_turns else None
            detail = f"max turns {limit}" if limit else f"after {self._usage.turns} turns"
            return self.outcome(f"agent hit its turn limit ({detail}; Qwen Code exit code 53)")
        result = self.result
        if self.fatal is None and result is not None and result["is_error"]:
            status = status_in_message(result["text"])
            if status is not None:
                sentence, permanent = http_error_sentence(status, result["text"])
                return self.outcome(sentence, permanent=permanent)
        outcome = super().finish(exit_code=exit_code, stderr_tail=stderr_tail, killed_reason=killed_reason)
        if not outcome.success and result is None and self.fatal is None:
            outcome.error = exit_sentence(exit_code, what=" without a result", stderr_tail=stderr_tail, killed_reason=killed_reason)
        return outcome


class QwenProvider(Provider):
    name = "qwen"
    executable = "qwen"
    passthrough_env = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL")
    base_url_env = ("OPENAI_BASE_URL",)
    default_api_url = "https://api.openai.com/v1"
    supports_mcp = True

    def build_command(self, inv: Invocation) -> list[str]:
        """``qwen -o stream-json --auth-type openai --approval-mode M [-m M]
        [--max-session-turns N] [--allowed-tools T …] [extra_args] -p PROMPT``. The approval
        mode defaults to ``yolo`` (headless: anything else refuses the write and shell tools);
        ``--prompt=PROMPT`` when the prompt starts with ``-``."""
        argv = [resolve_executable(self.executable), "-o", "stream-json", "--auth-type", "openai", "--approval-mode", inv.permission_mode or "yolo"]
        if inv.model:
            argv += ["-m", inv.model]
        if inv.max_turns:
            argv += ["--max-session-turns", str(inv.max_turns)]
        if inv.allowed_tools:
            argv += ["--allowed-tools", *inv.allowed_tools]
        if inv.mcp_servers:
            argv += ["--allowed-mcp-server-names", ",".join(s.name for s in inv.mcp_servers)]
        argv += inv.extra_args
        return argv + ([f"--prompt={inv.prompt}"] if inv.prompt.startswith("-") else ["-p", inv.prompt])

    def environment(self, inv: Invocation) -> dict[str, str]:
        """``OPENAI_BASE_URL`` always set (option ``base_url``, else the inherited one, else
        OpenAI's) and ``OPENAI_MODEL`` when a model is asked for: Qwen Code would otherwise take
        them from a ``.env`` in the worktree. No yolo warning on stderr."""
        env = {
            "OPENAI_BASE_URL": str(inv.options.get("base_url") or os.environ.get("OPENAI_BASE_URL") or self.default_api_url),
            "QWEN_CODE_SUPPRESS_YOLO_WARNING": "1",
        }
        if inv.model:
            env["OPENAI_MODEL"] = inv.model
        return env

    def prepare_home(self, home: str, inv: Invocation, env: Mapping[str, str]) -> None:
        """``$HOME/.qwen/settings.json``: OpenAI-compatible auth selected, usage statistics and
        telemetry off, no update checks, no background memory subagent, and the SDK's retries of a 429/5xx bounded (option
        ``max_retries``, else ``TACX["QWEN_MAX_RETRIES"]``, default 1)."""
        retries = inv.options.get("max_retries", tacx_setting("QWEN_MAX_RETRIES", 1))
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ProviderError(f"qwen option max_retries must be a non-negative integer, not {retries!r}", permanent=True)
        settings = {
            "security": {"auth": {"selectedType": "openai"}},
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False},
            "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
            "model": {"generationConfig": {"maxRetries": retries}},
            # After a text-only answer 0.24.4 may start a "managed memory extraction" subagent:
            # another model call (counted in result.usage) writing memories into HOME.
            "memory": {"enableManagedAutoMemory": False, "enableManagedAutoDream": False, "enableAutoSkill": False},
        }
        if inv.mcp_servers:
            try:
                settings["mcpServers"] = gemini_servers(inv.mcp_servers, http_key="httpUrl")
            except McpConfigError as exc:
                raise ProviderError(str(exc), permanent=True) from None
        write_home_settings(home, ".qwen", settings)

    def parser(self, inv: Invocation | None = None) -> QwenStreamParser:
        return QwenStreamParser(inv, cli_version=self.version())
