"""The Anthropic Messages API as the scripted model server speaks it (enough for Claude Code).

Routes: ``POST /v1/messages`` (streamed SSE when ``stream`` is true, else one JSON message) and
``POST /v1/messages/count_tokens`` (a rough estimate). Query strings (Claude Code sends
``?beta=true``) are ignored. Anything else is a 404 in the API's error shape.

Per request:

* match text = the system prompt (string or text blocks) + the text of the first user message;
* turn = 1 + the highest turn encoded in ``tool_use`` / ``tool_result`` ids of the history;
* main loop = the request offers tools (Claude Code's agent loop always does; its auxiliary
  calls, if any, do not);
* ``write`` becomes the ``Write`` tool with ``file_path`` made absolute against the
  "Primary working directory" Claude Code puts in its system prompt; ``bash`` becomes ``Bash``.
* usage: ``message_start`` carries input/cache counts and ``output_tokens: 1`` like the real API;
  ``message_delta`` carries the final counts (output included). Claude Code keeps the last
  value per message, so its ``result.usage`` is exactly the sum over the scripted turns.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

from . import exchange
from .exchange import Decision, Reply, chunks, decide, new_id, sse_event
from .script import Script, ToolCall, Usage

API = "anthropic"

_CWD_PATTERNS = (
    re.compile(r"Primary working directory: (\S[^\n]*)"),
    re.compile(r"<cwd>([^<\n]+)</cwd>"),
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def handle(method: str, path: str, body: bytes, script: Script) -> Reply:
    """Answer one request whose path starts with ``/v1/messages``."""
    route = exchange.route_of(path)
    request = exchange.parse_post(method, route, body, ("/v1/messages", "/v1/messages/count_tokens"), error_reply)
    if isinstance(request, Reply):
        return request
    if route == "/v1/messages/count_tokens":
        # Not a model turn: a size estimate (~4 bytes a token) is all callers need.
        return exchange.auxiliary_reply({"input_tokens": max(1, len(body) // 4)})
    return messages(request, script)


def messages(request: dict[str, Any], script: Script) -> Reply:
    """Answer ``POST /v1/messages`` from the script."""
    decision = decide(script, match_text=match_text(request), history_ids=history_ids(request), main_loop=bool(request.get("tools")))
    refusal = exchange.scripted_error_reply(decision, error_reply, _default_error)
    if refusal is not None:
        return refusal
    content = _content(decision, cwd=working_directory(request), schema=_output_schema(request))
    message = {
        "id": new_id("msg"),  # unique per answer: Claude Code dedups usage by message id
        "type": "message",
        "role": "assistant",
        "model": str(request.get("model") or "claude-scripted"),
        "content": content,
        "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn",
        "stop_sequence": None,
        "usage": usage_dict(decision.usage),
    }
    return exchange.answer(message, stream=bool(request.get("stream")), events=_stream).timed(decision)


def match_text(request: dict[str, Any]) -> str:
    """System prompt plus the first user message's text, which ``match`` is searched in; for
    a resumed session (``claude --resume``: the old conversation, then a new prompt) also the
    latest prompt, so a script can tell the continuation apart."""
    parts = [exchange.text_of(request.get("system"))]
    messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
    for message in messages:
        if message.get("role") == "user":
            parts.append(exchange.text_of(message.get("content")))
            break
    latest = _latest_prompt(messages)
    if latest > 0:
        parts.append(exchange.text_of(messages[latest].get("content")))
    return "\n".join(parts)


def _is_prompt(message: dict[str, Any]) -> bool:
    """A user message that is a prompt (text), not the answer to tool calls."""
    content = message.get("content")
    if message.get("role") != "user":
        return False
    if isinstance(content, str):
        return bool(content.strip())
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    return bool(blocks) and not any(b.get("type") == "tool_result" for b in blocks)


def _latest_prompt(messages: list[dict[str, Any]]) -> int:
    """Index of the latest prompt after the first one (a resumed session's new prompt), or -1."""
    prompts = [i for i, m in enumerate(messages) if _is_prompt(m)]
    return prompts[-1] if len(prompts) > 1 and any(m.get("role") == "assistant" for m in messages[: prompts[-1]]) else -1


def history_ids(request: dict[str, Any]) -> list[str]:
    """Every tool_use / tool_result id in the conversation history (of a resumed session: since
    its new prompt, so the continuation's turns count from 0)."""
    ids: list[str] = []
    messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
    start = max(0, _latest_prompt(messages))
    for message in messages[start:]:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict):
                for key in ("id", "tool_use_id"):
                    if isinstance(block.get(key), str):
                        ids.append(block[key])
    return ids


