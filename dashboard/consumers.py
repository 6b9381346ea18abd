"""The live stream over websockets: every AgentEvent after the client's cursor, in order, once.

``/ws/events/?after=N`` streams the events of all tasks (slim: id, task, kind; the task list
uses them as "this row changed"), ``/ws/tasks/<id>/events/?after=N`` those of one task in full,
with each event's transcript HTML rendered by the same template the page uses.

Persist first, then notify: the rows are the truth. A consumer reads the table after its
cursor whenever it is woken by a channel-layer message (``pipeline.live.GROUP``, sent by the
runner after it committed a batch, across processes when REDIS_URL is set) and, as a safety net
and the only mechanism without Redis, every ``LIVE_POLL_SECONDS``. Waking is only a hint, so a
dropped message or a reconnect (with ``after`` = the last id the client saw) loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from pipeline import live
from pipeline.models import AgentEvent, Task

from . import streams
from .api.serializers import EventOut

log = logging.getLogger(__name__)

# Close codes (4000-4999 are the application's): the page's JS does not reconnect on these.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_FOUND = 4404

BATCH = 200
MAX_CURSOR = 2**63 - 1


def poll_seconds() -> float:
    """How often the table is read without a wake-up: the only mechanism without Redis, a safety
    net with it."""
    tacx = settings.TACX
    if live.cross_process():
        return float(tacx.get("LIVE_SAFETY_POLL_SECONDS", 1.0))
    return float(tacx.get("LIVE_POLL_SECONDS", 0.25))


class EventStreamConsumer(AsyncJsonWebsocketConsumer):
    task_id: int | None = None
    cursor: int = 0

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await database_sync_to_async(user.has_perm)("pipeline.view_task"):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        try:
            self.cursor = parse_after(self.scope.get("query_string", b""))
        except ValueError:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        task_id = self.scope["url_route"]["kwargs"].get("task_id")
        if task_id is not None:
            self.task_id = int(task_id)
            if self.task_id > MAX_CURSOR or not await database_sync_to_async(Task.objects.filter(pk=self.task_id).exists)():
                await self.close(code=CLOSE_NOT_FOUND)
                return
        self.wake = asyncio.Event()
        if self.channel_layer is not None:
            await self.channel_layer.group_add(live.GROUP, self.channel_name)
        await self.accept()
        self.pump_task = asyncio.ensure_future(self.pump())

    async def disconnect(self, code: int) -> None:
        pump = getattr(self, "pump_task", None)
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        if self.channel_layer is not None and hasattr(self, "wake"):
            await self.channel_layer.group_discard(live.GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Clients only listen; a ping is answered so they can tell a dead connection."""
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "cursor": self.cursor})

    async def events_new(self, message: dict) -> None:
        """Channel-layer hint from ``pipeline.live.notify``: new rows were committed."""
        if self.task_id is None or message.get("task_id") == self.task_id:
            self.wake.set()

    async def pump(self) -> None:
        while True:
            self.wake.clear()  # before the read: a hint arriving during it is kept for the next
            try:
                page = await database_sync_to_async(self.read)()
            except Exception:  # the database may be away for a moment; the cursor is kept
                log.exception("live stream read failed (task %s after %s)", self.task_id, self.cursor)
                await asyncio.sleep(1.0)
                continue
            if page["events"]:
                self.cursor = page["cursor"]
                await self.send_json(page)
            if page["has_more"]:
                continue
            timeout = 0.05 if page["held_back"] else poll_seconds()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    def read(self) -> dict:
        queryset = AgentEvent.objects.all()
        if self.task_id is not None:
            queryset = queryset.select_related("result__stage")
        else:
            queryset = queryset.only("id", "task_id", "kind", "created_at")
        page = streams.events_after(after=self.cursor, task_id=self.task_id, limit=BATCH, queryset=queryset)
        if self.task_id is None:
            events = [{"id": e.pk, "task_id": e.task_id, "kind": e.kind} for e in page.events]
        else:
            events = []
            for event in page.events:
                item = EventOut(event).data
                item["html"] = render_to_string("dashboard/partials/event.html", {"event": event})
                events.append(item)
        return {
            "type": "events",
            "events": events,
            "cursor": page.last_id or self.cursor,
            "has_more": page.has_more,
            "held_back": page.held_back,
        }


class NoRouteConsumer(AsyncJsonWebsocketConsumer):
    """A websocket path that matches no route: refused with 4404 at the handshake."""

    async def connect(self) -> None:
        await self.close(code=CLOSE_NOT_FOUND)


def parse_after(query_string: bytes) -> int:
    """The cursor from ``?after=N`` (0 when absent); ValueError when it is not a whole number."""
    values = parse_qs(query_string.decode("latin-1")).get("after")
    if not values or values[-1] == "":
        return 0
    value = int(values[-1])
    if not 0 <= value <= MAX_CURSOR:
        raise ValueError(value)
    return value
