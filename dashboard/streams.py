"""Read the event stream after a cursor, in id order, without skipping an event committed late.

Event ids come from a sequence that is handed out when a row is inserted, not when its
transaction commits. On PostgreSQL two writers can therefore commit out of order: the runner of
one task inserts id 101 and commits, while the runner of another task still holds id 100
uncommitted. A reader that saw 101 and moved its cursor past it would never see 100.

So a read looks for a *fresh* hole in the ids it is about to return: a missing id whose next
existing row is younger than ``hole_wait_seconds`` (older holes are rolled-back inserts or deleted
tasks). For a fresh hole it asks the database whether any other transaction is still writing the
events table: if none is, every id handed out so far is committed or gone for good, and the read
goes ahead after a re-read; otherwise it stops in front of the hole and the caller asks again
shortly (until the hole is no longer fresh). SQLite serialises writers (one write lock from BEGIN
to COMMIT), so there ids follow commit order and a hole is always final.

Used by the websocket consumer and by the REST events endpoint, so both keep the promise
"everything after the last id you saw, in order, once".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from pipeline.models import AgentEvent

DEFAULT_LIMIT = 500
_SCAN_CHUNK = 1000
_FIRST_CHUNK = 16


def hole_wait_seconds() -> float:
    # Runner batches build their rows up to ~1 s before inserting them (created_at is set when the
    # row object is built), so the wait must stay well above that lag.
    return float(settings.TACX.get("LIVE_HOLE_WAIT_SECONDS", 3.0))


@dataclass
class Page:
    events: list[AgentEvent] = field(default_factory=list)
    held_back: bool = False  # a fresh hole stopped the read: ask again soon
    has_more: bool = False  # the limit was reached: ask again at once

    @property
    def last_id(self) -> int | None:
        return self.events[-1].pk if self.events else None


def events_after(
    *,
    after: int,
    task_id: int | None = None,
    limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
    queryset: QuerySet[AgentEvent] | None = None,
) -> Page:
    """The events with id > ``after`` (of one task, or of all), oldest first, at most ``limit``,
    stopping in front of the first fresh hole in the id sequence."""
    qs = queryset if queryset is not None else AgentEvent.objects.all()
    qs = qs.filter(id__gt=after).order_by("id")
    if task_id is not None:
        qs = qs.filter(task_id=task_id)
    rows = list(qs[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return Page()
    upto = rows[-1].pk
    cap = _first_fresh_hole(after=after, upto=upto, now=now or timezone.now())
    if cap is None:
        return Page(events=rows, has_more=has_more)
    if _no_other_writers():
        # Every id up to `upto` was handed out before this check, so it is committed or gone for
        # good; read again to pick up the ones that committed since the first read.
        again = list(qs.filter(id__lte=upto)[:limit])
        return Page(events=again, has_more=True)
    return Page(events=[r for r in rows if r.pk < cap], held_back=True)


def _no_other_writers() -> bool:
    """True when no other transaction can still commit an event id handed out before now."""
    if connection.vendor == "sqlite":
        return True
    if connection.vendor != "postgresql":
        return False
    # An INSERT holds RowExclusiveLock on the table until its transaction ends, and takes it
    # before it draws an id from the sequence (pg_locks lists fast-path locks too).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_locks WHERE relation = %s::regclass AND mode = 'RowExclusiveLock'"
            " AND granted AND pid <> pg_backend_pid() LIMIT 1",
            [AgentEvent._meta.db_table],
        )
        return cursor.fetchone() is None


def _first_fresh_hole(*, after: int, upto: int, now: datetime) -> int | None:
    """The lowest missing id in (after, upto] that a transaction may still commit, or None.

    Only the young end of the range can hold such a hole, so the ids are scanned from ``upto``
    downwards (a primary-key range scan) until the first row older than the wait: holes below
    that row are settled.
    """
    cutoff = now - timedelta(seconds=hole_wait_seconds())
    young: list[int] = []
    floor = after
    high = upto
    # A first chunk of a few rows: usually the newest event is already older than the wait (a
    # page load then read 1,000 rows it did not need: issue 23); larger chunks after it.
    size = _FIRST_CHUNK
    while True:
        chunk = list(AgentEvent.objects.filter(id__gt=after, id__lte=high).order_by("-id").values_list("id", "created_at")[:size])
        for event_id, created_at in chunk:
            if created_at <= cutoff:
                floor = event_id
                break
            young.append(event_id)
        else:
            if len(chunk) == size:
                high = chunk[-1][0] - 1
                size = _SCAN_CHUNK
                continue
        break
    expected = floor + 1
    for event_id in reversed(young):
        if event_id != expected:
            return expected
        expected += 1
    return None


def latest_id(*, task_id: int | None = None) -> int:
    """The id a page can start its live stream after (0 when there is no event yet)."""
    qs = AgentEvent.objects.all()
    if task_id is not None:
        qs = qs.filter(task_id=task_id)
    return qs.order_by("-id").values_list("id", flat=True).first() or 0


def safe_latest_id(*, task_id: int | None = None) -> int:
    """The cursor a page hands its live stream: the newest event id, lowered in front of a fresh
    hole, so the rows the page renders now plus the stream after the cursor miss nothing."""
    latest = latest_id(task_id=task_id)
    if not latest:
        return 0
    cap = _first_fresh_hole(after=0, upto=latest, now=timezone.now())
    if cap is None or _no_other_writers():
        return latest
    return cap - 1
