"""Google Gemini CLI (``gemini -p PROMPT -o stream-json``), format of gemini-cli ≥ 0.22.

Assistant text arrives as ``message`` deltas: consecutive deltas are joined into one ``message``
event, emitted when the next non-delta line arrives (a killed run keeps its partial text in
``Outcome.final_text``, which, like Gemini's own JSON ``response``, is every assistant delta
joined). Usage comes from ``result.stats`` only: ``input_tokens`` there includes ``cached``, so
TAC-X's input is ``stats.input`` when present, else ``input_tokens - cached``. No cost is reported:
it comes from ``pipeline.lib.pricing`` (model from ``stats.models`` or ``init``; ``auto`` is unknown).
Turns: Gemini reports none; ``turns`` counts model responses (an assistant message or tool call
after the prompt or a tool result). Exit codes: 41 auth, 42 input, 44 sandbox, 52 config,
53 turn limit, 54 tool failure, 55 untrusted folder, 130 cancelled; an API error ends the run
with the HTTP status modulo 256 (401 → 145, 403 → 147, 429 → 173, 500 → 244; measured on 0.61.0).
A ``result`` with ``status: "error"`` is a failure even with exit code 0 (four empty answers).

Output tokens: ``stats.output_tokens`` counts candidates only; thought tokens appear only in
``total_tokens``, so TAC-X's output is ``total_tokens - input_tokens`` when that is larger (Google
bills thoughts as output). Measured against the scripted server: ``stats`` is exactly the sum of
the last ``usageMetadata`` of every model call.

Headless set-up (``GeminiProvider.prepare_home``): with a base URL set, the CLI's auth detection
picks a gateway type that headless validation rejects (exit 41), so the private HOME's
``.gemini/settings.json`` selects API-key auth; it also turns folder trust, telemetry, usage
statistics, update checks and the IDE integration off, sets the turn limit
(``model.maxSessionTurns``) and bounds the retries of 429/5xx answers (``general.maxAttempts``,
default 10 attempts over ≈ 210 s).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from .api_errors import http_error_sentence, status_in_message
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
    write_home_settings,
)
from .mcp_config import McpConfigError, gemini_servers

# exit code -> (sentence, permanent)
EXIT_CODES: dict[int, tuple[str, bool]] = {
    41: ("agent could not authenticate (Gemini CLI exit code 41)", True),
    42: ("agent rejected its input (Gemini CLI exit code 42)", True),
    44: ("agent's sandbox failed (Gemini CLI exit code 44)", True),
    52: ("agent's configuration is invalid (Gemini CLI exit code 52)", True),
    53: ("agent hit its turn limit (Gemini CLI exit code 53, maxSessionTurns)", False),
    54: ("a tool failed fatally (Gemini CLI exit code 54)", False),
    55: ("agent does not trust the workspace folder (Gemini CLI exit code 55)", True),
    130: ("agent was cancelled (Gemini CLI exit code 130)", False),
}
ERROR_TYPES = {
    "FatalAuthenticationError": 41,
    "FatalInputError": 42,
    "FatalSandboxError": 44,
    "FatalConfigError": 52,
    "FatalTurnLimitedError": 53,
    "FatalToolExecutionError": 54,
    "FatalUntrustedWorkspaceError": 55,
}


API_ERROR = re.compile(r"\b([45]\d\d)\b")


def http_status(exit_code: int | None, message: str) -> int | None:
    """The HTTP status behind an API-error exit (``status % 256``, for 400–511) when the error
    message agrees (an "[API Error: …]" or the status quoted), else ``None``."""
    if exit_code is None or not 144 <= exit_code <= 255:
        return None
    status = exit_code + 256
    agrees = not message or "API Error" in message or str(status) in API_ERROR.findall(message)
    return status if agrees else None


class GeminiStreamParser(StreamParser):
    """Parser for ``gemini -o stream-json``."""

    mcp_tool_prefix = "mcp_{server}_"

    def __init__(self, inv: Invocation | None = None, *, cli_version: str = ""):
        super().__init__(inv)
        self._usage.cli_version = cli_version
        self.pending: list[str] = []  # assistant deltas not yet emitted
        self.texts: list[str] = []  # every assistant delta, for final_text
        self.responding = False  # inside a model response (for counting turns)
        self.result: dict | None = None
        self.last_error = ""

    def handle(self, obj: dict) -> list[Event] | None:
        kind = obj["type"]
        if kind == "message" and obj.get("role") == "assistant" and obj.get("delta"):
            return self.on_delta(str(obj.get("content") or ""))
        events = self.flush()
        if kind == "init":
            self._usage.session_id = str(obj.get("session_id") or "")
            self._usage.model = str(obj.get("model") or self._usage.model)
            events.append(Event("system", {"subtype": "init", "session_id": self._usage.session_id, "model": self._usage.model}))
        elif kind == "message":
            role = str(obj.get("role") or "")
            if role == "assistant":
                self.count_turn()
                self.texts.append(str(obj.get("content") or ""))
                self.final_text = "".join(self.texts)
            else:
                self.responding = False
            events.append(Event("message", {"role": role, "text": str(obj.get("content") or "")}))
        elif kind == "tool_use":
            self.count_turn()
            data = {"id": obj.get("tool_id", ""), "name": obj.get("tool_name", ""), "input": truncate_strings(obj.get("parameters") or {})}
            events.append(Event("tool_call", data))
        elif kind == "tool_result":
            self.responding = False
            error = as_dict(obj.get("error"))
            output = obj.get("output")
            text = output if isinstance(output, str) and output else str(error.get("message") or output or "")
            events.append(Event("tool_result", {"id": obj.get("tool_id", ""), "output": truncate(text), "is_error": obj.get("status") != "success"}))
        elif kind == "error":
            self.last_error = str(obj.get("message") or "")
            events.append(Event("error", {"message": str(obj.get("message") or ""), "fatal": False, "severity": obj.get("severity", "")}))
        elif kind == "result":
            events += self.on_result(obj)
        else:
            return [*events, raw_event(json.dumps(obj), f"unknown line type {kind!r}")]
        return events

    def on_delta(self, text: str) -> list[Event]:
        self.count_turn()
        self.pending.append(text)
        self.texts.append(text)
        self.final_text = "".join(self.texts)
        return []

    def flush(self) -> list[Event]:
        if not self.pending:
            return []
        text, self.pending = "".join(self.pending), []
        return [Event("message", {"role": "assistant", "text": text})]

    def count_turn(self) -> None:
        if not self.responding:
            self.responding = True
            self._usage.turns += 1

    def on_result(self, obj: dict) -> list[Event]:
        self.result = obj
        stats = as_dict(obj.get("stats"))
        u = self._usage
        cached = as_int(stats.get("cached"))
        u.input_tokens = as_int(stats["input"]) if "input" in stats else max(as_int(stats.get("input_tokens")) - cached, 0)
        # Thoughts are only in total_tokens (total = prompt incl. cached + candidates + thoughts).
        u.output_tokens = max(as_int(stats.get("output_tokens")), as_int(stats.get("total_tokens")) - as_int(stats.get("input_tokens")))
        u.cache_read_tokens = cached
        models = as_dict(stats.get("models"))
        if models:  # the resolved model(s); init may only say "auto"
            u.model = max(models, key=lambda m: as_int(as_dict(models[m]).get("total_tokens")))
        error = as_dict(obj.get("error"))
        status = str(obj.get("status") or "")
        data = {"subtype": status, "is_error": status != "success", "text": truncate(self.final_text)}
        if error:
            data["error_type"] = str(error.get("type") or "")
            data["text"] = truncate(str(error.get("message") or ""))
        return [Event("result", data), *self.usage_event()]

    def finish(self, *, exit_code: int | None, stderr_tail: str = "", killed_reason: str = "") -> Outcome:
        """Success iff the result says ``success`` and the exit code is 0; the documented exit
        codes (and the ``Fatal…Error`` types behind them) name the failure."""
        if self.fatal:
            return self.fatal_outcome()
        result = self.result
        if result is not None and result.get("status") == "success" and exit_code == 0:
            return self.outcome()
        error = as_dict(result.get("error")) if result else {}
        message = str(error.get("message") or "")
        status = http_status(exit_code, message or stderr_tail) or status_in_message(message)
        if status is not None:
            detail = message or stderr_tail.strip()[-500:]
            attempts = self.inv.options.get("max_attempts") if self.inv else None
            sentence, permanent = http_error_sentence(status, detail, attempts=attempts or tacx_setting("GEMINI_MAX_ATTEMPTS", 3))
            return self.outcome(sentence, permanent=permanent)
        code = exit_code if exit_code in EXIT_CODES else ERROR_TYPES.get(str(error.get("type") or ""))
        if code is not None:
            sentence, permanent = EXIT_CODES[code]
            if code == 53 and self.inv and self.inv.max_turns:
                sentence = f"agent hit its turn limit (max turns {self.inv.max_turns}; Gemini CLI exit code 53)"
            detail = message or stderr_tail.strip()[-500:]
            return self.outcome(sentence + (f": {detail}" if detail else ""), permanent=permanent)
        if error:
            return self.outcome(f"agent reported an error ({error.get('type') or 'unknown'}): {message}")
        if result is not None and exit_code == 0:  # e.g. four empty answers: status error, exit 0
            detail = self.last_error or "no error message"
            return self.outcome(f"agent reported status {result.get('status')!r} and exited 0: {detail}")
        what = " without a result" if result is None else ""
        return self.outcome(exit_sentence(exit_code, what=what, stderr_tail=stderr_tail, killed_reason=killed_reason))


class GeminiProvider(Provider):
    name = "gemini"
    executable = "gemini"
    passthrough_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL")
    base_url_env = ("GOOGLE_GEMINI_BASE_URL",)
    default_api_url = "https://generativelanguage.googleapis.com"
    long_prompt_on_stdin = True
    supports_mcp = True

    def build_command(self, inv: Invocation) -> list[str]:
        """``gemini -o stream-json --approval-mode M [-m M] [--allowed-tools T …] [extra_args]
        -p PROMPT`` (``--prompt=PROMPT`` when the prompt starts with ``-``, which yargs would
        otherwise read as a flag). The approval mode defaults to ``yolo``: in any other mode a
        headless run is not even offered the write and shell tools (their calls come back as
        ``tool_not_registered`` and the run still exits 0). The turn limit is a setting
        (``prepare_home``), not a flag."""
        argv = [resolve_executable(self.executable), "-o", "stream-json", "--approval-mode", inv.permission_mode or "yolo"]
        if inv.model:
            argv += ["-m", inv.model]
        if inv.allowed_tools:
            argv += ["--allowed-tools", *inv.allowed_tools]
        if inv.mcp_servers:
            # Only the stage's servers connect (not those of a worktree's .gemini/settings.json).
            argv += ["--allowed-mcp-server-names", ",".join(s.name for s in inv.mcp_servers)]
        argv += inv.extra_args
        if prompt_too_long_for_argv(inv.prompt):
            return argv  # no -p: gemini reads the prompt from a piped stdin
        return argv + ([f"--prompt={inv.prompt}"] if inv.prompt.startswith("-") else ["-p", inv.prompt])

    def environment(self, inv: Invocation) -> dict[str, str]:
        """Option ``base_url`` becomes ``GOOGLE_GEMINI_BASE_URL``."""
        return {"GOOGLE_GEMINI_BASE_URL": str(inv.options["base_url"])} if inv.options.get("base_url") else {}

    def prepare_home(self, home: str, inv: Invocation, env: Mapping[str, str]) -> None:
        """``$HOME/.gemini/settings.json`` for a headless, offline-safe run (module docstring).
        ``general.maxAttempts``: option ``max_attempts``, else ``TACX["GEMINI_MAX_ATTEMPTS"]``
        (default 3: a 429 fails the attempt in about 15 s instead of 210 s; TAC-X retries the
        stage itself)."""
        attempts = inv.options.get("max_attempts") or tacx_setting("GEMINI_MAX_ATTEMPTS", 3)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ProviderError(f"gemini option max_attempts must be a positive integer, not {attempts!r}", permanent=True)
        settings = {
            "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False},
            "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False, "maxAttempts": attempts},
            "ide": {"enabled": False},
            "model": {"maxSessionTurns": inv.max_turns or -1},
        }
        if inv.mcp_servers:
            try:
                settings["mcpServers"] = gemini_servers(inv.mcp_servers)
            except McpConfigError as exc:
                raise ProviderError(str(exc), permanent=True) from None
        write_home_settings(home, ".gemini", settings)

    def parser(self, inv: Invocation | None = None) -> GeminiStreamParser:
        return GeminiStreamParser(inv, cli_version=self.version())
