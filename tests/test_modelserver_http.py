"""The scripted model server over HTTP, without any agent CLI: wire formats, turns, records."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from harness.modelserver import ScriptedModelServer

WRITE_THEN_TEXT = {
    "conversations": [
        {
            "name": "planning",
            "match": "TACX-STAGE: planning",
            "turns": [
                {
                    "text": "Writing.",
                    "tool_calls": [
                        {"write": {"path": "plan.md", "content": "# Plan\n"}},
                        {"bash": "git commit -am x"},
                        {
                            "tool": {
                                "name": "Edit",
                                "input": {
                                    "file_path": "/r/a",
                                    "old_string": "a",
                                    "new_string": "b",
                                },
                            }
                        },
                    ],
                    "usage": {
                        "input_tokens": 11,
                        "output_tokens": 22,
                        "cache_read_input_tokens": 33,
                        "cache_creation_input_tokens": 44,
                        "reasoning_tokens": 5,
                    },
                },
                {"text": "Done.", "usage": {"input_tokens": 1, "output_tokens": 2}},
            ],
        },
        {"name": "fallback", "turns": [{"text": "Fallback answer."}]},
    ]
}
SYSTEM = "You are Claude Code.\n - Primary working directory: /work/repo\n"
TOOLS = [{"name": "Bash", "input_schema": {}}, {"name": "Write", "input_schema": {}}]


def post(
    url: str, payload: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def sse(body: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def anthropic_request(
    prompt: str = "TACX-STAGE: planning\nPlan it.",
    messages: list | None = None,
    **extra: Any,
) -> dict:
    return {
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": SYSTEM}],
        "messages": messages
        or [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        "tools": TOOLS,
        "max_tokens": 1000,
        **extra,
    }


@pytest.fixture
def server():
    with ScriptedModelServer(WRITE_THEN_TEXT) as running:
        yield running


def test_a_streamed_anthropic_answer_follows_the_real_event_order(server):
    status, headers, body = post(
        server.url + "/v1/messages?beta=true", anthropic_request(stream=True)
    )
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    events = sse(body)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == [
        "message_delta",
        "message_stop",
    ]
    assert names.count("content_block_start") == names.count("content_block_stop") == 4
    start = events[0][1]["message"]
    assert (
        start["usage"]["input_tokens"] == 11
        and start["usage"]["cache_read_input_tokens"] == 33
    )
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 22
    blocks = [
        data["content_block"] for name, data in events if name == "content_block_start"
    ]
    assert [b["type"] for b in blocks] == ["text", "tool_use", "tool_use", "tool_use"]
    assert [b["name"] for b in blocks[1:]] == ["Write", "Bash", "Edit"]
    assert all(b["id"].startswith("toolu_t0_") for b in blocks[1:])
    # The tool input arrives as input_json_delta pieces that join into the full input.
    write_json = "".join(
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["index"] == 1
    )
    assert json.loads(write_json) == {
        "file_path": "/work/repo/plan.md",
        "content": "# Plan\n",
    }


def test_a_non_streamed_anthropic_answer_is_one_message(server):
    status, _, body = post(server.url + "/v1/messages", anthropic_request())
    message = json.loads(body)
    assert status == 200
    assert message["type"] == "message" and message["stop_reason"] == "tool_use"
    assert message["id"].startswith("msg_")
    assert message["content"][2]["input"]["command"] == "git commit -am x"
    assert message["usage"]["cache_creation_input_tokens"] == 44


def test_the_turn_comes_from_the_ids_in_the_history(server):
    _, _, body = post(server.url + "/v1/messages", anthropic_request())
    first = json.loads(body)
    tool_ids = [b["id"] for b in first["content"] if b["type"] == "tool_use"]
    history = [
        {"role": "user", "content": "TACX-STAGE: planning\nPlan it."},
        {"role": "assistant", "content": first["content"]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": i, "content": "ok"}
                for i in tool_ids
            ],
        },
    ]
    _, _, body = post(server.url + "/v1/messages", anthropic_request(messages=history))
    second = json.loads(body)
    assert second["content"] == [{"type": "text", "text": "Done."}]
    assert second["stop_reason"] == "end_turn"
    assert second["id"] != first["id"]
    assert [(r["conversation"], r["turn"], r["overrun"]) for r in server.requests] == [
        ("planning", 0, False),
        ("planning", 1, False),
    ]


def test_past_the_last_turn_it_answers_a_final_text_with_zero_usage(server):
    history = [
        {"role": "user", "content": "TACX-STAGE: planning"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_t7_0_abc",
                    "name": "Bash",
                    "input": {},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_t7_0_abc",
                    "content": "ok",
                }
            ],
        },
    ]
    _, _, body = post(server.url + "/v1/messages", anthropic_request(messages=history))
    message = json.loads(body)
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == message["usage"]["output_tokens"] == 0
    assert server.requests[-1]["overrun"] is True and server.requests[-1]["turn"] == 8


def test_a_request_without_tools_is_auxiliary_and_costs_nothing(server):
    # Claude Code's session-title call quotes the prompt (so it matches) but offers no tools.
    request = anthropic_request(
        tools=[],
        output_config={
            "format": {
                "type": "json_schema",
                "schema": {
                    "type": "object",
                    "properties": {"title": {"type": "string"}},
                    "required": ["title"],
                },
            }
        },
    )
    _, _, body = post(server.url + "/v1/messages", request)
    message = json.loads(body)
    assert json.loads(message["content"][0]["text"]) == {"title": "Scripted session"}
    assert message["usage"]["input_tokens"] == message["usage"]["output_tokens"] == 0
    assert (
        server.requests[-1]["auxiliary"] is True
        and server.requests[-1]["conversation"] is None
    )


def test_a_request_matching_no_marker_goes_to_the_catch_all(server):
    _, _, body = post(
        server.url + "/v1/messages", anthropic_request(prompt="Something else")
    )
    assert json.loads(body)["content"][0]["text"] == "Fallback answer."
    assert server.requests[-1]["conversation"] == "fallback"


def test_count_tokens_and_unknown_paths(server):
    status, _, body = post(
        server.url + "/v1/messages/count_tokens", anthropic_request()
    )
    assert status == 200 and json.loads(body)["input_tokens"] > 0
    status, headers, body = post(
        server.url + "/v1/nothing", {}, headers={"anthropic-version": "2023-06-01"}
    )
    assert status == 404
    assert json.loads(body)["error"]["type"] == "not_found_error"
    assert "request-id" in {k.lower() for k in headers}
    status, _, body = post(
        server.url + "/v2/other", {}, headers={"User-Agent": "codex_exec/0.169.0"}
    )
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    assert [r["api"] for r in server.requests[-2:]] == ["anthropic", "openai"]


def test_a_scripted_error_uses_each_apis_error_shape():
    script = {
        "conversations": [
            {"name": "e", "turns": [{"status": 429, "error_message": "slow down"}]}
        ]
    }
    with ScriptedModelServer(script) as server:
        status, _, body = post(server.url + "/v1/messages", anthropic_request())
        assert status == 429
        assert json.loads(body)["error"] == {
            "type": "rate_limit_error",
            "message": "slow down",
        }
        status, _, body = post(
            server.url + "/v1/responses",
            {
                "model": "gpt-5",
                "input": "hi",
                "tools": [{"type": "function", "name": "exec_command"}],
            },
        )
        assert status == 429
        assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
        assert [r["status"] for r in server.requests] == [429, 429]


def openai_request(input_items: list | str, **extra: Any) -> dict:
    return {
        "model": "gpt-5",
        "stream": True,
        "input": input_items,
        "tools": [{"type": "function", "name": "exec_command", "parameters": {}}],
        **extra,
    }


def test_a_streamed_openai_response_carries_calls_and_usage(server):
    prompt = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "You are Codex."}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [
                {
                    "type": "input_text",
                    "text": "<environment_context><cwd>/r</cwd></environment_context>",
                }
            ],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "TACX-STAGE: planning"}],
        },
    ]
    status, _, body = post(server.url + "/v1/responses", openai_request(prompt))
    events = sse(body)
    assert status == 200
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
    done = [
        data["item"] for name, data in events if name == "response.output_item.done"
    ]
    # Codex runs the calls of one response concurrently: the first response carries the
    # turn's text, usage and first call only.
    assert [item["type"] for item in done] == ["message", "function_call"]
    assert done[0]["content"][0]["text"] == "Writing."
    assert done[1]["name"] == "exec_command"
    assert json.loads(done[1]["arguments"]) == {
        "cmd": "printf '%s' '# Plan\n' > plan.md"
    }
    usage = events[-1][1]["response"]["usage"]
    assert usage == {
        "input_tokens": 11 + 33 + 44,
        "input_tokens_details": {"cached_tokens": 33, "cache_write_tokens": 44},
        "output_tokens": 22,
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 11 + 33 + 44 + 22,
    }
    history = list(prompt)
    calls = [done[1]]
    for _ in range(3):
        history += [
            calls[-1],
            {
                "type": "function_call_output",
                "call_id": calls[-1]["call_id"],
                "output": "ok",
            },
        ]
        _, _, body = post(
            server.url + "/v1/responses", openai_request(history, stream=False)
        )
        response = json.loads(body)
        calls.append(response["output"][0])
    later_calls, final = calls[1:3], calls[3]
    assert json.loads(later_calls[0]["arguments"]) == {"cmd": "git commit -am x"}
    assert later_calls[1]["name"] == "Edit"
    assert [c["call_id"][:9] for c in calls[:3]] == [
        "call_t0_0",
        "call_t0_1",
        "call_t0_2",
    ]
    assert final["content"][0]["text"] == "Done."
    assert response["usage"]["input_tokens"] == 1
    assert [(r["api"], r["turn"]) for r in server.requests] == [
        ("openai", 0),
        ("openai", 0),
        ("openai", 0),
        ("openai", 1),
    ]


def test_later_calls_of_a_turn_report_zero_usage(server):
    first = json.loads(
        post(
            server.url + "/v1/responses",
            openai_request("TACX-STAGE: planning", stream=False),
        )[2]
    )
    call = first["output"][1]
    history = [
        {"type": "message", "role": "user", "content": "TACX-STAGE: planning"},
        call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "ok"},
    ]
    second = json.loads(
        post(server.url + "/v1/responses", openai_request(history, stream=False))[2]
    )
    assert [item["type"] for item in second["output"]] == ["function_call"]
    assert second["usage"]["input_tokens"] == second["usage"]["output_tokens"] == 0


def test_write_uses_apply_patch_when_offered(server):
    tools = [
        {"type": "custom", "name": "apply_patch"},
        {"type": "function", "name": "shell"},
    ]
    _, _, body = post(
        server.url + "/v1/responses",
        openai_request("TACX-STAGE: planning", tools=tools, stream=False),
    )
    output = json.loads(body)["output"]
    assert output[1]["type"] == "custom_tool_call"
    assert (
        output[1]["input"]
        == "*** Begin Patch\n*** Add File: plan.md\n+# Plan\n*** End Patch"
    )
    history = [
        {"type": "message", "role": "user", "content": "TACX-STAGE: planning"},
        output[1],
        {
            "type": "custom_tool_call_output",
            "call_id": output[1]["call_id"],
            "output": "ok",
        },
    ]
    request = openai_request(history, tools=tools, stream=False)
    _, _, body = post(server.url + "/v1/responses", request)
    (bash,) = json.loads(body)["output"]
    assert json.loads(bash["arguments"]) == {
        "command": ["bash", "-lc", "git commit -am x"]
    }


def test_a_tool_of_a_namespace_is_called_by_its_own_name_with_the_namespace_beside_it():
    """codex 0.169 offers each MCP server's tools as namespace ``mcp__<server>``; the script names
    the tool ``mcp__docs__whoami`` and the answer is the API's namespaced function call."""
    script = {"conversations": [{"name": "any", "turns": [{"tool_calls": [{"tool": {"name": "mcp__docs__whoami", "input": {"x": 1}}}]}]}]}
    namespace = {"type": "namespace", "name": "mcp__docs", "tools": [{"type": "function", "name": "whoami", "parameters": {}}]}
    with ScriptedModelServer(script) as running:
        tools = [{"type": "function", "name": "exec_command", "parameters": {}}, namespace]
        _, _, body = post(running.url + "/v1/responses", openai_request("hello", tools=tools, stream=False))
    (call,) = json.loads(body)["output"]
    assert (call["type"], call["name"], call["namespace"], json.loads(call["arguments"])) == ("function_call", "whoami", "mcp__docs", {"x": 1})
    assert "_tacx_namespace" not in body.decode()


