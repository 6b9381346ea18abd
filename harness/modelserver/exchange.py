"""API-neutral pieces of one request/answer exchange: turn ids, turn selection, the reply.

Turn counting is stateless so one server can serve many concurrent agent runs: every id the
server generates for a tool call carries the turn and the call's index in that turn
(``toolu_t3_0_ab12…``, ``call_t3_1_…``), the CLI sends those ids back in the conversation
history, and the turn of a new request is ``1 + the highest turn found in the history`` (0 when
the history has none).

Sequential mode (used for the OpenAI API): Codex runs all function calls of one response
concurrently (seen: a scripted ``git add`` raced the file write scripted before it), so there a
turn's tool calls are handed out one per response, in order. A request whose history ends in
call ``k`` of turn ``t`` (of ``n`` calls) gets call ``k + 1`` of turn ``t`` while ``k + 1 < n``,
else turn ``t + 1``. The turn's text, usage, delay, status and hang belong to its first response.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .script import ZERO_USAGE, Conversation, Script, Turn, Usage

_TURN_ID = re.compile(r"^[a-z]+_t(\d+)_(\d+)_")

# The answer to a request that no scripted turn covers (auxiliary, overrun or unmatched).
OVERRUN_TEXT = "Done."
AUXILIARY_TEXT = "OK"


def new_id(prefix: str, turn: int | None = None, index: int = 0) -> str:
    """A unique id; with ``turn`` it also encodes the turn (``prefix_t{turn}_{index}_{hex}``)."""
    if turn is None:
        return f"{prefix}_{uuid.uuid4().hex}"
    return f"{prefix}_t{turn}_{index}_{uuid.uuid4().hex[:20]}"


def position_of_id(value: object) -> tuple[int, int] | None:
    """``(turn, call index)`` encoded in an id made by :func:`new_id`, else ``None``."""
    if not isinstance(value, str):
        return None
    found = _TURN_ID.match(value)
    return (int(found.group(1)), int(found.group(2))) if found else None


def last_position(ids: Iterable[object]) -> tuple[int, int] | None:
    """The highest ``(turn, call index)`` encoded in ``ids``, or ``None`` if none carries one."""
    positions = [p for p in map(position_of_id, ids) if p is not None]
    return max(positions) if positions else None


@dataclass(frozen=True)
class Decision:
    """Which scripted turn answers a request.

    ``turn`` is ``None`` when no scripted turn applies; the API module then answers a short
    final text with zero usage (``auxiliary``, ``overrun``, or no conversation matched).
    """

    conversation: str | None
    turn_index: int | None
    turn: Turn | None
    auxiliary: bool = False
    overrun: bool = False
    # Sequential mode: the one tool call to send (None = all of them, with text and usage).
    call_index: int | None = None

    @property
    def first_response(self) -> bool:
        """Whether this answer opens its turn (carries text, usage, delay, status, hang)."""
        return not self.call_index

    @property
    def usage(self) -> Usage:
        return self.turn.usage if self.turn and self.first_response else ZERO_USAGE

    @property
    def fallback_text(self) -> str:
        return AUXILIARY_TEXT if self.auxiliary else OVERRUN_TEXT



# A request that is no scripted turn (start-up probes, title calls, helper endpoints).
AUXILIARY = Decision(conversation=None, turn_index=None, turn=None, auxiliary=True)


def json_object(body: bytes) -> dict[str, Any] | str:
    """The request body as a JSON object, or a sentence saying why it is not one (the API
    module turns it into a 400 in its own error shape)."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return "Request body is not valid JSON"
    if not isinstance(request, dict):
        return "Request body must be a JSON object"
    return request


def route_of(path: str) -> str:
    """A request path without its query string and trailing slash."""
    return path.split("?", 1)[0].rstrip("/")


def parse_post(method: str, route: str, body: bytes, routes: Iterable[str], error_reply: Callable[[int, str], Reply]) -> dict[str, Any] | Reply:
    """The JSON object a ``POST`` to one of ``routes`` carries, or the API's error reply: 404
    for another method or route, 400 for a body that is not a JSON object."""
    if method != "POST" or route not in routes:
        return error_reply(404, f"Not found: {method} {route}")
    request = json_object(body)
    return error_reply(400, request) if isinstance(request, str) else request


def scripted_error_reply(
    decision: Decision, error_reply: Callable[[int, str], Reply], default_message: Callable[[int], str] = lambda status: f"Scripted error {status}"
) -> Reply | None:
    """The API's error reply when the turn scripts an HTTP error status for this response (only
    the response that opens the turn carries it), else ``None``."""
    turn = decision.turn
    if turn is None or turn.status is None or not decision.first_response:
        return None
    return error_reply(turn.status, turn.error_message or default_message(turn.status)).timed(decision)


