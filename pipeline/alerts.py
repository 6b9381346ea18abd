"""Alerts: tell people when something needs them, by a generic webhook and by email.

When (one alert per incident):

* ``task_failed``: a task ended ``failed`` (not cancelled, not skipped);
* ``budget_exceeded``: a task ended ``budget_exceeded`` (a budget stopped an agent or refused to
  start one);
* ``budget_paused``: a budget with ``on_exceed: pause`` stopped an agent and the task waits for a
  person (what was spent, the limit, the estimate of the rest, when it ends unanswered);
* ``budget_pause_answered``: someone raised the limit or ended the task, or nobody answered in
  time (instead of ``budget_exceeded`` for the two last: one alert per answer);
* ``stage_stalled``: an agent printed nothing for its stall limit and was killed; sent when the
  stage is retried, and instead of ``task_failed`` when the stall ended the task;
* ``publish_blocked``: the publish guard (``pipeline.publish_guard``) stopped a post to GitHub or
  a push because it carried the value of a secret (the message names the secret, never its value);
* ``heartbeat_stale``: no running coordinator has beaten for ``HEARTBEAT_STALE_SECONDS``
  (``alerts_check_heartbeat``, run by a django-q2 schedule or any loop; one alert per stale
  period, see there).

Where (``settings.TACX``): ``ALERT_WEBHOOK_URL`` gets a JSON POST ``{kind, message, task_id,
task_url, repository, issue_number, status, stage, sent_at}`` (``ALERT_TIMEOUT_SECONDS``; any
2xx is success); ``ALERT_EMAILS`` get an email through Django's mail settings (``EMAIL_*``,
``DEFAULT_FROM_EMAIL``). Neither is required. Texts are redacted. Delivery happens after the
surrounding transaction commits, and never raises into the caller: a failed delivery is logged.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import NoReverseMatch
from django.utils import timezone

from . import budgets
from .lib.redaction import redact, redact_data
from .models import BudgetPause, SentAlert, StageResult, Task, Worker

log = logging.getLogger(__name__)

TASK_FAILED = "task_failed"
BUDGET_EXCEEDED = "budget_exceeded"
STAGE_STALLED = "stage_stalled"
HEARTBEAT_STALE = "heartbeat_stale"
PUBLISH_BLOCKED = "publish_blocked"
BUDGET_PAUSED = "budget_paused"
BUDGET_PAUSE_ANSWERED = "budget_pause_answered"
MARKER_DAYS = 7  # SentAlert rows older than this are removed


@dataclass
class Alert:
    kind: str
    message: str
    task_id: int | None = None
    task_url: str = ""
    repository: str = ""
    issue_number: int | None = None
    status: str = ""
    stage: str = ""
    sent_at: str = ""

    @classmethod
    def for_task(cls, kind: str, message: str, task: Task, *, stage: str = "") -> Alert:
        return cls(
            kind=kind,
            message=message,
            task_id=task.pk,
            task_url=task_url(task),
            repository=task.repository.full_name,
            issue_number=task.issue_number,
            status=task.status,
            stage=stage,
        )


def task_url(task: Task) -> str:
    try:
        return settings.TACX.get("DASHBOARD_URL", "").rstrip("/") + task.get_absolute_url()
    except NoReverseMatch:  # a site without the dashboard
        return ""


# --- hooks (called by the runner and the services) ------------------------------------------------


def _never_raises(hook: Callable[..., None]) -> Callable[..., None]:
    """An alert hook must not turn a recorded failure into a crash of the runner or a service."""

    @functools.wraps(hook)
    def guarded(**kwargs) -> None:
        try:
            hook(**kwargs)
        except Exception:
            log.exception("alert hook %s failed", hook.__name__)

    return guarded


@_never_raises
def task_finished(*, task: Task) -> None:
    """Called when a task ends (any finished status); alerts for failed and budget_exceeded."""
    if task.status not in (Task.Status.FAILED, Task.Status.BUDGET_EXCEEDED):
        return
    last = StageResult.objects.filter(task=task).select_related("stage").order_by("-id").first()
    stage = last.stage.name if last else ""
    if task.status == Task.Status.BUDGET_EXCEEDED:
        kind = BUDGET_EXCEEDED
    elif last is not None and last.outcome == StageResult.Outcome.STALLED:
        kind = STAGE_STALLED
    else:
        kind = TASK_FAILED
    alert_send(Alert.for_task(kind, f"{task}: {task.status}: {task.status_reason}", task, stage=stage))


@_never_raises
def attempt_failed(*, result: StageResult, retrying: bool) -> None:
    """Called when an attempt failed; alerts for a stall the stage goes on from (a stall that
    ends the task is told by ``task_finished``, once)."""
    if result.outcome != StageResult.Outcome.STALLED or not retrying:
        return
    task = result.task
    message = f"{task}: stage {result.stage.name} attempt {result.attempt} {result.error}; retrying"
    alert_send(Alert.for_task(STAGE_STALLED, message, task, stage=result.stage.name))


@_never_raises
def budget_paused(*, pause: BudgetPause) -> None:
    """Called when a task pauses at a budget (once per pause: the transition is conditional)."""
    task = Task.objects.select_related("repository").get(pk=pause.task_id)
    alert_send(Alert.for_task(BUDGET_PAUSED, f"{task}: {task.status_reason}", task, stage=pause.stage_name or pause.stage.name))


@_never_raises
def budget_pause_answered(*, pause: BudgetPause) -> None:
    """Called when a pause is answered: raised, stopped by a person, or expired unanswered."""
    task = Task.objects.select_related("repository").get(pk=pause.task_id)
    if pause.status == BudgetPause.Status.RAISED:
        amount = budgets.money(pause.raise_usd) if pause.raise_usd is not None else f"{pause.raise_tokens:,} tokens"
        message = f"{task}: {pause.scope} budget raised by {amount} by {pause.answered_by} ({pause.answer_source}); the task goes on"
    else:
        message = f"{task}: {task.status}: {task.status_reason}"
    alert_send(Alert.for_task(BUDGET_PAUSE_ANSWERED, message, task, stage=pause.stage.name))


@_never_raises
def publish_blocked(*, message: str, task: Task | None = None, repository: str = "") -> None:
    """Called by the publish guard when it stopped a post or a push. One alert per distinct stop
    (a post retried by the coordinator is stopped again each time, and is told once)."""
    if not _claim(f"publish-blocked-{hashlib.sha256(message.encode('utf-8', 'replace')).hexdigest()[:40]}"):
        return
    if task is not None:
        alert_send(Alert.for_task(PUBLISH_BLOCKED, f"{task}: {message}", task))
    else:
        alert_send(Alert(kind=PUBLISH_BLOCKED, message=message, repository=repository))


def alerts_check_heartbeat(*, now: datetime | None = None) -> bool:
    """Alert when the newest heartbeat of the running coordinators (``Worker`` rows of kind
    coordinator that have not exited) is older than ``HEARTBEAT_STALE_SECONDS``. Returns whether
    it alerted.

    One stale period sends one alert: the period is named by that last heartbeat, and a
    ``SentAlert`` row for it is claimed before sending, so further checks, in any process on any
    machine, stay quiet until a coordinator beats again and then goes stale again. No coordinator at all (none started, or all stopped cleanly)
    is not an alert. Meant for a django-q2 schedule (``pipeline.alerts.alerts_check_heartbeat``,
    every minute) or a monitoring loop; it never raises."""
    try:
        now = now or timezone.now()
        limit = float(settings.TACX.get("HEARTBEAT_STALE_SECONDS") or 0)
        if limit <= 0:
            return False
        latest = Worker.objects.filter(kind=Worker.Kind.COORDINATOR, exited_at__isnull=True).order_by("-heartbeat_at").first()
        if latest is None:
            return False
        age = (now - latest.heartbeat_at).total_seconds()
        if age < limit:
            return False
        if not _claim(f"heartbeat-stale-{latest.heartbeat_at.timestamp():.6f}"):
            return False
        message = f"coordinator heartbeat is stale: last beat {age:.0f} s ago ({latest.name} on {latest.host}, at {latest.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
        alert_send(Alert(kind=HEARTBEAT_STALE, message=message))
        return True
    except Exception:
        log.exception("heartbeat check failed")
        return False


def heartbeat_check_schedule(*, minutes: int = 1):
    """Make django-q2 run ``alerts_check_heartbeat`` every ``minutes`` (idempotent: one
    schedule, found by its function). Call it once at deployment (a migration or a shell)."""
    from django_q.models import Schedule

    schedule, _ = Schedule.objects.update_or_create(
        func=f"{__name__}.alerts_check_heartbeat",
        defaults={"name": "tacx: coordinator heartbeat alert", "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
    )
    return schedule


# --- delivery -------------------------------------------------------------------------------------


def alert_send(alert: Alert) -> None:
    """Deliver ``alert`` to the configured webhook and emails once the current transaction (if
    any) commits. Never raises."""
    alert.message = redact(alert.message)
    alert.sent_at = timezone.now().isoformat()
    log.warning("alert %s: %s", alert.kind, alert.message)
    transaction.on_commit(lambda: deliver(alert))


def deliver(alert: Alert) -> None:
    tacx = settings.TACX
    url = tacx.get("ALERT_WEBHOOK_URL") or ""
    if url:
        try:
            response = requests.post(url, json=redact_data(asdict(alert)), timeout=float(tacx.get("ALERT_TIMEOUT_SECONDS") or 5.0))
            if not 200 <= response.status_code < 300:
                log.warning("alert webhook answered HTTP %s", response.status_code)
        except Exception as exc:  # noqa: BLE001 - an alert must never break its caller
            log.warning("alert webhook failed: %s", redact(str(exc)))
    emails = tacx.get("ALERT_EMAILS") or []
    if emails:
        subject = f"[TAC-X] {alert.kind.replace('_', ' ')}" + (f": {alert.repository}#{alert.issue_number}" if alert.task_id else "")
        body = alert.message + (f"\n\n{alert.task_url}" if alert.task_url else "") + "\n"
        try:
            send_mail(subject, body, None, list(emails))
        except Exception as exc:  # noqa: BLE001
            log.warning("alert email failed: %s", redact(str(exc)))


def _claim(key: str) -> bool:
    """True for the first caller anywhere (any process, any machine) to claim ``key``: the
    unique constraint on ``SentAlert.key`` decides, not a check-then-write."""
    try:
        with transaction.atomic():
            SentAlert.objects.create(key=key)
    except IntegrityError:
        return False
    SentAlert.objects.filter(created_at__lt=timezone.now() - timedelta(days=MARKER_DAYS)).delete()
    return True
