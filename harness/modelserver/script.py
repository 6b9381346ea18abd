"""Script files for the scripted model server: format, validation and lookup.

A script is YAML or JSON (a path, a text, or an already-parsed dict) of this shape::

    conversations:
      - name: planning
        match: "TACX-STAGE: planning"   # optional; omitted = catch-all
        turns:
          - text: "Writing the plan."
            tool_calls:
              - write: {path: plan.md, content: "# Plan\\n"}
              - bash: "git add -A && git commit -m 'change'"
              - tool: {name: Edit, input: {file_path: /abs/x, old_string: a, new_string: b}}
            usage: {input_tokens: 1000, output_tokens: 50,
                    cache_read_input_tokens: 0, cache_creation_input_tokens: 0,
                    reasoning_tokens: 0}
            delay: 0.0          # seconds before the answer starts
            stream_delay: 0.0   # seconds between streamed chunks
            status: 401         # answer this HTTP error instead (optional error_message)
            hang: true          # never answer; the connection stays open until the server stops
            retry_after: 0.2    # with status: also send Retry-After / retry-after-ms (seconds)

Contracts:

* ``match`` is a substring searched in the request's system prompt plus its first user message
  (see the API modules for what that means per API), or a list of substrings that must all
  occur (one issue's text *and* "(candidate c2)"). Conversations are tried in order, first
  match wins; one without ``match`` is a catch-all.
* Turn ``N`` (0-based) answers the N-th model request of its conversation. A turn without tool
  calls ends the agent's run. Past the last turn the server answers a short final text with zero
  usage and records the request as ``overrun``.
* ``usage`` uses Anthropic semantics: ``input_tokens`` excludes the cache reads and writes.
  ``reasoning_tokens`` is only reported on the OpenAI API, as a part of ``output_tokens``
  (OpenAI semantics), so it may not exceed ``output_tokens``. All counts default to 0.
* Every error is a :class:`ScriptError` whose message starts with the dotted path of the field,
  e.g. ``conversations[0].turns[2].usage.input_tokens: must be a non-negative integer``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
)
TOOL_CALL_KINDS = ("write", "bash", "tool")
TURN_FIELDS = (
    "text",
    "tool_calls",
    "usage",
    "delay",
    "stream_delay",
    "status",
    "error_message",
    "hang",
    "retry_after",
)


class ScriptError(ValueError):
    """A script that cannot be played; the message names the offending field first."""


@dataclass(frozen=True)
class Usage:
    """Token counts one turn reports (Anthropic semantics, see the module docstring)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not (what the OpenAI and Gemini APIs call the prompt)."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens


ZERO_USAGE = Usage()


@dataclass(frozen=True)
class ToolCall:
    """One provider-neutral tool call.

    ``kind`` is ``write`` (``path``, ``content``), ``bash`` (``command``) or ``tool``
    (``name``, ``input`` passed through as-is).
    """

    kind: str
    path: str = ""
    content: str = ""
    command: str = ""
    name: str = ""
    input: Any = None


