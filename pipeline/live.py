"""Wake live clients after events are committed (persist first, then notify).

A notification carries only ids: consumers read the rows after their cursor, so a dropped
message or a reconnect loses nothing. Without a cross-process channel layer (no REDIS_URL)
there is nobody in another process to wake, and consumers poll the table instead.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

GROUP = "tacx-events"


def cross_process() -> bool:
    return bool(getattr(settings, "REDIS_URL", ""))


def notify(task_id: int, event_id: int) -> None:
    if not cross_process():
        return
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

        # A layer of our own for this send: the shared instance may be serving consumers in
        # this process, and its pools must not be closed under them.
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)

        async def send() -> None:
            await layer.group_send(GROUP, {"type": "events.new", "task_id": task_id, "event_id": event_id})
            # From sync code every async_to_sync call runs on a new event loop; channels_redis
            # pools are tied to a loop, so close them here or they leak (channels_redis #332).
            close = getattr(layer, "close_pools", None)
            if close is not None:
                await close()

        async_to_sync(send)()
    except Exception as exc:  # the table is the truth; a lost wake-up only delays a poll
        log.warning("live notify failed: %s", exc)


def notify_after_commit(task_id: int, event_id: int) -> None:
    if cross_process():
        transaction.on_commit(lambda: notify(task_id, event_id))