def first_match(text: str, patterns: Iterable[re.Pattern[str]], *, rstrip: str = "") -> str | None:
    """Group 1 of the first of ``patterns`` found in ``text``, stripped of white space (and of
    trailing ``rstrip`` characters), or ``None``: an agent's cwd as its prompt states it."""
    for pattern in patterns:
        found = pattern.search(text)
        if found:
            return found.group(1).strip().rstrip(rstrip)
    return None


def text_of(content: Any) -> str:
    """A message's text: the string itself, or the ``text`` of each part of a list, one a line."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def decide(
    script: Script,
    *,
    match_text: str,
    history_ids: Iterable[object],
    main_loop: bool,
    sequential: bool = False,
) -> Decision:
    """Pick the conversation and turn (and, if ``sequential``, the call) for one request.

    A request that does not look like an agent's main loop (``main_loop`` false: Claude Code's
    session-title call has no tools) is auxiliary even when it matches a conversation (the title
    call quotes the user prompt, so it would): it must not consume or replay a scripted turn,
    so it gets a short text with zero usage and token totals stay exactly what the script says.
    """
    if not main_loop:
        return AUXILIARY
    conversation: Conversation | None = script.select(match_text)
    if conversation is None:
        return Decision(conversation=None, turn_index=None, turn=None, overrun=True)
    last = last_position(history_ids)
    index, call = (0, 0) if last is None else (last[0] + 1, 0)
    if sequential and last is not None:
        previous = conversation.turn(last[0])
        if previous is not None and last[1] + 1 < len(previous.tool_calls):
            index, call = last[0], last[1] + 1
    turn = conversation.turn(index)
    return Decision(
        conversation=conversation.name,
        turn_index=index,
        turn=turn,
        overrun=turn is None,
        call_index=call if sequential else None,
    )


@dataclass
class Reply:
    """What the HTTP layer sends: a JSON body or a list of SSE events, plus timing.

    ``events`` set means a streamed (``text/event-stream``) answer. ``delay`` is waited before
    the answer starts, ``stream_delay`` between events; ``hang`` means never answer.
    """

    status: int
    body: bytes = b""
    events: list[bytes] | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    decision: Decision | None = None
    delay: float = 0.0
    stream_delay: float = 0.0
    hang: bool = False

    def timed(self, decision: Decision) -> Reply:
        """Copy the turn's ``delay``/``stream_delay``/``hang`` onto this reply; returns self."""
        self.decision = decision
        turn = decision.turn
        if turn is not None and decision.first_response:
            self.delay, self.stream_delay, self.hang = (
                turn.delay,
                turn.stream_delay,
                turn.hang,
            )
        return self


def json_reply(status: int, payload: dict[str, Any]) -> Reply:
    """A JSON answer."""
    return Reply(status=status, body=json.dumps(payload).encode())


def auxiliary_reply(payload: dict[str, Any]) -> Reply:
    """A JSON 200 that answers no scripted turn (model lists, token counts)."""
    reply = json_reply(200, payload)
    reply.decision = AUXILIARY
    return reply


def answer(payload: dict[str, Any], *, stream: bool, events: Callable[[dict[str, Any]], list[bytes]]) -> Reply:
    """``payload`` as one JSON body, or, for a streaming request, as the SSE ``events`` it
    becomes."""
    if stream:
        return stream_reply(events(payload))
    return json_reply(200, payload)


def stream_reply(events: list[bytes]) -> Reply:
    """A streamed (``text/event-stream``) 200."""
    return Reply(status=200, events=events, content_type="text/event-stream")


def sse_event(name: str, data: dict) -> bytes:
    """One server-sent event with a JSON payload."""
    return (
        f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
    )


def chunks(text: str, size: int = 24) -> list[str]:
    """Split text into streaming deltas (at least one, possibly empty)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


_EMPTY = {"string": "", "boolean": False, "integer": 0, "number": 0, "array": [], "object": {}}


def fill_required(args: dict[str, Any], schema: Any) -> dict[str, Any]:
    """``args`` plus an empty value (by declared type) for each required parameter of the JSON
    ``schema`` it lacks: a CLI rejects a call missing one (e.g. Qwen Code's ``is_background``),
    and the script only says what matters."""
    if not isinstance(schema, dict):
        return args
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    filled = dict(args)
    for name in schema.get("required") or []:
        if isinstance(name, str) and name not in filled:
            kind = (properties.get(name) or {}).get("type")
            kind = str(kind).lower() if not isinstance(kind, list) else str(kind[0]).lower()
            filled[name] = _EMPTY.get(kind, "")
    return filled
