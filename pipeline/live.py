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
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(GROUP, {"type": "events.new", "task_id": task_id, "event_id": event_id})
    except Exception as exc:  # the table is the truth; a lost wake-up only delays a poll
        log.warning("live notify failed: %s", exc)


def notify_after_commit(task_id: int, event_id: int) -> None:
    if cross_process():
        transaction.on_commit(lambda: notify(task_id, event_id))
