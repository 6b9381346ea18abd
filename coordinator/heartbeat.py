"""The coordinator's heartbeat: a `pipeline.models.Worker` row of kind `coordinator` whose
`heartbeat_at` the loop refreshes, so `/health` can tell whether a coordinator is alive."""

from __future__ import annotations

import os
import socket
import uuid

from django.db.models import Max
from django.utils import timezone

from pipeline.models import Worker


def heartbeat_start(*, host: str | None = None) -> Worker:
    host = host or socket.gethostname()
    return Worker.objects.create(
        kind=Worker.Kind.COORDINATOR, name=f"coordinator:{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}", host=host, pid=os.getpid()
    )


def heartbeat_beat(worker: Worker) -> None:
    now = timezone.now()
    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=now)
    worker.heartbeat_at = now


def heartbeat_stop(worker: Worker) -> None:
    Worker.objects.filter(pk=worker.pk).update(exited_at=timezone.now(), exit_code=0)


def coordinator_heartbeat_age(now=None) -> float | None:
    """Seconds since the freshest heartbeat of a running coordinator, or None when no
    coordinator is running (none started, or all exited cleanly). For `/health`."""
    latest = Worker.objects.filter(kind=Worker.Kind.COORDINATOR, exited_at__isnull=True).aggregate(at=Max("heartbeat_at"))["at"]
    if latest is None:
        return None
    return max(0.0, ((now or timezone.now()) - latest).total_seconds())
