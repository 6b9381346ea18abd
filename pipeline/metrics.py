"""Prometheus metrics: ``metrics_view`` serves them, ``TacxCollector`` reads them from the database.

Every figure is computed from the tables at scrape time, so any process (web, coordinator, q2
cluster, another machine) tells the same truth and nothing is lost when a process restarts: there
are no in-process counters.

Metrics (all prefixed ``tacx_``):

* ``tasks{status}``: tasks by status (every status, zeros included);
* ``stages{status}``: stages by status;
* ``stage_duration_seconds{stage,provider,outcome}``: histogram of finished attempts;
* ``tokens_total{provider,model,type}`` (type: input, output, cache_read, cache_write) and
  ``cost_usd_total{provider,model}``: usage of all attempts, running ones included (they are
  stored live); ``attempts_total{provider,model}``;
* ``spend_today_usd{repository}`` / ``spend_today_tokens{repository}``: the UTC day's spend, the
  figure daily budgets are checked against;
* ``queue_depth``: django-q2 ORM-broker messages waiting (``OrmQ`` rows);
* ``trigger_to_start_seconds``: histogram of task trigger → first attempt start;
* ``workers{kind}``: workers that have not exited and beat within ``HEARTBEAT_STALE_SECONDS``;
* ``coordinator_heartbeat_age_seconds``: age of the newest heartbeat of a running coordinator
  (absent when no coordinator runs).

Access (``metrics_view``), safe by default: a request is served when it carries
``Authorization: Bearer <token>`` matching ``settings.TACX["METRICS_TOKEN"]`` (env
``TACX_METRICS_TOKEN``), or comes from a logged-in staff user's session. Nothing else is served
unless ``TACX_METRICS_LOOPBACK=1`` (settings ``TACX["METRICS_LOOPBACK"]``) explicitly opens it to
loopback clients (``REMOTE_ADDR`` 127.0.0.0/8 or ::1) that came through no proxy: behind a reverse
proxy on the same host every client looks like loopback, so a request carrying ``Forwarded``,
``X-Forwarded-For`` or ``X-Real-IP`` is never taken for a loopback client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
)
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .budgets import start_of_day
from .models import Stage, StageResult, Task, Worker

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
LATENCY_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 14400, 86400)
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write")


def _usage_sums() -> dict[str, Sum]:
    """Sums of attempts' tokens by type (``input`` = ``Sum("input_tokens")``, …) and ``cost``."""
    return {**{kind: Sum(f"{kind}_tokens") for kind in TOKEN_TYPES}, "cost": Sum("cost_usd")}


def _seconds(value: timedelta | None) -> float:
    return value.total_seconds() if value is not None else 0.0


def _histogram_aggregates(field: str, buckets: tuple[int, ...]) -> dict:
    """Cumulative bucket counts, count and sum of the duration annotation ``field``."""
    aggregates = {f"le_{b}": Count("pk", filter=Q(**{f"{field}__lte": timedelta(seconds=b)})) for b in buckets}
    return {**aggregates, "n": Count("pk"), "total": Sum(field)}


def _buckets(row: dict, buckets: tuple[int, ...]) -> list[tuple[str, float]]:
    return [*((str(float(b)), row[f"le_{b}"]) for b in buckets), ("+Inf", row["n"])]


