"""The attempt's recorder: event batches, token totals, lease renewal and riding out a database outage."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now

from .. import budgets, live, sandbox
from ..agent_process import StopAgent
from ..lib import dbretry
from ..lib.redaction import redact_data
from ..models import AgentEvent, Stage, StageResult, Task, Worker
from ..providers.base import Event, StreamParser

# Above this many events per second a stage's stream is busy: its events are stored every
# EVENT_BATCH_BUSY_SECONDS instead of every EVENT_BATCH_SECONDS.
BUSY_LINES_PER_SECOND = 20


def lease_expiry():
    """Lease deadlines use the database clock, so hosts with skewed clocks agree."""
    return ExpressionWrapper(Now() + timedelta(seconds=settings.TACX["LEASE_SECONDS"]), output_field=DateTimeField())



@dataclass
class EventRecorder:
    """What one attempt writes while it runs: its events in batches (longer ones while the stream
    is busy), the token totals, the lease and heartbeat once per heartbeat, and the switch that
    rides out a database outage (and stops the agent when the outage lasts too long). The agent
    loop calls `on_start`, `on_events`, `on_idle` and `on_tick`; the attempt's own commands
    call `append_event` and `flush_events`."""

    task: Task
    stage: Stage
    result: StageResult
    worker: Worker
    owner: str
    # The sandbox of the running agent, whose refused connections become ``sandbox`` events.
    box: sandbox.Box | None = None
    # Set by the agent step: the agent's stream parser (its usage totals) and budget meter.
    parser: StreamParser | None = None
    meter: budgets.Meter | None = None
    # Called once when a budget that pauses stops the agent, before it is killed (the agent step
    # records the pause there: attempt.agent.begin_pause).
    on_budget_pause: Callable[[budgets.Reached], None] | None = None
    _pending: list[AgentEvent] = field(default_factory=list)
    _seq: int = 0
    _last_flush: float = 0.0
    _last_renew: float = 0.0
    _last_write: float = 0.0
    _totals_written: tuple = ()
    _outage: dbretry.Outage | None = None
    _busy: bool = False
    _rate_since: float = 0.0
    _rate_lines: int = 0

    def agent_started(self) -> None:
        """The agent is about to run: the lease counts as renewed now, and the token totals as
        written."""
        self._last_renew = time.monotonic()
        r = self.result
        self._totals_written = (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.cost_usd)

    def collect_blocked(self) -> None:
        """Connections the sandbox refused since the last look, as ``sandbox`` events."""
        if self.box is None:
            return
        for entry in self.box.new_violations():
            self.append_event(AgentEvent.Kind.SANDBOX, entry)

    def on_start(self, pgid: int) -> None:
        Worker.objects.filter(pk=self.worker.pk).update(pgid=pgid)

    def append_event(self, kind: str, data: dict) -> None:
        """One event of TAC-X's own about this attempt, stored with the agent's next batch."""
        self._seq += 1
        self._pending.append(AgentEvent(task=self.task, result=self.result, seq=self._seq, kind=kind, data=redact_data(data)))

    def on_events(self, events: list[Event]) -> StopAgent | None:
        # How busy the stream is, per second: a busy one is batched longer (fewer writes per
        # line), a quiet one shortly (live clients see each line within tens of ms).
        now = time.monotonic()
        self._rate_lines += len(events)
        if now - self._rate_since >= 1.0:
            self._busy = self._rate_lines / (now - self._rate_since) >= BUSY_LINES_PER_SECOND
            self._rate_since, self._rate_lines = now, 0
        for event in events:
            self._seq += 1
            self._pending.append(
                AgentEvent(task=self.task, result=self.result, seq=self._seq, kind=_kind(event.kind), data=redact_data(event.data))
            )
            if event.kind == "usage" and (stop := self.meter.check(self.parser.usage)) is not None:
                if self.meter.reached is not None and self.meter.reached.pauses and self.on_budget_pause is not None:
                    self._budget_pause(self.meter.reached)
                return stop
        self.flush_events(due_only=True)
        return self.database_stop()

    def _budget_pause(self, reached: budgets.Reached) -> None:
        """Record the pause the moment the meter stops the agent, so a worker that dies while the
        agent is being killed leaves it for the reaper. One try: while the database is away the
        agent must still be stopped at once; the agent step records it after the kill instead."""
        callback, self.on_budget_pause = self.on_budget_pause, None
        try:
            callback(reached)
        except dbretry.DB_ERRORS as exc:
            self._db_failed(exc)

    def on_idle(self) -> float | None:
        """The agent went quiet: store what is due; returns when the rest will be due."""
        return self.flush_events(due_only=True)

    def on_tick(self) -> StopAgent | None:
        self.collect_blocked()
        self.flush_events()
        now = time.monotonic()
        if now - self._last_renew >= settings.TACX["HEARTBEAT_SECONDS"]:
            # Lease, heartbeat and the task's status, once per heartbeat (a cancel is noticed
            # within one): two statements when all is well.
            try:
                renewed = Stage.objects.filter(
                    pk=self.stage.pk, lease_owner=self.owner, status=Stage.Status.RUNNING, task__status=Task.Status.RUNNING
                ).update(lease_expires_at=lease_expiry(), heartbeat_at=Now())
                Worker.objects.filter(pk=self.worker.pk).update(heartbeat_at=Now())
                if not renewed:
                    if Stage.objects.filter(pk=self.stage.pk, lease_owner=self.owner, status=Stage.Status.RUNNING).exists():
                        status = Task.objects.filter(pk=self.task.pk).values_list("status", flat=True).first()
                        return StopAgent(StageResult.Outcome.CANCELLED, f"task {status or 'deleted'} while the agent ran")
                    return StopAgent(StageResult.Outcome.WORKER_LOST, "lease lost: another worker owns this stage now")
            except dbretry.DB_ERRORS as exc:
                # The lease outlives a short outage; the next tick tries again.
                self._db_failed(exc)
                return self.database_stop()
            self._db_ok(wrote_events=False)
            self._last_renew = now
        self.release_connection()
        return self.database_stop()

    def flush_events(self, *, due_only: bool = False) -> float | None:
        """Store the pending events in one batch and wake live clients. With `due_only`, only
        when the batch is due: EVENT_BATCH_SECONDS after the previous one (EVENT_BATCH_BUSY_SECONDS
        while the stream is busy; the first line after a quiet spell goes at once), or
        EVENT_BATCH_MAX events. Returns the seconds until
        the held-back events are due (None when none are held back). The token totals are
        written only when they changed. A database error keeps the events for the next try."""
        if not self._pending:
            return None
        tacx = settings.TACX
        now = time.monotonic()
        if due_only and len(self._pending) < tacx.get("EVENT_BATCH_MAX", 500):
            window = tacx.get("EVENT_BATCH_BUSY_SECONDS", 0.25) if self._busy else tacx["EVENT_BATCH_SECONDS"]
            wait = self._last_flush + window - now
            if wait > 0:
                return wait
        if self._outage is not None and self._outage.since is not None and due_only and now - self._last_flush < 1.0:
            return 1.0  # the database is down: try again in a second, not at every line
        batch, self._pending = self._pending, []
        self._last_flush = now
        try:
            created = self._store(batch)
        except dbretry.DB_ERRORS as exc:
            self._pending = batch + self._pending
            self._db_failed(exc)
            return 1.0
        self._db_ok()
        last_id = created[-1].pk if created and created[-1].pk else None
        if last_id:
            live.notify(self.task.pk, last_id)
        return None

    def flush_remaining(self) -> None:
        """Store every pending event (the agent has ended); raises while the database is away,
        so `dbretry.retry` tries again."""
        self.flush_events()
        if self._pending:
            raise OperationalError(f"{len(self._pending)} events not stored yet: the database is unavailable")

    def _store(self, batch: list[AgentEvent]) -> list[AgentEvent]:
        # One INSERT is atomic on PostgreSQL; where bulk_create splits a batch into several
        # statements (SQLite), a transaction keeps a retried batch from being stored twice.
        atomic = connection.vendor != "postgresql" and len(batch) > 1
        with transaction.atomic() if atomic else nullcontext():
            created = AgentEvent.objects.bulk_create(batch)
            parser = getattr(self, "parser", None)
            if parser is not None:
                self.apply_usage(parser.usage)
                r = self.result
                totals = (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.cost_usd)
                if totals != self._totals_written:
                    StageResult.objects.filter(pk=r.pk, outcome=StageResult.Outcome.RUNNING).update(
                        input_tokens=r.input_tokens,
                        output_tokens=r.output_tokens,
                        cache_read_tokens=r.cache_read_tokens,
                        cache_write_tokens=r.cache_write_tokens,
                        cost_usd=r.cost_usd,
                    )
                    self._totals_written = totals
        return created

    def apply_usage(self, usage) -> None:
        r = self.result
        r.input_tokens, r.output_tokens = usage.input_tokens, usage.output_tokens
        r.cache_read_tokens, r.cache_write_tokens = usage.cache_read_tokens, usage.cache_write_tokens
        r.cost_usd = usage.cost_usd if usage.cost_usd is not None else Decimal("0")

    def _db_failed(self, exc: Exception) -> None:
        if self._outage is None:
            self._outage = dbretry.Outage()
        self._outage.failed(exc)

    def _db_ok(self, *, wrote_events: bool = True) -> None:
        if wrote_events:
            # A heartbeat does not count: between heartbeats a quiet agent needs no connection.
            self._last_write = time.monotonic()
        if self._outage is not None:
            self._outage.succeeded()

    def database_stop(self) -> StopAgent | None:
        """Stop the agent once the database has been unreachable for longer than the limit."""
        if self._outage is None or self._outage.since is None or self._outage.seconds < self._outage.limit:
            return None
        return StopAgent(StageResult.Outcome.FAILED, f"database unavailable for {self._outage.seconds:.0f} s")

    def release_connection(self) -> None:
        """Close the database connection after DB_RELEASE_SECONDS without a write: an agent that
        waits for its model holds no connection (the next write opens one)."""
        release = settings.TACX.get("DB_RELEASE_SECONDS", 2.0)
        if connection.connection is None or connection.in_atomic_block or self._pending:
            return
        if time.monotonic() - self._last_write >= release:
            dbretry.drop_connection()


_KINDS = {k.value for k in AgentEvent.Kind}


def _kind(kind: str) -> str:
    return kind if kind in _KINDS else AgentEvent.Kind.RAW
