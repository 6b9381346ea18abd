"""Wake live clients after events are committed (persist first, then notify).

A notification carries only ids: consumers read the rows after their cursor, so a dropped
message or a reconnect loses nothing. Without a cross-process channel layer (no REDIS_URL)
there is nobody in another process to wake, and consumers poll the table instead.

Each process sends through one channel layer of its own, kept on one event loop in a daemon
thread (`Sender`): one Redis connection per process, reused for every notification, instead of a
new layer, loop and connection per line. (The shared layer instance may be serving consumers in
this process on another loop; channels_redis pools are tied to their loop.) Sending does not
wait for Redis: a lost wake-up only delays a poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

GROUP = "tacx-events"


def cross_process() -> bool:
    return bool(getattr(settings, "REDIS_URL", ""))


class Sender:
    """One channel layer on one event loop in a daemon thread, for this process. Notifications
    go out one after another (concurrent sends would each take a pooled connection); those
    waiting for one task are merged into the newest (the consumer reads every row after its
    cursor anyway)."""

    def __init__(self) -> None:
        from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

        self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self.queue: asyncio.Queue | None = None
        self.drainer: asyncio.Task | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="tacx-live-notify", daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        self.drainer = self.loop.create_task(self._drain())
        ready.set()
        self.loop.run_forever()
        self.loop.close()

    async def _drain(self) -> None:
        assert self.queue is not None
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            newest: dict[int, dict] = {}
            for message in batch:
                if message["event_id"] >= newest.get(message["task_id"], {"event_id": -1})["event_id"]:
                    newest[message["task_id"]] = message
            for message in newest.values():
                try:
                    await self.layer.group_send(GROUP, message)
                except Exception as exc:  # the table is the truth; a lost wake-up only delays a poll
                    log.warning("live notify failed: %s", exc)
            for _ in batch:
                self.queue.task_done()

    def send(self, message: dict) -> None:
        assert self.queue is not None
        self.loop.call_soon_threadsafe(self.queue.put_nowait, message)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was sent so far has gone out (tests, shutdown)."""
        assert self.queue is not None
        asyncio.run_coroutine_threadsafe(self.queue.join(), self.loop).result(timeout)

    async def _stop_draining(self) -> None:
        if self.drainer is not None:
            self.drainer.cancel()
            try:
                await self.drainer
            except asyncio.CancelledError:
                pass

    def close(self) -> None:
        """Close the layer's pools, end the drain task and the loop (a task left pending on a
        stopped loop is destroyed later, at garbage collection, with a traceback)."""
        for step in (getattr(self.layer, "close_pools", None), self._stop_draining):
            if step is None:
                continue
            try:
                asyncio.run_coroutine_threadsafe(step(), self.loop).result(5)
            except Exception:
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


_sender: Sender | None = None
_sender_lock = threading.Lock()


def sender() -> Sender:
    """This process's sender (a forked child, e.g. a django-q2 worker, makes its own)."""
    global _sender
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid():
            _sender = Sender()
        return _sender


def notify(task_id: int, event_id: int) -> None:
    if not cross_process():
        return
    try:
        sender().send({"type": "events.new", "task_id": task_id, "event_id": event_id})
    except Exception as exc:  # the table is the truth; a lost wake-up only delays a poll
        log.warning("live notify failed: %s", exc)


def notify_after_commit(task_id: int, event_id: int) -> None:
    if cross_process():
        transaction.on_commit(lambda: notify(task_id, event_id))