def test_models_are_listed(server):
    with urllib.request.urlopen(server.url + "/v1/models", timeout=5) as response:
        assert any(m["id"] == "gpt-5" for m in json.load(response)["data"])


def test_a_hanging_turn_keeps_the_connection_open_until_the_server_stops():
    script = {"conversations": [{"name": "stuck", "turns": [{"hang": True}]}]}
    server = ScriptedModelServer(script).start()
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["status"] = post(server.url + "/v1/messages", anthropic_request())[
                0
            ]
        except (OSError, http.client.HTTPException) as exc:  # closed without an answer
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    record = server.wait_for_requests(1, timeout=5)[0]
    assert record["status"] is None and record["conversation"] == "stuck"
    time.sleep(0.5)
    assert thread.is_alive() and not outcome
    started = time.monotonic()
    server.stop()
    thread.join(timeout=5)
    assert not thread.is_alive() and "error" in outcome
    assert time.monotonic() - started < 3


def test_delay_holds_the_answer_back():
    script = {
        "conversations": [{"name": "slow", "turns": [{"text": "late", "delay": 0.4}]}]
    }
    with ScriptedModelServer(script) as server:
        started = time.monotonic()
        post(server.url + "/v1/messages", anthropic_request())
        assert time.monotonic() - started >= 0.4


