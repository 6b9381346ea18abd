"""``/health``: is the stack able to make progress? Database reachable, queue readable, a
coordinator heartbeat recent enough. Counts and ages only: nothing secret (no names, hosts, paths
or settings)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.utils import timezone

from pipeline import sandbox, slots
from pipeline.models import Repository, Worker

log = logging.getLogger(__name__)


def coordinator_max_age() -> float:
    """A coordinator whose newest heartbeat is older than this is taken for dead (the same limit
    as the heartbeat_stale alert and the workers metric)."""
    return float(settings.TACX.get("HEARTBEAT_STALE_SECONDS") or 120.0)


@dataclass
class Health:
    database: bool
    queue_ok: bool
    queue_depth: int | None
    coordinator_age: float | None
    # pipeline.slots.counts(): live stage slots (what admission counts) and busy ones.
    workers: dict | None
    sandbox_mode: str = "required"
    sandbox_ok: bool = True
    sources: dict | None = None

    @property
    def coordinator_ok(self) -> bool:
        return self.coordinator_age is not None and self.coordinator_age <= coordinator_max_age()

    @property
    def healthy(self) -> bool:
        # An agent sandbox that is required but cannot be set up means no stage can run.
        return self.database and self.queue_ok and self.coordinator_ok and self.sandbox_ok

    def as_json(self) -> dict:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "database": {"ok": self.database},
            "queue": {"ok": self.queue_ok, "depth": self.queue_depth},
            "coordinator": {
                "ok": self.coordinator_ok,
                "heartbeat_age_seconds": None if self.coordinator_age is None else round(self.coordinator_age, 1),
                "max_age_seconds": coordinator_max_age(),
            },
            "workers": self.workers if self.workers is not None else {"live": None, "busy": None},
            "sandbox": {"mode": self.sandbox_mode, "ok": self.sandbox_ok},
            "sources": self.sources or {},
        }


def health_check() -> Health:
    database = _database_ok()
    queue_ok, depth = _queue_depth() if database else (False, None)
    age = workers = sources = None
    if database:
        try:
            newest = (
                # A coordinator that exited cleanly says so (exited_at); only running ones count.
                Worker.objects.filter(kind=Worker.Kind.COORDINATOR, exited_at__isnull=True)
                .order_by("-heartbeat_at")
                .values_list("heartbeat_at", flat=True)
                .first()
            )
            age = (timezone.now() - newest).total_seconds() if newest else None
            workers = slots.counts()
            sources = source_polls()
        except Exception as exc:  # noqa: BLE001 - a health check reports; it never raises
            log.warning("health: worker query failed: %s", exc)
    box = sandbox.status()
    return Health(
        database=database,
        queue_ok=queue_ok,
        queue_depth=depth,
        coordinator_age=age,
        workers=workers,
        sandbox_mode=box["mode"],
        sandbox_ok=box["ok"],
        sources=sources,
    )


def source_polls() -> dict:
    """Per issue source (tracker kind: github, gitlab, linear, jira) of the enabled
    repositories: how many, the age of the newest and of the oldest successful poll, and how
    many were never polled successfully. Kinds and ages only (no repository names)."""
    now = timezone.now()
    found: dict[str, dict] = {}
    for kind, tracker_kind, succeeded in (
        Repository.objects.filter(enabled=True)
        .exclude(kind=Repository.Kind.LOCAL)
        .values_list("kind", "tracker_kind", "poll_succeeded_at")
    ):
        entry = found.setdefault(tracker_kind or kind, {"repositories": 0, "never_polled": 0, "ages": []})
        entry["repositories"] += 1
        if succeeded is None:
            entry["never_polled"] += 1
        else:
            entry["ages"].append((now - succeeded).total_seconds())
    return {
        kind: {
            "repositories": e["repositories"],
            "never_polled": e["never_polled"],
            "last_success_age_seconds": round(min(e["ages"]), 1) if e["ages"] else None,
            "oldest_success_age_seconds": round(max(e["ages"]), 1) if e["ages"] else None,
        }
        for kind, e in sorted(found.items())
    }


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        log.warning("health: database unreachable: %s", type(exc).__name__)
        return False


def _queue_depth() -> tuple[bool, int | None]:
    """Tasks waiting in django-q2's broker (the ORM queue table with the default settings)."""
    try:
        from django_q.brokers import get_broker

        return True, int(get_broker().queue_size())
    except Exception as exc:  # noqa: BLE001 - a broker may fail in its own ways
        log.warning("health: queue unreadable: %s", type(exc).__name__)
        return False, None
