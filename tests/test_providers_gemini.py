"""Gemini ``-o stream-json`` (hand-built transcripts faithful to the reference's quoted lines)."""

from __future__ import annotations

import pytest

from pipeline.lib.pricing import cost_for
from pipeline.providers.gemini import GeminiStreamParser
from tests.conftest import transcript_lines as lines
from tests.conftest import transcript_objects as objects

SUCCESS = "gemini-hand-built.tool-use-success.jsonl"
TURN_LIMIT = "gemini-hand-built.turn-limit.jsonl"


def parse(name: str):
    parser = GeminiStreamParser()
    return parser, [e for line in lines(name) for e in parser.feed(line)]


def test_consecutive_assistant_deltas_become_one_message_event():
    _, events = parse(SUCCESS)
    runs, current = [], []
    for obj in objects(SUCCESS):  # runs of consecutive assistant deltas in the fixture
        if obj["type"] == "message" and obj["role"] == "assistant" and obj.get("delta"):
            current.append(obj["content"])
        elif current:
            runs.append("".join(current))
            current = []

    messages = [e.data["text"] for e in events if e.kind == "message" and e.data["role"] == "assistant"]
    assert messages == runs


def test_the_events_come_in_the_fixtures_order():
    _, events = parse(SUCCESS)

    assert [e.kind for e in events] == [
        "system", "message", "message", "tool_call", "tool_result", "tool_call", "tool_result", "message", "result", "usage",
    ]  # fmt: skip


def test_tool_calls_and_results_carry_ids_names_and_error_status():
    _, events = parse(SUCCESS)
    uses = [o for o in objects(SUCCESS) if o["type"] == "tool_use"]
    results = [o for o in objects(SUCCESS) if o["type"] == "tool_result"]

    calls = [e.data for e in events if e.kind == "tool_call"]
    outputs = [e.data for e in events if e.kind == "tool_result"]
    assert calls == [{"id": u["tool_id"], "name": u["tool_name"], "input": u["parameters"]} for u in uses]
    assert [(o["id"], o["output"], o["is_error"]) for o in outputs] == [(r["tool_id"], r["output"], r["status"] != "success") for r in results]


def test_usage_subtracts_cached_input_and_takes_the_resolved_model():
    parser, _ = parse(SUCCESS)
    init = objects(SUCCESS)[0]
    stats = objects(SUCCESS)[-1]["stats"]

    u = parser.usage
    assert u.input_tokens == stats["input_tokens"] - stats["cached"] == stats["input"]
    assert u.cache_read_tokens == stats["cached"]
    # Thought tokens (here 303) are only in total_tokens; Google bills them as output.
    assert u.output_tokens == stats["total_tokens"] - stats["input_tokens"] == stats["output_tokens"] + 303
    assert u.session_id == init["session_id"]
    assert u.model == next(iter(stats["models"]))  # init only said "auto"
    assert u.cost_usd == cost_for(u.model, u) is not None


def test_turns_count_the_model_responses():
    parser, _ = parse(SUCCESS)
    # A response starts with assistant text or a tool call after the prompt or a tool result.
    responses, responding = 0, False
    for obj in objects(SUCCESS):
        if obj["type"] == "tool_use" or (obj["type"] == "message" and obj["role"] == "assistant"):
            responses += not responding
            responding = True
        elif obj["type"] in ("tool_result", "message"):
            responding = False

    assert parser.usage.turns == responses


def test_a_successful_run_has_all_assistant_text_as_final_text():
    parser, _ = parse(SUCCESS)
    text = "".join(o["content"] for o in objects(SUCCESS) if o["type"] == "message" and o["role"] == "assistant")

    outcome = parser.finish(exit_code=0)

    assert outcome.success is True
    assert outcome.final_text == text


def test_the_turn_limit_result_fails_with_the_turn_limit_message():
    parser, events = parse(TURN_LIMIT)
    result = objects(TURN_LIMIT)[-1]

    outcome = parser.finish(exit_code=53)

    assert next(e for e in events if e.kind == "result").data["error_type"] == result["error"]["type"]
    assert outcome.success is False
    assert outcome.error.startswith("agent hit its turn limit")
    assert result["error"]["message"] in outcome.error
    assert outcome.permanent is False
    assert parser.usage.input_tokens == result["stats"]["input_tokens"]  # no "cached" in this old shape


@pytest.mark.parametrize(
    ("exit_code", "phrase", "permanent"),
    [(41, "could not authenticate", True), (42, "rejected its input", True), (52, "configuration is invalid", True), (53, "turn limit", False)],
)
def test_documented_exit_codes_name_the_failure(exit_code, phrase, permanent):
    parser = GeminiStreamParser()
    parser.feed(lines(SUCCESS)[0])

    outcome = parser.finish(exit_code=exit_code, stderr_tail='{"error":{"type":"Error","message":"details here"}}')

    assert outcome.success is False
    assert phrase in outcome.error
    assert "details here" in outcome.error
    assert outcome.permanent is permanent


def test_an_exit_without_a_result_says_so():
    parser = GeminiStreamParser()
    parser.feed(lines(SUCCESS)[0])

    outcome = parser.finish(exit_code=1, stderr_tail="API error 429")

    assert outcome.error == "agent exited with code 1 without a result: API error 429"


def test_a_success_result_with_a_failing_exit_code_is_a_failure():
    parser, _ = parse(SUCCESS)

    assert parser.finish(exit_code=1).success is False
