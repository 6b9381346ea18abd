"""The Gemini API as the scripted model server speaks it (enough for the Gemini CLI).

Routes: ``POST /v1beta/models/{model}:streamGenerateContent`` (server-sent events, ``?alt=sse``;
each event is ``data: <GenerateContentResponse>`` and a blank line), ``POST
/v1beta/models/{model}:generateContent`` (one JSON response), ``POST …:countTokens`` (a rough
estimate) and ``GET /v1beta/models`` . ``/v1/`` works the same as ``/v1beta/``. Anything else is
a 404 in the API's error shape ``{"error": {code, message, status}}``.

Per request:

* match text = ``systemInstruction`` + the text parts of every ``user`` content (tool results
  are ``functionResponse`` parts, not text, so they never match);
* turn = from the ids of the ``functionCall`` / ``functionResponse`` parts in ``contents``
  (the Gemini CLI sends the server's ids back), in sequential mode (see :mod:`.exchange`): one
  tool call per response, so a write and a shell command scripted in one turn run in order;
* main loop = the request offers tools (the CLI's ``auto`` model router and its other helper
  calls offer none: they are auxiliary and report zero usage);
* ``write`` becomes ``write_file {file_path, content}`` (absolute against the working directory
  the CLI states in its first message, when found), ``bash`` becomes ``run_shell_command
  {command, description}``; required parameters of the offered declaration that the script
  does not fill get an empty value of their type;
* usage (script → ``usageMetadata``): ``promptTokenCount = input + cache_read + cache_creation``
  (Gemini counts cached tokens inside the prompt and has no cache-write figure, so cache writes
  arrive as ordinary input), ``cachedContentTokenCount = cache_read``, ``candidatesTokenCount =
  output - reasoning``, ``thoughtsTokenCount = reasoning``, ``totalTokenCount`` = their sum. Only
  the last event of a stream carries it (the CLI keeps the last figure of each call).
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

from . import exchange
from .exchange import Decision, Reply, chunks, decide, fill_required, new_id
from .script import Script, ToolCall, Usage

API = "gemini"

# The CLI's cwd as its system prompt or opening message states it (in match_text).
_CWD_PATTERNS = (
    re.compile(r"I'm currently working in the directory: (\S[^\n]*)"),
    re.compile(r"[Cc]urrent working directory[^:\n]*: (/[^\n]*)"),
    re.compile(r"<cwd>([^<\n]+)</cwd>"),
)
_METHOD = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+):(\w+)$")

STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def is_route(route: str) -> bool:
    """Whether a path (without query) belongs to this API."""
    return route.startswith(("/v1beta/", "/v1alpha/")) or bool(_METHOD.match(route))


def handle(method: str, path: str, body: bytes, script: Script) -> Reply:
    """Answer one request under ``/v1beta/models``."""
    route = exchange.route_of(path)
    if method == "GET" and route.endswith("/models"):
        return exchange.auxiliary_reply({"models": [_model("gemini-2.5-pro"), _model("gemini-2.5-flash")]})
    found = _METHOD.match(route)
    verbs = ("streamGenerateContent", "generateContent", "countTokens")
    request = exchange.parse_post(method, route, body, [route] if found and found.group(2) in verbs else [], error_reply)
    if isinstance(request, Reply):
        return request
    model, verb = found.group(1), found.group(2)
    if verb == "countTokens":
        return exchange.auxiliary_reply({"totalTokens": max(1, len(body) // 4)})
    return generate(request, script, model=model, stream=verb == "streamGenerateContent")


def generate(request: dict[str, Any], script: Script, *, model: str, stream: bool) -> Reply:
    """Answer ``:generateContent`` / ``:streamGenerateContent`` from the script."""
    tools = _declarations(request)
    decision = decide(script, match_text=match_text(request), history_ids=history_ids(request), main_loop=bool(tools), sequential=True)
    refusal = exchange.scripted_error_reply(decision, error_reply)
    if refusal is not None:
        return refusal
    parts = _parts(decision, tools=tools, cwd=exchange.first_match(match_text(request), _CWD_PATTERNS, rstrip="."))
    finish = {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP", "index": 0}], "usageMetadata": usage_dict(decision.usage), "modelVersion": model, "responseId": new_id("resp")}
    if not stream:
        finish["candidates"][0]["content"]["parts"] = parts
        return exchange.json_reply(200, finish).timed(decision)
    events = []
    for part in parts:
        pieces = chunks(part["text"]) if "text" in part else [None]
        for piece in pieces:
            body = {"text": piece} if piece is not None else part
            events.append(_sse({"candidates": [{"content": {"role": "model", "parts": [body]}, "index": 0}], "modelVersion": model, "responseId": finish["responseId"]}))
    if events:  # the usage and finish reason ride on the last piece, as the real API does
        last = json.loads(events.pop()[len(b"data: ") :])
        last["candidates"][0]["finishReason"] = "STOP"
        last["usageMetadata"] = finish["usageMetadata"]
        events.append(_sse(last))
    else:
        events.append(_sse(finish))
    return exchange.stream_reply(events).timed(decision)


def match_text(request: dict[str, Any]) -> str:
    """``systemInstruction`` plus the text parts of the ``user`` contents."""
    texts = [_text_of(request.get("systemInstruction"))]
    for content in request.get("contents") or []:
        if isinstance(content, dict) and content.get("role", "user") == "user":
            texts.append(_text_of(content))
    return "\n".join(texts)


def history_ids(request: dict[str, Any]) -> list[str]:
    """The ids of every ``functionCall`` and ``functionResponse`` part in ``contents``."""
    ids = []
    for content in request.get("contents") or []:
        for part in (content.get("parts") if isinstance(content, dict) else None) or []:
            if not isinstance(part, dict):
                continue
            for key in ("functionCall", "functionResponse"):
                value = part.get(key)
                if isinstance(value, dict) and isinstance(value.get("id"), str):
                    ids.append(value["id"])
    return ids


def usage_dict(usage: Usage) -> dict[str, Any]:
    """A Gemini ``usageMetadata`` object (see the module docstring)."""
    prompt = usage.prompt_tokens
    candidates = usage.output_tokens - usage.reasoning_tokens
    data = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "cachedContentTokenCount": usage.cache_read_input_tokens,
        "totalTokenCount": prompt + usage.output_tokens,
    }
    if usage.reasoning_tokens:
        data["thoughtsTokenCount"] = usage.reasoning_tokens
    return data


def error_reply(status: int, message: str) -> Reply:
    """An error in the Gemini API shape."""
    payload = {"error": {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN")}}
    return exchange.json_reply(status, payload)


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\r\n\r\n".encode()


def _model(name: str) -> dict[str, Any]:
    return {"name": f"models/{name}", "displayName": name, "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]}


def _text_of(value: Any) -> str:
    if isinstance(value, dict):  # a Content: its parts
        value = value.get("parts")
    return exchange.text_of(value)


def _declarations(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for tool in request.get("tools") or []:
        for declaration in (tool.get("functionDeclarations") if isinstance(tool, dict) else None) or []:
            if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                found[declaration["name"]] = declaration
    return found


def _parts(decision: Decision, *, tools: dict[str, dict[str, Any]], cwd: str | None) -> list[dict[str, Any]]:
    turn = decision.turn
    if turn is None:
        return [{"text": decision.fallback_text}]
    parts: list[dict[str, Any]] = []
    if turn.text and decision.first_response:
        parts.append({"text": turn.text})
    k = decision.call_index or 0
    if k < len(turn.tool_calls):
        name, args = _tool(turn.tool_calls[k], tools, cwd)
        parts.append({"functionCall": {"id": new_id("call", decision.turn_index or 0, k), "name": name, "args": args}})
    return parts


def _tool(call: ToolCall, tools: dict[str, dict[str, Any]], cwd: str | None) -> tuple[str, dict[str, Any]]:
    if call.kind == "write":
        path = call.path
        if cwd and not posixpath.isabs(path):
            path = posixpath.join(cwd, path)
        name, args = "write_file", {"file_path": path, "content": call.content}
    elif call.kind == "bash":
        name, args = "run_shell_command", {"command": call.command, "description": "Run a scripted command"}
    else:
        name, args = call.name, dict(call.input) if isinstance(call.input, dict) else {"input": call.input}
    declaration = tools.get(name) or {}
    schema = declaration.get("parametersJsonSchema") or declaration.get("parameters") or {}
    return name, fill_required(args, schema)
