"""Stage slots: how many stages the live django-q2 clusters of every machine can run at once.

A slot is one attempt, not one process. A machine's stage host (pipeline.stage_host) runs up to
`host_attempts()` attempts at once: it records one Worker row of kind `slot` with that number in
`slots`. In the previous model (`TACX_STAGE_HOST_ATTEMPTS=0`) each q2 worker process runs one
attempt: when q2 spawns a worker (`post_spawn`, in the worker process) it records a row of one
slot. A daemon thread renews the row's heartbeat every SLOT_HEARTBEAT_SECONDS (closing its database connection in between: an idle slot holds none). With
 A slot whose heartbeat is older than three periods is gone
(a stopped or killed cluster, a lost machine). The dispatcher admits no more running tasks than
there are live slots (`live_slots`), so a started task's next stage finds a free worker instead
of queueing behind new tasks' first stages.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.db.models.functions import Now
from django.utils import timezone

from .models import Worker

log = logging.getLogger(__name__)


def host_attempts() -> int:
    """Attempts this machine's stage host runs at once (0: the previous model, where each q2
    worker process runs one attempt in its job)."""
    return int(settings.TACX.get("STAGE_HOST_ATTEMPTS", 0))


def heartbeat_seconds() -> float:
    return float(settings.TACX.get("SLOT_HEARTBEAT_SECONDS", 15.0))


def live_slots(*, now=None) -> int:
    """Live stage slots across every machine (0 when no cluster has reported one)."""
    since = (now or timezone.now()) - timedelta(seconds=3 * heartbeat_seconds())
    live = Worker.objects.filter(kind=Worker.Kind.SLOT, exited_at__isnull=True, heartbeat_at__gte=since)
    return live.aggregate(n=Sum("slots"))["n"] or 0


def busy_agents() -> int:
    """Agent CLI processes running now, each in one slot (their Worker rows of kind `agent`)."""
    return Worker.objects.filter(kind=Worker.Kind.AGENT, exited_at__isnull=True).count()


def counts() -> dict[str, int]:
    """What `/health` and the workers page both report: the live stage slots (the number
    admission limits running tasks to) and how many of them run an agent now."""
    return {"live": live_slots(), "busy": busy_agents()}


class SlotHeartbeat:
    def __init__(self, name: str, *, count: int = 1):
        self.name = name
        self.stopped = threading.Event()
        self.worker = Worker.objects.create(
            kind=Worker.Kind.SLOT, name=name, host=socket.gethostname(), pid=os.getpid(), slots=max(1, count)
        )
        connection.close()
        self.thread = threading.Thread(target=self._run, name=f"tacx-slot-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(heartbeat_seconds()):
            try:
                Worker.objects.filter(pk=self.worker.pk).update(heartbeat_at=Now())
            except Exception as exc:  # the database may be away for a moment; beat again later
                log.warning("slot heartbeat failed: %s", exc)
            finally:
                connection.close()

    def stop(self) -> None:
        self.stopped.set()
        Worker.objects.filter(pk=self.worker.pk).update(exited_at=Now())


_beat: SlotHeartbeat | None = None


def on_post_spawn(sender=None, proc_name: str = "", **kwargs) -> None:
    """django-q2's `post_spawn`, in a new worker process: in the previous model this process is
    one stage slot (with a stage host, the host records the slots and q2 workers only hand on)."""
    global _beat
    if host_attempts() > 0 and os.environ.get("TACX_STAGE_HOST_SOCKET"):
        return
    try:
        _beat = SlotHeartbeat(f"{socket.gethostname()}:{os.getpid()}:{proc_name}")
    except Exception as exc:  # never keep a worker from starting
        log.warning("could not record the stage slot of %s: %s", proc_name, exc)
