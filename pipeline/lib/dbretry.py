"""A running stage's writes through a short database outage (a PostgreSQL restart, a failover,
a dropped connection): the agent keeps running, its events stay in memory, and the writes are
tried again on a fresh connection until the outage has lasted `TACX_DB_OUTAGE_SECONDS`.

Only writes that can be repeated safely go through here: a batch of events (one INSERT, or one
transaction), the lease renewal and heartbeats (conditional UPDATEs), and the attempt's final
record (one transaction, fenced by the lease owner).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)

DB_ERRORS = (OperationalError, InterfaceError)
T = TypeVar("T")


def outage_limit() -> float:
    return float(settings.TACX.get("DB_OUTAGE_SECONDS", 60.0))


def drop_connection() -> None:
    """Forget this thread's (broken) connection; the next query opens a new one."""
    if connection.in_atomic_block:
        return
    try:
        connection.close()
    except Exception:  # closing a dead connection may complain; it is gone either way
        connection.connection = None


class Outage:
    """How long the database has been unreachable for one attempt (None: it is not)."""

    def __init__(self, limit: float | None = None):
        self.limit = outage_limit() if limit is None else limit
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: Exception) -> bool:
        """Record a failed write; True while the outage is shorter than the limit (try again
        later), False once it is not."""
        drop_connection()
        now = time.monotonic()
        self.failures += 1
        if self.since is None:
            self.since = now
            log.warning("database unavailable (%s); the agent keeps running, writes are retried", str(exc).strip()[:200])
        return now - self.since < self.limit

    def succeeded(self) -> None:
        if self.since is not None:
            log.warning("database back after %.1f s (%d failed writes)", time.monotonic() - self.since, self.failures)
        self.since = None

    @property
    def seconds(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since


def retry(fn: Callable[[], T], *, what: str, limit: float | None = None) -> T:
    """`fn()`, called again on a fresh connection (waiting 0.5 s, 1 s, 2 s ... between tries)
    while the database is unreachable, for at most `limit` seconds; then the error is raised."""
    outage = Outage(limit)
    delay = 0.5
    while True:
        try:
            value = fn()
        except DB_ERRORS as exc:
            if connection.in_atomic_block or not outage.failed(exc):
                raise
            log.warning("%s: database unavailable; trying again in %.1f s", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        outage.succeeded()
        return value
