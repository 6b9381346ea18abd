"""The scripted model server's Gemini API and OpenAI Chat Completions sides over HTTP, without any
agent CLI: streaming shapes, tool calls one per response, usage mapping, errors, Retry-After."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from harness.modelserver import ScriptedModelServer

SCRIPT = {
    "conversations": [
        {
            "name": "planning",
            "match": "TACX-STAGE: planning",
            "turns": [
                {
                    "text": "Writing the plan, then committing it.",
                    "tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n"}}, {"bash": "git commit -am plan"}],
                    "usage": {"input_tokens": 11, "output_tokens": 22, "cache_read_input_tokens": 33, "cache_creation_input_tokens": 44, "reasoning_tokens": 5},
                },
                {"text": "Done.", "usage": {"input_tokens": 1, "output_tokens": 2}},
            ],
        },
        {"name": "limited", "match": "RATE", "turns": [{"status": 429, "retry_after": 0.25}]},
        {"name": "denied", "match": "DENY", "turns": [{"status": 401, "error_message": "API key not valid"}]},
    ]
}
GEMINI_TOOLS = [{"functionDeclarations": [
    {"name": "write_file", "parametersJsonSchema": {"type": "object", "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}}, "required": ["file_path", "content"]}},
    {"name": "run_shell_command", "parametersJsonSchema": {"type": "object", "properties": {"command": {"type": "string"}, "is_background": {"type": "boolean"}}, "required": ["command", "is_background"]}},
]}]  # fmt: skip
CHAT_TOOLS = [
    {"type": "function", "function": {"name": "write", "parameters": {"type": "object", "properties": {"filePath": {"type": "string"}, "content": {"type": "string"}}, "required": ["filePath", "content"]}}},
    {"type": "function", "function": {"name": "bash", "parameters": {"type": "object", "properties": {"command": {"type": "string"}, "description": {"type": "string"}}, "required": ["command", "description"]}}},
]


def post(url: str, payload: Any) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def sse_data(body: bytes) -> list[Any]:
    values = []
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            values.append(data if data == "[DONE]" else json.loads(data))
    return values


@pytest.fixture
def server():
    with ScriptedModelServer(SCRIPT) as running:
        yield running


# -- Gemini API ------------------------------------------------------------------------------------
def gemini(server, contents: list[dict], *, stream: bool = True, text: str = "TACX-STAGE: planning") -> tuple[int, dict, bytes]:
    verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
    payload = {"systemInstruction": {"parts": [{"text": "You are an agent. Working in /repo."}]}, "contents": [{"role": "user", "parts": [{"text": text}]}, *contents], "tools": GEMINI_TOOLS}
    return post(f"{server.url}/v1beta/models/gemini-2.5-pro:{verb}", payload)


def test_gemini_streams_text_then_one_function_call_with_the_usage_on_the_last_event(server):
    status, headers, body = gemini(server, [])

    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_data(body)
    parts = [p for e in events for p in e["candidates"][0]["content"]["parts"]]
    assert "".join(p.get("text", "") for p in parts) == "Writing the plan, then committing it."
    calls = [p["functionCall"] for p in parts if "functionCall" in p]
    assert [(c["name"], c["args"]) for c in calls] == [("write_file", {"file_path": "plan.md", "content": "# Plan\n"})]
    assert all("usageMetadata" not in e for e in events[:-1])
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    # Gemini semantics: cached tokens (and, lacking a cache-write figure, cache writes) are in
    # the prompt; thoughts are outside the candidates.
    assert events[-1]["usageMetadata"] == {"promptTokenCount": 11 + 33 + 44, "candidatesTokenCount": 22 - 5, "cachedContentTokenCount": 33, "thoughtsTokenCount": 5, "totalTokenCount": 11 + 33 + 44 + 22}
    assert events[-1]["modelVersion"] == "gemini-2.5-pro"


def test_gemini_hands_out_the_turns_calls_in_order_then_the_next_turn(server):
    first = sse_data(gemini(server, [])[2])
    call = next(p["functionCall"] for e in first for p in e["candidates"][0]["content"]["parts"] if "functionCall" in p)
    history = [{"role": "model", "parts": [{"functionCall": call}]}, {"role": "user", "parts": [{"functionResponse": {"id": call["id"], "name": call["name"], "response": {"output": "ok"}}}]}]

    second = sse_data(gemini(server, history)[2])
    shell = next(p["functionCall"] for e in second for p in e["candidates"][0]["content"]["parts"] if "functionCall" in p)
    # A required parameter the script does not fill gets an empty value of its type.
    assert (shell["name"], shell["args"]) == ("run_shell_command", {"command": "git commit -am plan", "description": "Run a scripted command", "is_background": False})
    assert "usageMetadata" in second[-1] and second[-1]["usageMetadata"]["totalTokenCount"] == 0  # same turn: no usage twice

    history += [{"role": "model", "parts": [{"functionCall": shell}]}, {"role": "user", "parts": [{"functionResponse": {"id": shell["id"], "name": shell["name"], "response": {}}}]}]
    status, _, body = gemini(server, history, stream=False)
    answer = json.loads(body)
    assert status == 200 and answer["candidates"][0]["content"]["parts"] == [{"text": "Done."}]
    assert answer["usageMetadata"]["promptTokenCount"] == 1
    assert [(r["api"], r["turn"]) for r in server.requests] == [("gemini", 0), ("gemini", 0), ("gemini", 1)]


def test_gemini_errors_have_the_google_shape_and_a_429_says_when_to_retry(server):
    status, _, body = gemini(server, [], text="DENY")
    assert status == 401 and json.loads(body) == {"error": {"code": 401, "message": "API key not valid", "status": "UNAUTHENTICATED"}}

    status, headers, body = gemini(server, [], text="RATE")
    assert status == 429 and json.loads(body)["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("0.25", "250")


def test_a_gemini_request_without_tools_is_auxiliary_and_costs_nothing(server):
    payload = {"contents": [{"role": "user", "parts": [{"text": "TACX-STAGE: planning"}]}]}
    status, _, body = post(f"{server.url}/v1beta/models/gemini-2.5-flash:generateContent", payload)

    assert status == 200 and json.loads(body)["usageMetadata"]["totalTokenCount"] == 0
    assert server.requests[-1]["auxiliary"] is True


# -- OpenAI Chat Completions -----------------------------------------------------------------------
def chat(server, messages: list[dict], *, stream: bool = True, text: str = "TACX-STAGE: planning") -> tuple[int, dict, bytes]:
    payload = {"model": "glm-4.6", "stream": stream, "stream_options": {"include_usage": True}, "tools": CHAT_TOOLS, "messages": [{"role": "system", "content": "<env>\n  Working directory: /repo\n</env>"}, {"role": "user", "content": text}, *messages]}
    return post(f"{server.url}/v1/chat/completions", payload)


def test_chat_streams_content_then_tool_call_deltas_then_the_usage_chunk_and_done(server):
    status, headers, body = chat(server, [])

    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    chunks = sse_data(body)
    assert chunks[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1] if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Writing the plan, then committing it."
    tool_deltas = [t for d in deltas for t in d.get("tool_calls", [])]
    assert tool_deltas[0]["id"].startswith("call_t0_0_") and tool_deltas[0]["function"]["name"] == "write"
    arguments = json.loads("".join(t["function"]["arguments"] for t in tool_deltas))
    assert arguments == {"filePath": "/repo/plan.md", "content": "# Plan\n"}  # absolute against the stated cwd
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"]][-1] == "tool_calls"
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 88, "completion_tokens": 22, "total_tokens": 110, "prompt_tokens_details": {"cached_tokens": 33}, "completion_tokens_details": {"reasoning_tokens": 5}}


def test_chat_replays_the_turn_from_the_tool_call_ids_in_the_history(server):
    first = sse_data(chat(server, [])[2])
    call_id = next(t["id"] for c in first[:-1] if c["choices"] for t in c["choices"][0]["delta"].get("tool_calls", []) if "id" in t)
    history = [{"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "write", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": call_id, "content": "ok"}]

    status, _, body = chat(server, history, stream=False)

    answer = json.loads(body)
    assert status == 200 and answer["object"] == "chat.completion"
    call = answer["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "bash" and json.loads(call["function"]["arguments"]) == {"command": "git commit -am plan", "description": "Run a scripted command"}
    assert answer["usage"]["prompt_tokens"] == 0  # the turn's usage went with its first response
    assert [(r["api"], r["turn"]) for r in server.requests] == [("openai-chat", 0), ("openai-chat", 0)]


def test_chat_errors_have_the_openai_shape(server):
    status, _, body = chat(server, [], text="DENY")
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"

    status, headers, _ = chat(server, [], text="RATE")
    assert status == 429 and headers["retry-after-ms"] == "250"


def test_a_bad_retry_after_is_refused_with_its_field_path():
    from harness.modelserver import ScriptError, load_script

    with pytest.raises(ScriptError, match=r"^conversations\[0\]\.turns\[0\]\.retry_after: must be a non-negative number"):
        load_script({"conversations": [{"name": "x", "turns": [{"status": 429, "retry_after": -1}]}]})