@dataclass(frozen=True)
class Turn:
    """What the server answers to one model request."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = ZERO_USAGE
    delay: float = 0.0
    stream_delay: float = 0.0
    status: int | None = None
    error_message: str = ""
    hang: bool = False
    retry_after: float | None = None


@dataclass(frozen=True)
class Conversation:
    """A named sequence of turns selected by ``match`` (``None`` = catch-all)."""

    name: str
    match: str | tuple[str, ...] | None
    turns: tuple[Turn, ...]

    def matches(self, text: str) -> bool:
        """True when ``match`` (every one of its substrings, for a list) occurs in ``text``."""
        if self.match is None:
            return True
        parts = (self.match,) if isinstance(self.match, str) else self.match
        return all(part in text for part in parts)

    def turn(self, index: int) -> Turn | None:
        """The turn answering request ``index`` (0-based), or ``None`` past the end."""
        return self.turns[index] if 0 <= index < len(self.turns) else None


@dataclass(frozen=True)
class Script:
    """A validated script. Build it with :func:`load_script`."""

    conversations: tuple[Conversation, ...] = field(default_factory=tuple)

    def select(self, text: str) -> Conversation | None:
        """The first conversation whose ``match`` occurs in ``text`` (a catch-all always does)."""
        for conversation in self.conversations:
            if conversation.matches(text):
                return conversation
        return None


def load_script(source: Script | Mapping[str, Any] | str | Path) -> Script:
    """Parse and validate a script from a :class:`Script`, a dict, a file path or YAML/JSON text.

    A ``str`` that names an existing file is read as a file; any other ``str`` is parsed as
    YAML (which also accepts JSON). Raises :class:`ScriptError`.
    """
    if isinstance(source, Script):
        return source
    if isinstance(source, Path) or (
        isinstance(source, str) and _looks_like_path(source)
    ):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScriptError(
                f"{path}: cannot read script: {exc.strerror or exc}"
            ) from exc
        data = _parse_text(text, origin=str(path))
    elif isinstance(source, str):
        data = _parse_text(source, origin="script")
    else:
        data = source
    return _script(data)


def _looks_like_path(text: str) -> bool:
    if "\n" in text or len(text) > 4096:
        return False
    try:
        return Path(text).is_file()
    except OSError:
        return False


def _parse_text(text: str, *, origin: str) -> Any:
    try:
        if text.lstrip().startswith("{"):
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScriptError(f"{origin}: not valid YAML/JSON: {exc}") from exc


def _fail(where: str, problem: str) -> ScriptError:
    return ScriptError(f"{where}: {problem}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, "must be a mapping")
    return value


def _reject_unknown(
    value: Mapping[str, Any], allowed: tuple[str, ...], where: str
) -> None:
    for key in value:
        if key not in allowed:
            raise _fail(
                f"{where}.{key}",
                f"unknown field (expected one of: {', '.join(allowed)})",
            )


def _string(value: Any, where: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise _fail(where, "must be a string")
    if not allow_empty and not value:
        raise _fail(where, "must not be empty")
    return value


def _count(value: Any, where: str) -> int:
    # bool is an int subclass; `true` is never a token count.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(where, "must be a non-negative integer")
    return value


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _fail(where, "must be a non-negative number of seconds")
    return float(value)


def _script(data: Any) -> Script:
    top = _mapping(data, "script")
    _reject_unknown(top, ("conversations",), "script")
    if "conversations" not in top:
        raise _fail("conversations", "is required")
    items = top["conversations"]
    if not isinstance(items, list) or not items:
        raise _fail("conversations", "must be a non-empty list")
    conversations = tuple(
        _conversation(item, f"conversations[{i}]") for i, item in enumerate(items)
    )
    seen: set[str] = set()
    for i, conversation in enumerate(conversations):
        if conversation.name in seen:
            raise _fail(
                f"conversations[{i}].name", f"duplicate name {conversation.name!r}"
            )
        seen.add(conversation.name)
    return Script(conversations=conversations)


def _conversation(data: Any, where: str) -> Conversation:
    value = _mapping(data, where)
    _reject_unknown(value, ("name", "match", "turns"), where)
    if "name" not in value:
        raise _fail(f"{where}.name", "is required")
    name = _string(value["name"], f"{where}.name", allow_empty=False)
    match = value.get("match")
    if isinstance(match, list):
        if not match:
            raise _fail(f"{where}.match", "must be a non-empty string or a non-empty list of strings")
        match = tuple(_string(m, f"{where}.match[{i}]", allow_empty=False) for i, m in enumerate(match))
    elif match is not None:
        match = _string(match, f"{where}.match", allow_empty=False)
    turns = value.get("turns")
    if not isinstance(turns, list) or not turns:
        raise _fail(f"{where}.turns", "must be a non-empty list")
    return Conversation(
        name=name,
        match=match,
        turns=tuple(_turn(turn, f"{where}.turns[{i}]") for i, turn in enumerate(turns)),
    )


def _turn(data: Any, where: str) -> Turn:
    value = _mapping(data, where)
    _reject_unknown(value, TURN_FIELDS, where)
    text = _string(value.get("text", ""), f"{where}.text")
    raw_calls = value.get("tool_calls", [])
    if raw_calls is None:
        raw_calls = []
    if not isinstance(raw_calls, list):
        raise _fail(f"{where}.tool_calls", "must be a list")
    calls = tuple(
        _tool_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(raw_calls)
    )
    status = value.get("status")
    if status is not None and (
        isinstance(status, bool)
        or not isinstance(status, int)
        or not 400 <= status <= 599
    ):
        raise _fail(
            f"{where}.status", "must be an HTTP error status between 400 and 599"
        )
    hang = value.get("hang", False)
    if not isinstance(hang, bool):
        raise _fail(f"{where}.hang", "must be true or false")
    if not (text or calls or status is not None or hang):
        raise _fail(where, "needs text, tool_calls, status or hang")
    return Turn(
        text=text,
        tool_calls=calls,
        usage=_usage(value.get("usage", {}), f"{where}.usage"),
        delay=_seconds(value.get("delay", 0), f"{where}.delay"),
        stream_delay=_seconds(value.get("stream_delay", 0), f"{where}.stream_delay"),
        status=status,
        error_message=_string(value.get("error_message", ""), f"{where}.error_message"),
        hang=hang,
        retry_after=None if value.get("retry_after") is None else _seconds(value["retry_after"], f"{where}.retry_after"),
    )


def _usage(data: Any, where: str) -> Usage:
    if data is None:
        return ZERO_USAGE
    value = _mapping(data, where)
    _reject_unknown(value, USAGE_FIELDS, where)
    usage = Usage(
        **{name: _count(value.get(name, 0), f"{where}.{name}") for name in USAGE_FIELDS}
    )
    if usage.reasoning_tokens > usage.output_tokens:
        raise _fail(f"{where}.reasoning_tokens", "must not exceed output_tokens")
    return usage


def _tool_call(data: Any, where: str) -> ToolCall:
    value = _mapping(data, where)
    if len(value) != 1 or next(iter(value)) not in TOOL_CALL_KINDS:
        raise _fail(
            where, f"must have exactly one key, one of: {', '.join(TOOL_CALL_KINDS)}"
        )
    kind, body = next(iter(value.items()))
    inner = f"{where}.{kind}"
    if kind == "bash":
        return ToolCall(kind="bash", command=_string(body, inner, allow_empty=False))
    spec = _mapping(body, inner)
    if kind == "write":
        _reject_unknown(spec, ("path", "content"), inner)
        if "path" not in spec:
            raise _fail(f"{inner}.path", "is required")
        if "content" not in spec:
            raise _fail(f"{inner}.content", "is required")
        return ToolCall(
            kind="write",
            path=_string(spec["path"], f"{inner}.path", allow_empty=False),
            content=_string(spec["content"], f"{inner}.content"),
        )
    _reject_unknown(spec, ("name", "input"), inner)
    if "name" not in spec:
        raise _fail(f"{inner}.name", "is required")
    tool_input = spec.get("input", {})
    if not isinstance(tool_input, Mapping | str):
        raise _fail(
            f"{inner}.input", "must be a mapping (or a string for free-form tools)"
        )
    return ToolCall(
        kind="tool",
        name=_string(spec["name"], f"{inner}.name", allow_empty=False),
        input=tool_input,
    )
