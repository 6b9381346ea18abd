"""The OpenAI Responses API as the scripted model server speaks it (enough for Codex CLI).

Routes: ``POST /v1/responses`` (SSE when ``stream`` is true, else one response object) and
``GET /v1/models``. Anything else is a 404 in the API's error shape.

Per request:

* match text = ``instructions`` + the text of the leading system/developer/user messages of
  ``input`` (everything before the first model output or tool item);
* turn = from the ``call_id`` / item ids of ``input``, in sequential mode (see
  :mod:`.exchange`): Codex runs the function calls of one response concurrently, so a turn's
  tool calls go out one per response, in order; the first carries the turn's text and usage,
  the others report zero usage (totals stay exact);
* main loop = the request offers tools;
* ``bash``/``write`` are translated to the shell tool the request offers: codex 0.169.0 offers
  ``exec_command`` (``{"cmd": "..."}``, runs in the turn's cwd) and no ``apply_patch``, so
  ``write`` becomes an ``exec_command`` that writes the file with ``printf``. Older shapes
  (``shell`` with an argv list, ``shell_command``) and an ``apply_patch`` tool (function or
  free-form) are used when offered instead.
* a tool inside a ``namespace`` tool (codex 0.169 offers each MCP server's tools as namespace
  ``mcp__<server>``) is called as ``<namespace>__<tool>`` in the script, e.g.
  ``mcp__docs__whoami``, and answered as the API does: a ``function_call`` named ``whoami``
  with ``"namespace": "mcp__docs"``.
* usage (script → Responses API): ``input_tokens = input + cache_read + cache_creation``
  (OpenAI counts cached tokens inside input), ``input_tokens_details = {cached_tokens:
  cache_read, cache_write_tokens: cache_creation}``, ``output_tokens = output``,
  ``output_tokens_details.reasoning_tokens = reasoning_tokens``,
  ``total_tokens = input_tokens + output_tokens``.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import time
from typing import Any

from . import exchange
from .exchange import Decision, Reply, chunks, decide, new_id, sse_event
from .script import Script, ToolCall, Usage

API = "openai"

_CWD = re.compile(r"<cwd>([^<\n]+)</cwd>")
_SHELL_TOOLS = ("exec_command", "shell_command", "shell")
NAMESPACE = "_tacx_namespace"  # marks a tool found inside a ``namespace`` tool (never sent)

ERROR_CODES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def handle(method: str, path: str, body: bytes, script: Script) -> Reply:
    """Answer one request under ``/v1/responses`` or ``/v1/models``."""
    route = exchange.route_of(path)
    if method == "GET" and route == "/v1/models":
        return exchange.auxiliary_reply({"object": "list", "data": [_model("gpt-5"), _model("gpt-5-codex")]})
    request = exchange.parse_post(method, route, body, ("/v1/responses",), error_reply)
    return request if isinstance(request, Reply) else responses(request, script)


def responses(request: dict[str, Any], script: Script) -> Reply:
    """Answer ``POST /v1/responses`` from the script."""
    # Sequential: codex runs the calls of one response concurrently.
    decision = decide(script, match_text=match_text(request), history_ids=history_ids(request), main_loop=bool(request.get("tools")), sequential=True)
    refusal = exchange.scripted_error_reply(decision, error_reply)
    if refusal is not None:
        return refusal
    response = {
        "id": new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": str(request.get("model") or "gpt-scripted"),
        "output": _output(decision, tools=_tools_by_name(request)),
        "parallel_tool_calls": bool(request.get("parallel_tool_calls", True)),
        "usage": usage_dict(decision.usage),
    }
    return exchange.answer(response, stream=bool(request.get("stream")), events=_stream).timed(decision)


def match_text(request: dict[str, Any]) -> str:
    """``instructions`` plus the text of the messages that open ``input``."""
    parts = [request.get("instructions") or ""]
    items = request.get("input")
    if isinstance(items, str):
        return "\n".join([*parts, items])
    for item in items or []:
        if not isinstance(item, dict):
            continue
        if item.get("type", "message") != "message" or item.get("role") not in (
            "system",
            "developer",
            "user",
        ):
            break
        parts.append(exchange.text_of(item.get("content")))
    return "\n".join(p for p in parts if isinstance(p, str))


def history_ids(request: dict[str, Any]) -> list[str]:
    """Every ``call_id`` and item ``id`` in ``input``."""
    items = request.get("input")
    ids: list[str] = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            ids.extend(
                item[key] for key in ("call_id", "id") if isinstance(item.get(key), str)
            )
    return ids


def working_directory(request: dict[str, Any]) -> str | None:
    """The cwd from codex's ``<environment_context>`` message, if present."""
    return exchange.first_match(match_text(request), (_CWD,))


def usage_dict(usage: Usage) -> dict[str, Any]:
    """A Responses API ``usage`` object (cached tokens counted inside ``input_tokens``)."""
    prompt = usage.prompt_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_input_tokens,
            "cache_write_tokens": usage.cache_creation_input_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": prompt + usage.output_tokens,
    }


def error_reply(status: int, message: str) -> Reply:
    """An error in the OpenAI shape: ``{"error": {message, type, param, code}}``."""
    kind, code = ERROR_CODES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    reply = exchange.json_reply(
        status,
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
    )
    reply.headers["x-request-id"] = new_id("req")
    return reply


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tacx-scripted"}


