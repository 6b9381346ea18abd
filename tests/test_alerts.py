"""Alerts reach a generic webhook (a tiny HTTP receiver on loopback stands in for the outside
world) and email, once per incident: a failed task, a budget hit, a stalled agent (the real
Claude Code CLI, scripted to go silent), a stale coordinator heartbeat. Delivery problems never
reach the caller."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.utils import timezone

from pipeline import alerts, jobs, services
from pipeline.agent_process import group_alive
from pipeline.models import Repository, Stage, StageResult, Task, Worker
from tests.conftest import commit_workflow, point_claude_at

pytestmark = pytest.mark.django_db(transaction=True)


class Receiver(ThreadingHTTPServer):
    """Records the JSON bodies POSTed to it; answers `status` after `delay` seconds."""

    def __init__(self, status: int = 204, delay: float = 0.0):
        self.received: list[dict] = []
        self.status, self.delay = status, delay
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/tacx"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append({"content_type": self.headers.get("Content-Type"), **json.loads(body)})
        time.sleep(self.server.delay)
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver(settings, request):
    def start(**kwargs) -> Receiver:
        server = Receiver(**kwargs)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        request.addfinalizer(server.server_close)
        request.addfinalizer(server.shutdown)
        settings.TACX = {**settings.TACX, "ALERT_WEBHOOK_URL": server.url, "ALERT_TIMEOUT_SECONDS": 1.0}
        return server

    return start


@pytest.fixture
def task(db):
    repo = Repository.objects.create(kind="local", full_name="acme/app")
    return Task.objects.create(repository=repo, issue_number=12, title="Fix the login", status=Task.Status.RUNNING)


def test_a_failed_task_posts_one_alert_to_the_webhook_and_emails(task, receiver, settings):
    hook = receiver()
    settings.TACX = {**settings.TACX, "ALERT_EMAILS": ["ops@example.com", "lead@example.com"], "DASHBOARD_URL": "https://tacx.example.com/"}

    assert services.task_fail(task=task, reason="stage building failed: agent exited with code 1")
    assert not services.task_fail(task=task, reason="again")  # already finished: no second alert

    (alert,) = hook.received
    assert alert["content_type"] == "application/json"
    assert alert["kind"] == "task_failed"
    assert alert["task_id"] == task.pk and alert["issue_number"] == 12 and alert["repository"] == "acme/app"
    assert alert["task_url"] == f"https://tacx.example.com/tasks/{task.pk}/"
    assert alert["status"] == "failed"
    assert alert["message"] == "acme/app#12: Fix the login: failed: stage building failed: agent exited with code 1"
    (email,) = mail.outbox
    assert email.to == ["ops@example.com", "lead@example.com"]
    assert email.subject == "[TAC-X] task failed: acme/app#12"
    assert alert["task_url"] in email.body


def test_a_budget_stop_is_one_budget_alert_and_a_cancel_is_none(task, receiver):
    hook = receiver()
    services.task_fail(task=task, reason="stage planning: budget exceeded: stage budget $1.00 reached", status=Task.Status.BUDGET_EXCEEDED)
    other = Task.objects.create(repository=task.repository, issue_number=13, title="Other", status=Task.Status.RUNNING)
    services.task_cancel(task=other)

    assert [a["kind"] for a in hook.received] == ["budget_exceeded"]
    assert "stage budget $1.00 reached" in hook.received[0]["message"]


def test_secrets_are_redacted_from_alerts(task, receiver, monkeypatch):
    hook = receiver()
    leaked = "ghp_" + "A1b2C3d4" * 5
    services.task_fail(task=task, reason=f"git push failed: https://x-access-token:{leaked}@github.com/acme/app")

    assert leaked not in json.dumps(hook.received)
    assert "[REDACTED]" in hook.received[0]["message"]


@pytest.mark.parametrize("trouble", ["refused", "error", "slow"])
def test_a_broken_webhook_never_breaks_the_caller(task, receiver, settings, trouble):
    if trouble == "refused":
        settings.TACX = {**settings.TACX, "ALERT_WEBHOOK_URL": "http://127.0.0.1:9/nothing-listens", "ALERT_TIMEOUT_SECONDS": 1.0}
    elif trouble == "error":
        receiver(status=500)
    else:
        receiver(delay=3.0)
    settings.EMAIL_BACKEND = "tests.test_alerts.BrokenEmailBackend"
    settings.TACX = {**settings.TACX, "ALERT_EMAILS": ["ops@example.com"]}
    started = time.monotonic()

    assert services.task_fail(task=task, reason="boom")

    task.refresh_from_db()
    assert task.status == Task.Status.FAILED
    assert time.monotonic() - started < 2.5  # bounded by ALERT_TIMEOUT_SECONDS


class BrokenEmailBackend:
    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("no SMTP server")


def coordinator(heartbeat_age: float) -> Worker:
    return Worker.objects.create(
        kind=Worker.Kind.COORDINATOR, name="coordinator:test", host="box", heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age)
    )


def test_a_stale_coordinator_heartbeat_alerts_once_per_stale_period(receiver, settings):
    hook = receiver()
    settings.TACX = {**settings.TACX, "HEARTBEAT_STALE_SECONDS": 60}
    assert not alerts.alerts_check_heartbeat()  # no coordinator at all is not an alert
    worker = coordinator(heartbeat_age=10)
    assert not alerts.alerts_check_heartbeat()

    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=90))
    assert alerts.alerts_check_heartbeat()
    assert not alerts.alerts_check_heartbeat()
    assert not alerts.alerts_check_heartbeat(now=timezone.now() + timedelta(hours=1))
    assert [a["kind"] for a in hook.received] == ["heartbeat_stale"]
    assert "coordinator heartbeat is stale: last beat 90 s ago (coordinator:test on box" in hook.received[0]["message"]
    assert hook.received[0]["task_id"] is None

    # It beats again, then goes quiet again: a new stale period, a new alert.
    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    assert alerts.alerts_check_heartbeat()
    assert len(hook.received) == 2
    # A coordinator that stopped cleanly is not stale.
    Worker.objects.filter(pk=worker.pk).update(exited_at=timezone.now(), heartbeat_at=timezone.now() - timedelta(hours=2))
    assert not alerts.alerts_check_heartbeat()


def test_the_heartbeat_check_can_be_scheduled_with_django_q2_once():
    from django_q.models import Schedule

    alerts.heartbeat_check_schedule()
    schedule = alerts.heartbeat_check_schedule(minutes=2)

    assert Schedule.objects.count() == 1
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == ("pipeline.alerts.alerts_check_heartbeat", Schedule.MINUTES, 2)


def test_a_stall_that_the_stage_retries_is_alerted_once(task, receiver):
    hook = receiver()
    stage = Stage.objects.create(task=task, name="building", position=1, provider="claude")
    result = StageResult.objects.create(stage=stage, task=task, attempt=1, outcome="stalled", error="stalled: no agent output for 300 s")

    alerts.attempt_failed(result=result, retrying=True)
    alerts.attempt_failed(result=result, retrying=False)  # the task's end alert tells that one
    result.outcome = "timed_out"
    alerts.attempt_failed(result=result, retrying=True)

    (alert,) = hook.received
    assert alert["kind"] == "stage_stalled" and alert["stage"] == "building"
    assert alert["message"].endswith("stage building attempt 1 stalled: no agent output for 300 s; retrying")


@pytest.mark.cli
def test_a_silent_real_cli_is_killed_as_stalled_and_alerted_once(local_repository, origin_and_clone, receiver, monkeypatch, start_model_server):
    hook = receiver()
    _, clone = origin_and_clone
    server = start_model_server({"conversations": [{"name": "silent", "turns": [{"text": "Thinking...", "delay": 30}]}]})
    point_claude_at(monkeypatch, server)
    commit_workflow(clone, "stages:\n  - name: planning\n    stall_timeout: 2\n    max_attempts: 1\n  - name: pr_creation\n")
    task, _ = services.task_create(repository=local_repository, issue_number=5, title="Stall", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    started = time.monotonic()

    task = jobs.task_run_inline(task=task)

    assert time.monotonic() - started < 15
    result = StageResult.objects.get(task=task)
    assert (result.outcome, result.error) == ("stalled", "stalled: no agent output for 2 s")
    assert task.status == Task.Status.FAILED
    worker = Worker.objects.get(stage__task=task)
    assert worker.pgid and not group_alive(worker.pgid)
    (alert,) = hook.received
    assert alert["kind"] == "stage_stalled" and alert["task_id"] == task.pk and alert["stage"] == "planning"
    assert "stalled: no agent output for 2 s" in alert["message"]
