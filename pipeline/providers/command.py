"""The generic ``command`` provider: any program as a stage.

Stage options::

    argv: ["my-agent", "--model", "{model}", "--", "{prompt}"]   # list, never a shell string
    format: text | claude-stream-json | codex-json                 # default text
    env: {NAME: value}                                             # optional literal variables

Placeholders ``{prompt}``, ``{model}``, ``{cwd}`` and ``{max_turns}`` are replaced inside each
element in one pass (a prompt containing ``{model}`` stays as written); other braces are left
alone. ``text``: every stdout line is an ``output`` event (not an assistant message: no model
speaks), the whole output is the final text, success iff exit code 0. The JSON formats reuse the
Claude and Codex parsers. In every format the program's stderr lines become ``stderr`` events.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .base import (
    PROMPT_ARG_LIMIT,
    Event,
    Invocation,
    Outcome,
    Provider,
    ProviderError,
    StreamParser,
    exit_sentence,
    prompt_too_long_for_argv,
    resolve_executable,
    truncate,
)
from .claude import ClaudeStreamParser
from .codex import CodexStreamParser

PLACEHOLDER = re.compile(r"\{(prompt|model|cwd|max_turns)\}")
FINAL_TEXT_LIMIT = 1_000_000  # characters of stdout kept as the final text


class TextStreamParser(StreamParser):
    """Plain text output: one ``output`` event per non-empty line; never a raw event."""

    def __init__(self, inv: Invocation | None = None):
        super().__init__(inv)
        self.lines: list[str] = []
        self.size = 0

    def feed(self, line: str | bytes) -> list[Event]:
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        text = line.rstrip("\r\n")
        if self.size < FINAL_TEXT_LIMIT:
            self.lines.append(text)
            self.size += len(text) + 1
        return [Event("output", {"text": truncate(text)})] if text.strip() else []

    def finish(self, *, exit_code: int | None, stderr_tail: str = "", killed_reason: str = "") -> Outcome:
        """Success iff the program exited with code 0 and was not killed for a reason."""
        self.final_text = "\n".join(self.lines).strip("\n")
        if exit_code == 0 and not killed_reason:
            return self.outcome()
        return self.outcome(exit_sentence(exit_code, stderr_tail=stderr_tail, killed_reason=killed_reason))


FORMATS: dict[str, Callable[[Invocation | None], StreamParser]] = {
    "text": TextStreamParser,
    "claude-stream-json": ClaudeStreamParser,
    "codex-json": CodexStreamParser,
}


def output_format(inv: Invocation | None) -> str:
    fmt = (inv.options.get("format") if inv else None) or "text"
    if fmt not in FORMATS:
        raise ProviderError(f"command option format must be one of {', '.join(FORMATS)}, not {fmt!r}", permanent=True)
    return fmt


class CommandProvider(Provider):
    name = "command"
    executable = ""  # per stage: options["argv"][0]
    passthrough_env = ()

    def build_command(self, inv: Invocation) -> list[str]:
        """``options["argv"]`` with placeholders filled; argv[0] resolved like the agent CLIs."""
        template = inv.options.get("argv")
        if not isinstance(template, list | tuple) or not template or not all(isinstance(a, str) for a in template):
            raise ProviderError("command option argv must be a non-empty list of strings (no shell string)", permanent=True)
        output_format(inv)
        values = {
            "prompt": inv.prompt,
            "model": inv.model,
            "cwd": inv.cwd,
            "max_turns": "" if inv.max_turns is None else str(inv.max_turns),
        }
        if prompt_too_long_for_argv(inv.prompt) and any("{prompt}" in arg for arg in template):
            raise ProviderError(
                f"the prompt is {len(inv.prompt.encode())} bytes, too long for a command-line argument "
                f"(limit {PROMPT_ARG_LIMIT}); set option stdin: prompt and read it from stdin",
                permanent=True,
            )
        argv = [PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in template]
        return [resolve_executable(argv[0]), *argv[1:], *inv.extra_args]

    def stdin_data(self, inv: Invocation) -> bytes | None:
        """Option ``stdin: prompt``: the program reads the prompt on stdin (any length)."""
        return inv.prompt.encode("utf-8") if inv.options.get("stdin") == "prompt" else None

    def environment(self, inv: Invocation) -> dict[str, str]:
        """Option ``env``: literal variables for the program (values are not expanded)."""
        env = inv.options.get("env") or {}
        if not isinstance(env, dict):
            raise ProviderError("command option env must be a mapping of names to values", permanent=True)
        return {str(k): str(v) for k, v in env.items()}

    def parser(self, inv: Invocation | None = None) -> StreamParser:
        parser = FORMATS[output_format(inv)](inv)
        parser.capture_stderr = True  # a program's stderr is part of what it says
        return parser

    def version(self) -> str:
        return ""