def _tools_by_name(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for tool in request.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "namespace":
            for inner in tool.get("tools") or []:
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    found.setdefault(inner["name"], inner)
                    if isinstance(tool.get("name"), str):
                        found.setdefault(f"{tool['name']}__{inner['name']}", {**inner, NAMESPACE: tool["name"]})
        elif isinstance(tool.get("name"), str):
            found[tool["name"]] = tool
        elif tool.get("type") == "local_shell":
            found["local_shell"] = tool
    return found


def _output(
    decision: Decision, *, tools: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    turn = decision.turn
    if turn is None:
        return [_message(decision.fallback_text, decision.turn_index)]
    output: list[dict[str, Any]] = []
    if turn.text and decision.first_response:
        output.append(_message(turn.text, decision.turn_index))
    k = decision.call_index or 0
    if k < len(turn.tool_calls):
        output.append(
            _call_item(turn.tool_calls[k], tools, decision.turn_index or 0, k)
        )
    return output


def _message(text: str, turn: int | None) -> dict[str, Any]:
    return {
        "type": "message",
        "id": new_id("msg", turn),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call_item(
    call: ToolCall, tools: dict[str, dict[str, Any]], turn: int, k: int
) -> dict[str, Any]:
    call_id = new_id("call", turn, k)
    if call.kind == "write" and "apply_patch" in tools:
        patch = add_file_patch(call.path, call.content)
        if tools["apply_patch"].get("type") == "custom":
            return _custom_call(call_id, "apply_patch", patch, turn, k)
        return _function_call(call_id, "apply_patch", {"input": patch}, turn, k)
    if call.kind in ("write", "bash"):
        command = (
            call.command
            if call.kind == "bash"
            else _write_command(call.path, call.content)
        )
        name = next((n for n in _SHELL_TOOLS if n in tools), "exec_command")
        if name == "shell":
            return _function_call(
                call_id, name, {"command": ["bash", "-lc", command]}, turn, k
            )
        if name == "shell_command":
            return _function_call(call_id, name, {"command": command}, turn, k)
        return _function_call(call_id, name, {"cmd": command}, turn, k)
    if isinstance(call.input, str) or tools.get(call.name, {}).get("type") == "custom":
        raw = call.input if isinstance(call.input, str) else json.dumps(call.input)
        return _custom_call(call_id, call.name, raw, turn, k)
    namespace = tools.get(call.name, {}).get(NAMESPACE)
    if namespace:  # the API names a namespaced tool by its own name, with its namespace beside it
        item = _function_call(call_id, tools[call.name]["name"], dict(call.input or {}), turn, k)
        return {**item, "namespace": namespace}
    return _function_call(call_id, call.name, dict(call.input or {}), turn, k)


def _function_call(call_id: str, name: str, arguments: dict[str, Any], turn: int, k: int) -> dict[str, Any]:
    return _output_call("function_call", new_id("fc", turn, k), call_id, name, arguments=json.dumps(arguments))


def _custom_call(call_id: str, name: str, raw: str, turn: int, k: int) -> dict[str, Any]:
    return _output_call("custom_tool_call", new_id("ctc", turn, k), call_id, name, input=raw)


def _output_call(kind: str, item_id: str, call_id: str, name: str, **payload: Any) -> dict[str, Any]:
    """One tool-call output item; ``payload`` is its ``arguments`` (function) or ``input`` (custom)."""
    return {"type": kind, "id": item_id, "status": "completed", "call_id": call_id, "name": name, **payload}


def _write_command(path: str, content: str) -> str:
    directory = posixpath.dirname(path)
    write = f"printf '%s' {shlex.quote(content)} > {shlex.quote(path)}"
    return f"mkdir -p {shlex.quote(directory)} && {write}" if directory else write


def add_file_patch(path: str, content: str) -> str:
    lines = content.splitlines() or [""]
    body = "".join(f"+{line}\n" for line in lines)
    return f"*** Begin Patch\n*** Add File: {path}\n{body}*** End Patch"


def _stream(response: dict[str, Any]) -> list[bytes]:
    """The SSE events of one streamed response, in the real API's order."""
    seq = iter(range(1_000_000))

    def event(kind: str, **data: Any) -> bytes:
        return sse_event(kind, {"type": kind, "sequence_number": next(seq), **data})

    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    events = [
        event("response.created", response=pending),
        event("response.in_progress", response=pending),
    ]
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
            events.append(event("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []}))
            events.append(event("response.content_part.added", **ids, part=part))
            events += [event("response.output_text.delta", **ids, delta=piece) for piece in chunks(text)]
            events.append(event("response.output_text.done", **ids, text=text))
            events.append(event("response.content_part.done", **ids, part={**part, "text": text}))
        else:
            # A function call streams its JSON ``arguments``; a custom tool call (apply_patch) its ``input``.
            field, kind = ("arguments", "function_call_arguments") if item["type"] == "function_call" else ("input", "custom_tool_call_input")
            events.append(
                event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", field: ""},
                )
            )
            for piece in chunks(item[field], 64):
                events.append(event(f"response.{kind}.delta", item_id=item["id"], output_index=index, delta=piece))
            events.append(event(f"response.{kind}.done", item_id=item["id"], output_index=index, **{field: item[field]}))
        events.append(event("response.output_item.done", output_index=index, item=item))
    events.append(event("response.completed", response=response))
    return events