def test_concurrent_requests_are_recorded_and_logged(tmp_path):
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(WRITE_THEN_TEXT, request_log=log) as server:
        threads = [
            threading.Thread(
                target=post, args=(server.url + "/v1/messages", anthropic_request())
            )
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        records = server.wait_for_requests(8, timeout=10, conversation="planning")
        for thread in threads:
            thread.join()
    assert {r["turn"] for r in records} == {0}
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(logged) == 8
    assert set(logged[0]) == {
        "time",
        "api",
        "method",
        "path",
        "conversation",
        "turn",
        "status",
        "auxiliary",
        "overrun",
    }
    assert abs(logged[0]["time"] - time.time()) < 60


def test_it_binds_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        ScriptedModelServer(WRITE_THEN_TEXT, host="0.0.0.0")
    with ScriptedModelServer(WRITE_THEN_TEXT) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with socket.create_connection(("127.0.0.1", server.port), timeout=2):
            pass


def test_wait_for_requests_times_out(server):
    with pytest.raises(TimeoutError):
        server.wait_for_requests(1, timeout=0.2)


def test_stream_delay_spaces_the_events_out():
    script = {
        "conversations": [
            {"name": "slow", "turns": [{"text": "x", "stream_delay": 0.05}]}
        ]
    }
    with ScriptedModelServer(script) as server:
        started = time.monotonic()
        _, _, body = post(server.url + "/v1/messages", anthropic_request(stream=True))
        elapsed = time.monotonic() - started
    gaps = len(sse(body)) - 1
    assert elapsed >= 0.05 * gaps
