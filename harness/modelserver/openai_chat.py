"""The OpenAI Chat Completions API as the scripted model server speaks it (Qwen Code, opencode).

Route: ``POST /v1/chat/completions`` (server-sent ``chat.completion.chunk`` events ending with
``data: [DONE]`` when ``stream`` is true, else one ``chat.completion``). ``GET /v1/models`` stays
with :mod:`.openai_responses` (same list). Anything else is a 404 in the OpenAI error shape.

Per request:

* match text = the ``system`` / ``developer`` messages + the text of every ``user`` message
  (tool results are ``tool`` messages and never match);
* turn = from the ``tool_calls[].id`` of ``assistant`` messages and the ``tool_call_id`` of
  ``tool`` messages, in sequential mode (see :mod:`.exchange`), one tool call per response;
* main loop = the request offers tools (opencode's title call offers none: auxiliary);
* ``write`` / ``bash`` become the file-writing and shell tools the request offers: ``write_file
  {file_path, content}`` and ``run_shell_command {command}`` (Qwen Code), ``write {filePath,
  content}`` and ``bash {command, description}`` (opencode); paths are made absolute against the
  working directory stated in the prompt when one is found (opencode offers ``gpt-*`` models
  ``apply_patch {patchText}`` instead of ``write``: an "Add File" patch); required parameters the script does
  not fill get an empty value of their type;
* tool calls stream as ``tool_calls`` deltas (id, name, then argument pieces); the last chunk has
  ``choices: []`` and the ``usage``: ``prompt_tokens = input + cache_read + cache_creation``
  (cached tokens are inside the prompt, OpenAI semantics), ``prompt_tokens_details.cached_tokens
  = cache_read``, ``completion_tokens = output`` (reasoning included),
  ``completion_tokens_details.reasoning_tokens = reasoning``.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from typing import Any

from . import exchange
from .exchange import Decision, Reply, chunks, decide, fill_required, new_id
from .openai_responses import add_file_patch, error_reply
from .script import Script, ToolCall, Usage

API = "openai-chat"

# The agent's cwd as its system prompt or first message states it (in match_text).
_CWD_PATTERNS = (
    re.compile(r"<cwd>([^<\n]+)</cwd>"),
    re.compile(r"Working directory: (/[^\n<]*)"),
    re.compile(r"I'm currently working in the directory: (/[^\n]*)"),
    re.compile(r"[Cc]urrent working directory[^:\n]*: (/[^\n]*)"),
)
WRITE_TOOLS = {"write_file": "file_path", "write": "filePath"}
SHELL_TOOLS = ("run_shell_command", "bash", "shell")


def handle(method: str, path: str, body: bytes, script: Script) -> Reply:
    """Answer one request under ``/v1/chat/completions``."""
    request = exchange.parse_post(method, exchange.route_of(path), body, ("/v1/chat/completions",), error_reply)
    return request if isinstance(request, Reply) else completions(request, script)


def completions(request: dict[str, Any], script: Script) -> Reply:
    """Answer ``POST /v1/chat/completions`` from the script."""
    tools = _tools_by_name(request)
    decision = decide(script, match_text=match_text(request), history_ids=history_ids(request), main_loop=bool(tools), sequential=True)
    refusal = exchange.scripted_error_reply(decision, error_reply)
    if refusal is not None:
        return refusal
    text, calls = _answer(decision, tools=tools, cwd=exchange.first_match(match_text(request), _CWD_PATTERNS, rstrip="."))
    model = str(request.get("model") or "scripted")
    ident, created = new_id("chatcmpl"), int(time.time())
    finish_reason = "tool_calls" if calls else "stop"
    usage = usage_dict(decision.usage)
    if not request.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        payload = {"id": ident, "object": "chat.completion", "created": created, "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}], "usage": usage}
        return exchange.json_reply(200, payload).timed(decision)

    def chunk(delta: dict[str, Any] | None, reason: str | None = None, **extra: Any) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": reason}]
        data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices, **extra}
        return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    events = [chunk({"role": "assistant", "content": ""})]
    if text:
        events += [chunk({"content": piece}) for piece in chunks(text)]
    for index, call in enumerate(calls):
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
        events.append(chunk({"tool_calls": [head]}))
        for piece in chunks(call["function"]["arguments"], 64):
            events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    events.append(chunk({}, finish_reason))
    events.append(chunk(None, usage=usage))
    events.append(b"data: [DONE]\n\n")
    return exchange.stream_reply(events).timed(decision)


def match_text(request: dict[str, Any]) -> str:
    """System/developer messages plus the text of every user message."""
    texts = []
    for message in request.get("messages") or []:
        if isinstance(message, dict) and message.get("role") in ("system", "developer", "user"):
            texts.append(exchange.text_of(message.get("content")))
    return "\n".join(texts)


def history_ids(request: dict[str, Any]) -> list[str]:
    """Tool-call ids of the assistant messages and ``tool_call_id`` of the tool messages."""
    ids: list[str] = []
    for message in request.get("messages") or []:
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("tool_call_id"), str):
            ids.append(message["tool_call_id"])
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                ids.append(call["id"])
    return ids


def usage_dict(usage: Usage) -> dict[str, Any]:
    """A Chat Completions ``usage`` object (see the module docstring)."""
    prompt = usage.prompt_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _tools_by_name(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for tool in request.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            found[function["name"]] = function
    return found


def _answer(decision: Decision, *, tools: dict[str, dict[str, Any]], cwd: str | None) -> tuple[str, list[dict[str, Any]]]:
    turn = decision.turn
    if turn is None:
        return decision.fallback_text, []
    text = turn.text if decision.first_response else ""
    k = decision.call_index or 0
    if k >= len(turn.tool_calls):
        return text, []
    name, args = _tool(turn.tool_calls[k], tools, cwd)
    call = {"id": new_id("call", decision.turn_index or 0, k), "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
    return text, [call]


def _tool(call: ToolCall, tools: dict[str, dict[str, Any]], cwd: str | None) -> tuple[str, dict[str, Any]]:
    if call.kind == "write":
        path = call.path
        if cwd and not posixpath.isabs(path):
            path = posixpath.join(cwd, path)
        name = next((n for n in WRITE_TOOLS if n in tools), "write_file")
        args: dict[str, Any] = {WRITE_TOOLS[name]: path, "content": call.content}
        if name not in tools and "apply_patch" in tools:  # opencode offers only this to gpt-* models
            name, args = "apply_patch", {"patchText": add_file_patch(call.path, call.content)}
    elif call.kind == "bash":
        name = next((n for n in SHELL_TOOLS if n in tools), "run_shell_command")
        args = {"command": call.command, "description": "Run a scripted command"}
        properties = (tools.get(name) or {}).get("parameters", {}).get("properties") or {}
        if properties and "description" not in properties:
            del args["description"]
    else:
        name, args = call.name, dict(call.input) if isinstance(call.input, dict) else {"input": call.input}
    return name, fill_required(args, (tools.get(name) or {}).get("parameters"))
