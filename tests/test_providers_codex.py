"""Codex ``exec --json``: events, cumulative usage, priced cost, transient vs fatal errors."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from pipeline.lib.pricing import price_for
from pipeline.providers.base import Invocation
from pipeline.providers.codex import CodexStreamParser
from tests.conftest import transcript_lines as lines

TEXT_SUCCESS = "codex-0.169.0.text-success.jsonl"
INV = Invocation(prompt="say hi", cwd="/w", model="gpt-5")
URL = "http://127.0.0.1:18998/v1/responses"


def feed_all(parser: CodexStreamParser, items: list) -> list:
    return [e for item in items for e in parser.feed(item if isinstance(item, str) else json.dumps(item))]


def turn_completed(input_tokens: int, cached: int, output: int) -> dict:
    return {"type": "turn.completed", "usage": {"input_tokens": input_tokens, "cached_input_tokens": cached, "cache_write_input_tokens": 0, "output_tokens": output, "reasoning_output_tokens": 0}}


def reconnect(n: int, status: str) -> dict:
    # As codex-cli 0.169.0 prints them (seen against a loopback server answering 401 / 500).
    return {"type": "error", "message": f"Reconnecting... {n}/5 (unexpected status {status}: bad key, url: {URL})"}


def test_the_fixture_gives_events_of_the_right_kinds_in_order():
    objs = [json.loads(line) for line in lines(TEXT_SUCCESS)]
    by_type = {"thread.started": ["system"], "turn.started": ["system"], "turn.completed": ["usage", "result"]}
    by_item = {"error": ["error"], "agent_message": ["message"]}
    expected = [k for o in objs for k in (by_item[o["item"]["type"]] if o["type"] == "item.completed" else by_type[o["type"]])]

    events = feed_all(CodexStreamParser(INV), lines(TEXT_SUCCESS))

    assert [e.kind for e in events] == expected


def test_the_model_metadata_warning_is_a_non_fatal_error():
    parser = CodexStreamParser(INV)
    events = feed_all(parser, lines(TEXT_SUCCESS))

    warning = next(e for e in events if e.kind == "error")
    assert warning.data["fatal"] is False
    assert warning.data["message"].startswith("Model metadata")
    assert parser.fatal is None


def test_the_fixture_usage_subtracts_cached_input_and_prices_the_requested_model():
    parser = CodexStreamParser(INV)
    feed_all(parser, lines(TEXT_SUCCESS))
    objs = [json.loads(line) for line in lines(TEXT_SUCCESS)]
    reported = next(o for o in objs if o["type"] == "turn.completed")["usage"]
    thread = next(o for o in objs if o["type"] == "thread.started")

    u = parser.usage
    assert u.input_tokens == reported["input_tokens"] - reported["cached_input_tokens"] - reported["cache_write_input_tokens"]
    assert u.cache_read_tokens == reported["cached_input_tokens"]
    assert u.output_tokens == reported["output_tokens"]
    assert u.turns == sum(1 for o in objs if o["type"] == "turn.completed")
    assert u.session_id == thread["thread_id"]
    assert u.model == INV.model


def test_the_fixture_is_a_success_with_the_last_agent_message_as_final_text():
    parser = CodexStreamParser(INV)
    feed_all(parser, lines(TEXT_SUCCESS))
    last_message = [json.loads(x)["item"]["text"] for x in lines(TEXT_SUCCESS) if '"agent_message"' in x][-1]

    outcome = parser.finish(exit_code=0)

    assert outcome.success is True
    assert outcome.final_text == last_message


def test_cumulative_usage_takes_the_latest_turn_not_the_sum():
    first, second = turn_completed(1000, 200, 50), turn_completed(2600, 900, 130)
    parser = CodexStreamParser(INV)

    feed_all(parser, [first, second])

    u = parser.usage
    assert u.input_tokens == second["usage"]["input_tokens"] - second["usage"]["cached_input_tokens"]
    assert u.cache_read_tokens == second["usage"]["cached_input_tokens"]
    assert u.output_tokens == second["usage"]["output_tokens"]


def test_the_cost_equals_the_hand_computation_from_the_price_table():
    line = turn_completed(2600, 900, 130)
    parser = CodexStreamParser(INV)
    feed_all(parser, [line])
    price = price_for(INV.model)
    reported = line["usage"]

    expected = (
        (reported["input_tokens"] - reported["cached_input_tokens"]) * price.input
        + reported["cached_input_tokens"] * price.cache_read
        + reported["output_tokens"] * price.output
    ) / Decimal(1_000_000)
    assert parser.usage.cost_usd == expected


def test_without_a_known_model_there_is_no_cost():
    parser = CodexStreamParser(Invocation(prompt="p", cwd="/w"))
    feed_all(parser, [turn_completed(100, 0, 10)])

    assert parser.usage.cost_usd is None


def test_a_shell_command_becomes_a_tool_call_then_its_result():
    cmd = "bash -lc 'cat test.js'"
    started = {"type": "item.started", "item": {"id": "item_1", "type": "command_execution", "command": cmd, "aggregated_output": "", "status": "in_progress"}}
    done = {"type": "item.completed", "item": {"id": "item_1", "type": "command_execution", "command": cmd, "aggregated_output": "console.log('Hello World');\n", "exit_code": 0, "status": "completed"}}
    failed = {"type": "item.completed", "item": {"id": "item_2", "type": "command_execution", "command": "false", "aggregated_output": "", "exit_code": 1, "status": "failed"}}

    events = feed_all(CodexStreamParser(INV), [started, done, failed])

    assert [e.kind for e in events] == ["tool_call", "tool_result", "tool_call", "tool_result"]
    assert events[0].data == {"id": "item_1", "name": "shell", "input": {"command": cmd}}
    assert events[1].data["output"] == done["item"]["aggregated_output"]
    assert events[1].data["is_error"] is False
    assert events[3].data["is_error"] is True


def test_a_file_change_and_reasoning_are_recorded():
    change = {"type": "item.completed", "item": {"id": "item_1", "type": "file_change", "changes": [{"path": "/w/hello.txt", "kind": "add"}], "status": "completed"}}
    thought = {"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "**Preparing**"}}

    events = feed_all(CodexStreamParser(INV), [thought, change])

    assert events[0].kind == "message" and events[0].data == {"role": "reasoning", "text": "**Preparing**"}
    assert events[1].kind == "tool_call"
    assert events[1].data["input"] == {"changes": change["item"]["changes"]}
    assert events[2].kind == "tool_result" and "add /w/hello.txt" in events[2].data["output"]


def test_401_reconnects_are_fatal_after_the_retry_limit(settings):
    settings.TACX = {**settings.TACX, "AUTH_RETRY_LIMIT": 3}
    parser = CodexStreamParser(INV)

    for n in (1, 2):
        parser.feed(json.dumps(reconnect(n, "401 Unauthorized")))
        assert parser.fatal is None
    events = parser.feed(json.dumps(reconnect(3, "401 Unauthorized")))

    assert parser.fatal == "agent could not authenticate (HTTP 401 from the model API)"
    assert events[0].data["fatal"] is True
    outcome = parser.finish(exit_code=143, killed_reason="fatal stream error")
    assert outcome.success is False and outcome.permanent is True


def test_other_reconnects_are_transient(settings):
    settings.TACX = {**settings.TACX, "AUTH_RETRY_LIMIT": 2}
    parser = CodexStreamParser(INV)

    events = feed_all(parser, [reconnect(n, "500 Internal Server Error") for n in range(1, 6)])

    assert parser.fatal is None
    assert all(e.kind == "error" and e.data["fatal"] is False for e in events)


def test_a_failed_turn_is_fatal_and_names_the_error():
    message = "You've hit your usage limit. Try again at 1:37 AM."
    parser = CodexStreamParser(INV)

    events = feed_all(parser, [{"type": "turn.started"}, {"type": "error", "message": message}, {"type": "turn.failed", "error": {"message": message}}])
    outcome = parser.finish(exit_code=1)

    assert events[-1].kind == "result" and events[-1].data["is_error"] is True
    assert outcome.success is False
    assert outcome.error == f"agent turn failed: {message}"
    assert outcome.permanent is False


def test_a_401_failed_turn_is_a_permanent_auth_failure():
    message = f"unexpected status 401 Unauthorized: bad key, url: {URL}"
    parser = CodexStreamParser(INV)
    feed_all(parser, [{"type": "turn.failed", "error": {"message": message}}])

    outcome = parser.finish(exit_code=1)

    assert outcome.error == "agent could not authenticate (HTTP 401 from the model API)"
    assert outcome.permanent is True


@pytest.mark.parametrize(("exit_code", "permanent"), [(2, True), (1, False)])
def test_an_exit_without_a_turn_says_so(exit_code, permanent):
    parser = CodexStreamParser(INV)
    feed_all(parser, [{"type": "thread.started", "thread_id": "t"}])

    outcome = parser.finish(exit_code=exit_code, stderr_tail="error: unexpected argument '--full-auto' found")

    assert outcome.success is False
    assert f"exited with code {exit_code}" in outcome.error
    assert "--full-auto" in outcome.error
    assert outcome.permanent is permanent
