"""Claude usage: one API message's repeated usage counts once; the result line is authoritative."""

from __future__ import annotations

import json
from decimal import Decimal

from pipeline.lib.pricing import cost_for
from pipeline.providers.claude import ClaudeStreamParser

MODEL = "claude-sonnet-4-5"


def init() -> dict:
    return {"type": "system", "subtype": "init", "session_id": "s-1", "model": MODEL, "claude_code_version": "2.1.197"}


def assistant(msg_id: str, block: dict, usage: dict) -> dict:
    return {"type": "assistant", "message": {"id": msg_id, "role": "assistant", "model": MODEL, "content": [block], "usage": usage}, "session_id": "s-1"}


def usage(input_tokens: int, output_tokens: int, cache_write: int = 0, cache_read: int = 0) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read}


def feed_all(parser: ClaudeStreamParser, objs: list[dict]) -> list:
    return [e for obj in objs for e in parser.feed(json.dumps(obj))]


# Two API messages; the first is split over two lines (text + tool_use) that repeat its usage.
FIRST = usage(10, 5, cache_write=100, cache_read=200)
FIRST_LATER = usage(10, 9, cache_write=100, cache_read=200)  # output grew while streaming
SECOND = usage(3, 40, cache_write=0, cache_read=310)
TRANSCRIPT = [
    init(),
    assistant("msg_A", {"type": "text", "text": "Let me look."}, FIRST),
    assistant("msg_A", {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}, FIRST_LATER),
    {"type": "user", "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a\nb"}]}]}},
    assistant("msg_B", {"type": "text", "text": "Done."}, SECOND),
]


def test_repeated_usage_on_one_message_id_is_counted_once():
    parser = ClaudeStreamParser()
    feed_all(parser, TRANSCRIPT)

    u = parser.usage
    assert u.input_tokens == FIRST["input_tokens"] + SECOND["input_tokens"]
    assert u.output_tokens == max(FIRST["output_tokens"], FIRST_LATER["output_tokens"]) + SECOND["output_tokens"]
    assert u.cache_write_tokens == FIRST["cache_creation_input_tokens"] + SECOND["cache_creation_input_tokens"]
    assert u.cache_read_tokens == FIRST["cache_read_input_tokens"] + SECOND["cache_read_input_tokens"]
    assert u.turns == 2


def test_before_the_result_line_the_cost_is_priced_from_the_table():
    parser = ClaudeStreamParser()
    feed_all(parser, TRANSCRIPT)

    assert parser.usage.cost_usd == cost_for(MODEL, parser.usage)
    assert parser.usage.cost_usd is not None


def test_each_usage_event_carries_the_running_total():
    parser = ClaudeStreamParser()
    events = feed_all(parser, TRANSCRIPT)
    last = [e for e in events if e.kind == "usage"][-1]

    u = parser.usage
    assert last.data == {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cost_usd": str(u.cost_usd),
    }


def test_a_reused_message_id_with_a_different_prompt_is_another_request():
    # Scripted model servers reuse ids; a different prompt size means a different API request.
    parser = ClaudeStreamParser()
    first, second = usage(1000, 1), usage(1500, 2)
    feed_all(parser, [init(), assistant("msg_x", {"type": "text", "text": "a"}, first), assistant("msg_x", {"type": "text", "text": "b"}, second)])

    assert parser.usage.input_tokens == first["input_tokens"] + second["input_tokens"]
    assert parser.usage.output_tokens == first["output_tokens"] + second["output_tokens"]
    assert parser.usage.turns == 2


def test_the_result_lines_totals_replace_the_running_figures():
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "num_turns": 4,
        "result": "Done.",
        "session_id": "s-1",
        "total_cost_usd": 0.1234,
        "usage": usage(1, 2, 3, 4),
        "modelUsage": {
            MODEL: {"inputTokens": 50, "outputTokens": 60, "cacheReadInputTokens": 700, "cacheCreationInputTokens": 80, "costUSD": 0.1},
            "claude-haiku-4-5": {"inputTokens": 5, "outputTokens": 6, "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0, "costUSD": 0.0234},
        },
    }
    parser = ClaudeStreamParser()
    feed_all(parser, [*TRANSCRIPT, result])
    # A stray repeat after the result must not move the totals again.
    feed_all(parser, [assistant("msg_C", {"type": "text", "text": "late"}, usage(999, 999))])

    models = result["modelUsage"].values()
    u = parser.usage
    assert u.input_tokens == sum(m["inputTokens"] for m in models)
    assert u.output_tokens == sum(m["outputTokens"] for m in models)
    assert u.cache_read_tokens == sum(m["cacheReadInputTokens"] for m in models)
    assert u.cache_write_tokens == sum(m["cacheCreationInputTokens"] for m in models)
    assert u.turns == result["num_turns"]
    assert u.cost_usd == Decimal(str(result["total_cost_usd"]))


def test_a_result_line_without_model_usage_falls_back_to_its_usage():
    result = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "result": "ok", "session_id": "s-1", "usage": usage(7, 8, 9, 10)}
    parser = ClaudeStreamParser()
    feed_all(parser, [*TRANSCRIPT, result])

    u = parser.usage
    assert (u.input_tokens, u.output_tokens, u.cache_write_tokens, u.cache_read_tokens) == (7, 8, 9, 10)
    assert u.cost_usd == cost_for(MODEL, u)  # no total_cost_usd: priced


def test_tool_result_content_given_as_text_blocks_is_joined():
    parser = ClaudeStreamParser()
    events = feed_all(parser, TRANSCRIPT)

    result = next(e for e in events if e.kind == "tool_result")
    assert result.data == {"id": "toolu_1", "output": "a\nb", "is_error": False}


def test_a_huge_tool_output_is_truncated_to_twenty_thousand_characters():
    parser = ClaudeStreamParser()
    line = {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t", "content": "x" * 50_000}]}}

    (event,) = parser.feed(json.dumps(line))

    assert len(event.data["output"]) <= 20_000
    assert "truncated" in event.data["output"]


def test_thinking_blocks_become_thinking_messages():
    parser = ClaudeStreamParser()
    events = parser.feed(json.dumps(assistant("m", {"type": "thinking", "thinking": "hmm", "signature": "sig"}, usage(1, 1))))

    assert events[0].kind == "message"
    assert events[0].data == {"role": "thinking", "text": "hmm"}