class TacxCollector:
    """A prometheus_client collector that queries the database on every ``collect()``."""

    def collect(self) -> Iterator[Metric]:
        yield from self.tasks()
        yield from self.stage_durations()
        yield from self.usage()
        yield from self.spend_today()
        yield from self.queue()
        yield from self.trigger_latency()
        yield from self.workers()

    def tasks(self) -> Iterator[Metric]:
        counts = dict(Task.objects.order_by().values_list("status").annotate(n=Count("pk")))
        tasks = GaugeMetricFamily("tacx_tasks", "Tasks by status.", labels=["status"])
        for status in Task.Status.values:
            tasks.add_metric([status], counts.get(status, 0))
        yield tasks
        counts = dict(Stage.objects.order_by().values_list("status").annotate(n=Count("pk")))
        stages = GaugeMetricFamily("tacx_stages", "Stages by status.", labels=["status"])
        for status in Stage.Status.values:
            stages.add_metric([status], counts.get(status, 0))
        yield stages

    def stage_durations(self) -> Iterator[Metric]:
        duration = ExpressionWrapper(F("completed_at") - F("started_at"), output_field=DurationField())
        rows = (
            StageResult.objects.filter(completed_at__isnull=False)
            .exclude(outcome=StageResult.Outcome.RUNNING)
            .annotate(duration=duration)
            .order_by()
            .values("stage__name", "provider", "outcome")
            .annotate(**_histogram_aggregates("duration", DURATION_BUCKETS))
        )
        family = HistogramMetricFamily(
            "tacx_stage_duration_seconds", "Duration of finished stage attempts.", labels=["stage", "provider", "outcome"]
        )
        for row in rows:
            family.add_metric(
                [row["stage__name"], row["provider"], row["outcome"]], _buckets(row, DURATION_BUCKETS), _seconds(row["total"])
            )
        yield family

    def usage(self) -> Iterator[Metric]:
        rows = (
            StageResult.objects.order_by()
            .values("provider", "model")
            .annotate(**_usage_sums(), attempts=Count("pk"))
        )
        tokens = CounterMetricFamily("tacx_tokens", "Tokens used by agent attempts.", labels=["provider", "model", "type"])
        cost = CounterMetricFamily("tacx_cost_usd", "Cost of agent attempts in USD.", labels=["provider", "model"])
        attempts = CounterMetricFamily("tacx_attempts", "Stage attempts.", labels=["provider", "model"])
        for row in rows:
            for kind in TOKEN_TYPES:
                tokens.add_metric([row["provider"], row["model"], kind], row[kind] or 0)
            cost.add_metric([row["provider"], row["model"]], float(row["cost"] or 0))
            attempts.add_metric([row["provider"], row["model"]], row["attempts"])
        yield from (tokens, cost, attempts)

    def spend_today(self) -> Iterator[Metric]:
        rows = (
            StageResult.objects.filter(started_at__gte=start_of_day())
            .order_by()
            .values("task__repository__full_name")
            .annotate(**_usage_sums())
        )
        usd = GaugeMetricFamily("tacx_spend_today_usd", "Spend of the current UTC day in USD.", labels=["repository"])
        tokens = GaugeMetricFamily("tacx_spend_today_tokens", "Tokens of the current UTC day.", labels=["repository"])
        for row in rows:
            name = row["task__repository__full_name"]
            usd.add_metric([name], float(row["cost"] or 0))
            tokens.add_metric([name], sum(row[kind] or 0 for kind in TOKEN_TYPES))
        yield from (usd, tokens)

    def queue(self) -> Iterator[Metric]:
        from django_q.models import OrmQ

        yield GaugeMetricFamily("tacx_queue_depth", "django-q2 messages waiting in the ORM broker.", value=OrmQ.objects.count())

    def trigger_latency(self) -> Iterator[Metric]:
        first_start = StageResult.objects.filter(task=OuterRef("pk")).order_by("started_at").values("started_at")[:1]
        row = (
            Task.objects.annotate(first_start=Subquery(first_start))
            .filter(first_start__isnull=False)
            .annotate(latency=ExpressionWrapper(F("first_start") - F("triggered_at"), output_field=DurationField()))
            .aggregate(**_histogram_aggregates("latency", LATENCY_BUCKETS))
        )
        family = HistogramMetricFamily("tacx_trigger_to_start_seconds", "Time from a task's trigger to its first attempt's start.")
        family.add_metric([], _buckets(row, LATENCY_BUCKETS), _seconds(row["total"]))
        yield family

    def workers(self) -> Iterator[Metric]:
        now = timezone.now()
        fresh = now - timedelta(seconds=float(settings.TACX.get("HEARTBEAT_STALE_SECONDS") or 120))
        alive = Worker.objects.filter(exited_at__isnull=True)
        counts = dict(alive.filter(heartbeat_at__gte=fresh).order_by().values_list("kind").annotate(n=Count("pk")))
        workers = GaugeMetricFamily("tacx_workers", "Workers running with a fresh heartbeat.", labels=["kind"])
        for kind in Worker.Kind.values:
            workers.add_metric([kind], counts.get(kind, 0))
        yield workers
        latest = alive.filter(kind=Worker.Kind.COORDINATOR).order_by("-heartbeat_at").values_list("heartbeat_at", flat=True).first()
        if latest is not None:
            yield GaugeMetricFamily(
                "tacx_coordinator_heartbeat_age_seconds",
                "Seconds since the newest heartbeat of a running coordinator.",
                value=max(0.0, (now - latest).total_seconds()),
            )


def client_is_loopback(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")


def client_is_direct_loopback(request: HttpRequest) -> bool:
    """A loopback peer that is not a proxy relaying someone else's request."""
    return client_is_loopback(request) and not any(name in request.headers for name in PROXY_HEADERS)


def bearer_token_ok(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and constant_time_compare(given.strip(), token)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of ``TacxCollector`` (access: see the module docstring)."""
    token = settings.TACX.get("METRICS_TOKEN") or ""
    allowed = (
        (token and bearer_token_ok(request, token))
        or (request.user.is_authenticated and request.user.is_staff)
        or (settings.TACX.get("METRICS_LOOPBACK") and client_is_direct_loopback(request))
    )
    if not allowed:
        response = HttpResponse(
            "metrics need a bearer token (TACX_METRICS_TOKEN) or a staff login"
            + ("" if settings.TACX.get("METRICS_LOOPBACK") else "; loopback clients are not trusted unless TACX_METRICS_LOOPBACK=1")
            + "\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="tacx-metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TacxCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
