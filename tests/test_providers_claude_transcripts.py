"""The real Claude Code 2.1.197 transcripts parse into the right events, usage and outcome."""

from __future__ import annotations

import re
from decimal import Decimal

from pipeline.providers.base import Invocation
from pipeline.providers.claude import ClaudeStreamParser
from tests.conftest import transcript_lines as lines
from tests.conftest import transcript_objects as objects

SUCCESS = "claude-2.1.197.tool-use-success.jsonl"
MAX_TURNS = "claude-2.1.197.max-turns.jsonl"
AUTH = "claude-2.1.197.auth-retries-then-killed.jsonl"


def parse(name: str, inv: Invocation | None = None):
    parser = ClaudeStreamParser(inv)
    return parser, [parser.feed(line) for line in lines(name)]


def expected_kinds(name: str) -> list[str]:
    """The event kinds each fixture line should give, read off the fixture (usage aside)."""
    block_kinds = {"text": "message", "thinking": "message", "tool_use": "tool_call"}
    kinds: list[str] = []
    for obj in objects(name):
        if obj["type"] == "system":
            kinds.append("error" if obj["subtype"] == "api_retry" else "system")
        elif obj["type"] == "assistant":
            kinds += [block_kinds[b["type"]] for b in obj["message"]["content"]]
        elif obj["type"] == "user":
            kinds += ["tool_result" for b in obj["message"]["content"] if b["type"] == "tool_result"]
        elif obj["type"] == "result":
            kinds.append("result")
    return kinds


def test_the_tool_use_transcript_gives_events_of_the_right_kinds_in_order():
    _, per_line = parse(SUCCESS)
    kinds = [e.kind for events in per_line for e in events]

    assert [k for k in kinds if k != "usage"] == expected_kinds(SUCCESS)
    assert "raw" not in kinds
    assert kinds[-1] == "usage"  # the result line brings the authoritative totals


def test_the_tool_call_and_its_result_carry_the_fixture_values():
    _, per_line = parse(SUCCESS)
    events = [e for batch in per_line for e in batch]
    tool_use = next(b for o in objects(SUCCESS) if o["type"] == "assistant" for b in o["message"]["content"] if b["type"] == "tool_use")
    tool_result = next(b for o in objects(SUCCESS) if o["type"] == "user" for b in o["message"]["content"])

    call = next(e for e in events if e.kind == "tool_call")
    result = next(e for e in events if e.kind == "tool_result")
    assert call.data == {"id": tool_use["id"], "name": tool_use["name"], "input": tool_use["input"]}
    assert result.data == {"id": tool_use["id"], "output": tool_result["content"], "is_error": False}


def test_the_success_usage_is_the_result_lines_totals():
    parser, _ = parse(SUCCESS)
    init = objects(SUCCESS)[0]
    result = objects(SUCCESS)[-1]
    model_usage = list(result["modelUsage"].values())

    usage = parser.usage
    assert usage.input_tokens == sum(m["inputTokens"] for m in model_usage) == result["usage"]["input_tokens"]
    assert usage.output_tokens == sum(m["outputTokens"] for m in model_usage) == result["usage"]["output_tokens"]
    assert usage.cache_read_tokens == result["usage"]["cache_read_input_tokens"]
    assert usage.cache_write_tokens == result["usage"]["cache_creation_input_tokens"]
    assert usage.turns == result["num_turns"]
    assert usage.cost_usd == Decimal(str(result["total_cost_usd"]))
    assert usage.session_id == init["session_id"] == result["session_id"]
    assert usage.model == init["model"]
    assert usage.cli_version == init["claude_code_version"]


def test_the_success_transcript_with_exit_code_zero_is_a_success_with_the_result_text():
    parser, _ = parse(SUCCESS)

    outcome = parser.finish(exit_code=0)

    assert outcome.success is True
    assert outcome.error == ""
    assert outcome.final_text == objects(SUCCESS)[-1]["result"]
    assert outcome.usage == parser.usage


def test_a_success_result_with_a_non_zero_exit_code_is_a_failure():
    parser, _ = parse(SUCCESS)

    outcome = parser.finish(exit_code=1, stderr_tail="boom")

    assert outcome.success is False
    assert "exited with code 1" in outcome.error
    assert "boom" in outcome.error


def test_the_max_turns_transcript_fails_with_the_turn_limit_message():
    parser, per_line = parse(MAX_TURNS)
    result = objects(MAX_TURNS)[-1]
    limit = re.search(r"\((\d+)\)", result["errors"][0]).group(1)

    outcome = parser.finish(exit_code=1)

    assert [e.kind for batch in per_line for e in batch if e.kind != "usage"] == expected_kinds(MAX_TURNS)
    assert outcome.success is False
    assert outcome.error == f"agent hit its turn limit (max turns {limit})"
    assert outcome.permanent is False
    assert outcome.usage.turns == result["num_turns"]
    assert outcome.usage.output_tokens == result["usage"]["output_tokens"]
    assert outcome.usage.cost_usd == Decimal(str(result["total_cost_usd"]))


def test_the_turn_limit_message_names_the_invocations_max_turns_when_known():
    parser, _ = parse(MAX_TURNS, Invocation(prompt="p", cwd="/w", max_turns=7))

    assert parser.finish(exit_code=1).error == "agent hit its turn limit (max turns 7)"


def test_the_failed_tool_result_is_marked_as_an_error():
    _, per_line = parse(MAX_TURNS)
    result = next(e for batch in per_line for e in batch if e.kind == "tool_result")

    assert result.data["is_error"] is True
    assert "File has not been read yet" in result.data["output"]


def test_the_auth_retries_transcript_is_fatal_on_the_first_api_retry_line():
    parser = ClaudeStreamParser()
    first_retry = next(i for i, o in enumerate(objects(AUTH)) if o.get("subtype") == "api_retry")

    fatal_at = None
    for index, line in enumerate(lines(AUTH)):
        parser.feed(line)
        if parser.fatal and fatal_at is None:
            fatal_at = index

    assert fatal_at == first_retry
    assert parser.fatal == f"agent could not authenticate (HTTP {objects(AUTH)[first_retry]['error_status']} from the model API)"


def test_the_auth_retries_transcript_ends_as_a_permanent_auth_failure():
    parser, per_line = parse(AUTH)
    errors = [e for batch in per_line for e in batch if e.kind == "error"]

    outcome = parser.finish(exit_code=143, killed_reason="stopped by TAC-X: fatal stream error")

    assert len(errors) == sum(1 for o in objects(AUTH) if o.get("subtype") == "api_retry")
    assert all(e.data["fatal"] for e in errors)
    assert outcome.success is False
    assert "could not authenticate" in outcome.error
    assert outcome.permanent is True
    assert outcome.usage.session_id == objects(AUTH)[0]["session_id"]