def working_directory(request: dict[str, Any]) -> str | None:
    """The agent's cwd as Claude Code states it in its system prompt, if it does."""
    return exchange.first_match(exchange.text_of(request.get("system")), _CWD_PATTERNS)


def usage_dict(usage: Usage) -> dict[str, Any]:
    """A Messages API ``usage`` object (input excludes cache reads/writes)."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_creation_input_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": usage.output_tokens,
        "service_tier": "standard",
    }


def error_reply(status: int, message: str) -> Reply:
    """An error in the Messages API shape, with a ``request-id`` header like the real API."""
    request_id = new_id("req")
    payload = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id,
    }
    reply = exchange.json_reply(status, payload)
    reply.headers["request-id"] = request_id
    return reply


def _default_error(status: int) -> str:
    return {401: "invalid x-api-key", 429: "Rate limited", 529: "Overloaded"}.get(
        status, f"Scripted error {status}"
    )


def _content(
    decision: Decision, *, cwd: str | None, schema: dict[str, Any] | None
) -> list[dict[str, Any]]:
    turn = decision.turn
    if turn is None:
        # Claude Code's title call asks for JSON ({"title": ...}); give it a valid instance.
        text = json.dumps(_instance(schema)) if schema else decision.fallback_text
        return [{"type": "text", "text": text}]
    blocks: list[dict[str, Any]] = []
    if turn.text:
        blocks.append({"type": "text", "text": turn.text})
    for k, call in enumerate(turn.tool_calls):
        name, tool_input = _tool(call, cwd)
        blocks.append(
            {
                "type": "tool_use",
                "id": new_id("toolu", decision.turn_index, k),
                "name": name,
                "input": tool_input,
            }
        )
    return blocks


def _output_schema(request: dict[str, Any]) -> dict[str, Any] | None:
    output_format = (request.get("output_config") or {}).get("format") or {}
    schema = (
        output_format.get("schema")
        if output_format.get("type") == "json_schema"
        else None
    )
    return schema if isinstance(schema, dict) else None


def _instance(schema: dict[str, Any]) -> Any:
    """A minimal value that satisfies a simple JSON schema (objects of scalars)."""
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: _instance(properties.get(name) or {})
            for name in schema.get("required") or properties
        }
    return {
        "string": "Scripted session",
        "integer": 0,
        "number": 0,
        "boolean": False,
        "array": [],
    }.get(kind)


def _tool(call: ToolCall, cwd: str | None) -> tuple[str, Any]:
    if call.kind == "write":
        path = call.path
        if cwd and not posixpath.isabs(path):
            path = posixpath.join(cwd, path)
        return "Write", {"file_path": path, "content": call.content}
    if call.kind == "bash":
        return "Bash", {
            "command": call.command,
            "description": "Run a scripted command",
        }
    return call.name, call.input


def _stream(message: dict[str, Any]) -> list[bytes]:
    """The SSE events of one streamed message, in the real API's order."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events = [
        sse_event("message_start", {"type": "message_start", "message": start}),
        sse_event("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(_block_start(index, {"type": "text", "text": ""}))
            for piece in chunks(block["text"]):
                events.append(_delta(index, {"type": "text_delta", "text": piece}))
        else:
            events.append(_block_start(index, {**block, "input": {}}))
            for piece in chunks(json.dumps(block["input"]), 64):
                events.append(
                    _delta(index, {"type": "input_json_delta", "partial_json": piece})
                )
        events.append(
            sse_event(
                "content_block_stop", {"type": "content_block_stop", "index": index}
            )
        )
    events.append(
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": usage,
            },
        )
    )
    events.append(sse_event("message_stop", {"type": "message_stop"}))
    return events


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse_event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse_event(
        "content_block_delta",
        {"type": "content_block_delta", "index": index, "delta": delta},
    )
