"""A malformed line becomes a raw event, never an exception, and parsing goes on after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.providers.base import Invocation
from pipeline.providers.claude import ClaudeStreamParser
from pipeline.providers.codex import CodexStreamParser
from pipeline.providers.command import TextStreamParser
from pipeline.providers.gemini import GeminiStreamParser

FIXTURES = Path(__file__).parent / "fixtures" / "transcripts"
INV = Invocation(prompt="p", cwd="/w", model="gpt-5")
# parser class -> a real line it understands
PARSERS = {
    ClaudeStreamParser: (FIXTURES / "claude-2.1.197.tool-use-success.jsonl").read_text().splitlines()[0],
    CodexStreamParser: (FIXTURES / "codex-0.169.0.text-success.jsonl").read_text().splitlines()[0],
    GeminiStreamParser: (FIXTURES / "gemini-hand-built.tool-use-success.jsonl").read_text().splitlines()[0],
}
BAD_LINES = {
    "not JSON": "Error: When using --print, --output-format=stream-json requires --verbose",
    "a JSON array": '[{"type": "result"}]',
    "JSON without a type": '{"session_id": "abc", "result": "hi"}',
    "a non-string type": '{"type": 5}',
    "a truncated line": '{"type":"assistant","message":{"id":"msg_01","content":[{"type":"te',
    "binary garbage": b"\x00\xff\xfe\x89PNG\r\n\x1a\n\x00\x00\xc3\x28".decode("utf-8", errors="replace"),
    "an unknown type": '{"type": "telemetry_blob", "x": 1}',
}


@pytest.mark.parametrize("parser_class", list(PARSERS), ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_a_malformed_line_becomes_one_raw_event(parser_class, kind):
    parser = parser_class(INV)

    events = parser.feed(BAD_LINES[kind])

    assert len(events) == 1
    assert events[0].kind == "raw"
    assert events[0].data["line"] == BAD_LINES[kind].strip()
    assert events[0].data["error"]


@pytest.mark.parametrize(("parser_class", "good_line"), list(PARSERS.items()), ids=lambda v: getattr(v, "__name__", "line"))
def test_parsing_continues_after_malformed_lines(parser_class, good_line):
    parser = parser_class(INV)
    for line in BAD_LINES.values():
        parser.feed(line)

    events = parser.feed(good_line)

    assert events and events[0].kind == "system"
    assert parser.fatal is None


def test_bytes_are_decoded_rather_than_rejected():
    events = ClaudeStreamParser().feed(b"\xff\xfe not json\n")

    assert events[0].kind == "raw"


def test_blank_lines_give_no_events():
    assert ClaudeStreamParser().feed("  \n") == []


def test_the_text_format_never_gives_raw_events():
    parser = TextStreamParser(INV)

    events = [e for line in BAD_LINES.values() for e in parser.feed(line)]

    assert {e.kind for e in events} == {"output"}


KNOWN_TYPES = [
    "system", "assistant", "user", "result", "rate_limit_event",  # claude
    "thread.started", "turn.started", "turn.completed", "turn.failed", "item.started", "item.updated", "item.completed", "error",  # codex
    "init", "message", "tool_use", "tool_result",  # gemini
]  # fmt: skip
FIELDS = [
    "message", "content", "usage", "item", "error", "errors", "stats", "result", "modelUsage", "subtype", "id", "type",
    "text", "models", "delta", "role", "is_error", "num_turns", "total_cost_usd", "api_error_status", "terminal_reason",
    "status", "error_status", "thread_id", "session_id", "model", "input_tokens", "output_tokens", "cached", "input",
    "cached_input_tokens", "inputTokens", "outputTokens", "aggregated_output", "exit_code", "changes", "tool_id",
    "tool_use_id", "parameters", "output", "rate_limit_info", "thinking", "name",
]  # fmt: skip
keys = st.sampled_from(FIELDS) | st.text(max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=20,
)
shaped_lines = st.builds(
    lambda kind, extra: json.dumps({**extra, "type": kind}),
    st.sampled_from(KNOWN_TYPES),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5),
)


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(st.text(max_size=200) | shaped_lines, max_size=8))
def test_no_line_whatever_its_shape_makes_a_parser_raise(lines):
    for parser_class in (*PARSERS, TextStreamParser):
        parser = parser_class(INV)
        for line in lines:
            for event in parser.feed(line):
                assert event.kind in {"system", "message", "tool_call", "tool_result", "usage", "error", "result", "raw", "output"}
        parser.usage  # noqa: B018 - computing the running usage must not raise either
        outcome = parser.finish(exit_code=0)
        assert outcome.success in (True, False)


WEIRD_VALUES = [None, True, 5, -3, 1.5, "x", [], [1, "a"], {}, {"a": {"b": 1}}]
TRANSCRIPTS = {
    ClaudeStreamParser: ["claude-2.1.197.tool-use-success.jsonl", "claude-2.1.197.max-turns.jsonl", "claude-2.1.197.auth-retries-then-killed.jsonl"],
    CodexStreamParser: ["codex-0.169.0.text-success.jsonl"],
    GeminiStreamParser: ["gemini-hand-built.tool-use-success.jsonl", "gemini-hand-built.turn-limit.jsonl"],
}


def paths(value, prefix=()):
    """Every key/index path inside a JSON value."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def replaced(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(copy[path[0]], path[1:], new)
    return copy


@pytest.mark.parametrize("parser_class", list(TRANSCRIPTS), ids=lambda c: c.__name__)
def test_a_real_line_with_any_field_of_the_wrong_type_never_makes_a_parser_raise(parser_class):
    for name in TRANSCRIPTS[parser_class]:
        lines = (FIXTURES / name).read_text().splitlines()
        for index, line in enumerate(lines):
            obj = json.loads(line)
            for path in paths(obj):
                for value in WEIRD_VALUES:
                    parser = parser_class(INV)
                    for before in lines[:index]:
                        parser.feed(before)
                    parser.feed(json.dumps(replaced(obj, path, value)))
                    for after in lines[index + 1 :]:
                        parser.feed(after)
                    parser.usage  # noqa: B018 - must not raise
                    for exit_code in (0, 1, None):
                        parser.finish(exit_code=exit_code)
