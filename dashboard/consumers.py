"""The live stream over websockets: every AgentEvent after the client's cursor, in order, once.

``/ws/events/?after=N`` streams the events of all tasks (slim: id, task, kind; the task list
uses them as "this row changed"), ``/ws/tasks/<id>/events/?after=N`` those of one task in full,
with each event's transcript HTML rendered by the same template the page uses.

Persist first, then notify: the rows are the truth. A consumer reads the table after its
cursor whenever it is woken by a channel-layer message (``pipeline.live.GROUP``, sent by the
runner after it committed a batch, across processes when REDIS_URL is set) or by the process's
one `LatestIdWatcher`, which reads the newest event id every ``LIVE_POLL_SECONDS`` (the only
mechanism without Redis, a safety net with it). Waking is only a hint, so a dropped message or
a reconnect (with ``after`` = the last id the client saw) loses nothing. An idle socket costs
no query; a user may hold at most TACX_WS_MAX_PER_USER sockets per process (4429 beyond).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import weakref
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
CLOSE_TOO_MANY = 4429

BATCH = 200
MAX_CURSOR = 2**63 - 1


# An idle socket waits on its wake event; this is only a last resort should every hint be lost.
IDLE_SAFETY_SECONDS = 30.0


def max_sockets_per_user() -> int:
    return int(settings.TACX.get("WS_MAX_PER_USER", 20))


def poll_seconds() -> float:
    """How often the table is read without a wake-up: the only mechanism without Redis, a safety
    net with it."""
    tacx = settings.TACX
    if live.cross_process():
        return float(tacx.get("LIVE_SAFETY_POLL_SECONDS", 1.0))
    return float(tacx.get("LIVE_POLL_SECONDS", 0.25))


class LatestIdWatcher:
    """One reader of the newest event id per process (event loop), however many sockets are
    open: it polls `streams.latest_id` every `poll_seconds()` while anyone listens and wakes
    every socket when the id grows. So an idle socket costs no query at all; before, each one
    read the table four times a second (50 idle sockets: a fifth of a core)."""

    def __init__(self) -> None:
        self.listeners: set[asyncio.Event] = set()
        self.latest: int | None = None
        self.polls = 0
        self._task: asyncio.Task | None = None

    def subscribe(self, wake: asyncio.Event) -> None:
        self.listeners.add(wake)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.run())

    def unsubscribe(self, wake: asyncio.Event) -> None:
        self.listeners.discard(wake)

    async def run(self) -> None:
        while self.listeners:
            try:
                latest = await database_sync_to_async(streams.latest_id)()
            except Exception:  # the database may be away for a moment
                log.exception("live stream: reading the newest event id failed")
                await asyncio.sleep(1.0)
                continue
            self.polls += 1
            if latest != self.latest:
                self.latest = latest
                for wake in list(self.listeners):
                    wake.set()
            await asyncio.sleep(poll_seconds())


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LatestIdWatcher] = weakref.WeakKeyDictionary()
# Open sockets per user id, in this process (asyncio: one thread, no lock needed).
_sockets_per_user: collections.Counter[int] = collections.Counter()


def watcher() -> LatestIdWatcher:
    loop = asyncio.get_running_loop()
    if loop not in _watchers:
        _watchers[loop] = LatestIdWatcher()
    return _watchers[loop]


class EventStreamConsumer(AsyncJsonWebsocketConsumer):
    task_id: int | None = None
    cursor: int = 0
    counted_user: int | None = None

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
        if _sockets_per_user[user.pk] >= max_sockets_per_user():
            await self.close(code=CLOSE_TOO_MANY)
            return
        _sockets_per_user[user.pk] += 1
        self.counted_user = user.pk
        self.wake = asyncio.Event()
        if self.channel_layer is not None:
            await self.channel_layer.group_add(live.GROUP, self.channel_name)
        await self.accept()
        watcher().subscribe(self.wake)
        self.pump_task = asyncio.ensure_future(self.pump())

    async def disconnect(self, code: int) -> None:
        if self.counted_user is not None:
            _sockets_per_user[self.counted_user] -= 1
            if _sockets_per_user[self.counted_user] <= 0:
                del _sockets_per_user[self.counted_user]
            self.counted_user = None
        if hasattr(self, "wake"):
            watcher().unsubscribe(self.wake)
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
            # Held back behind a fresh hole: look again shortly. Otherwise sleep until woken
            # (the watcher, or a channel-layer hint); the long timeout is only a safety net.
            timeout = 0.05 if page["held_back"] else IDLE_SAFETY_SECONDS
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    def read(self) -> dict:
        queryset = AgentEvent.objects.all()
        if self.task_id is not None:
            queryset = queryset.select_related("result__stage", "task")
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
