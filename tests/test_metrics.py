"""`/metrics`: Prometheus text that the client library's own parser reads, computed from the
database at scrape time, so its values move while a real Claude Code run goes on; served for the
bearer token or a staff session, and to loopback clients only when that is switched on explicitly.

Issue 19 (item 7): any loopback client was served without a token; behind a reverse proxy on the
same host (as the README recommends) that was everyone."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import path
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from pipeline import jobs, services
from pipeline.metrics import metrics_view
from pipeline.models import Task, Worker
from tests.conftest import commit_workflow, point_claude_at

# Until the site's urls.py routes /metrics, this module is the URLconf of its tests.
urlpatterns = [path("metrics", metrics_view)]
pytestmark = [pytest.mark.urls("tests.test_metrics"), pytest.mark.django_db(transaction=True)]

SCRIPT = {
    "conversations": [
        {
            "name": "planning",
            "turns": [
                {"text": "Reading.", "tool_calls": [{"bash": "ls"}], "usage": {"input_tokens": 3000, "output_tokens": 200}},
                # A pause long enough to scrape the running task a few times.
                {"tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n"}}], "usage": {"input_tokens": 3100, "output_tokens": 150}, "delay": 1.5},
                {"text": "Planned.", "usage": {"input_tokens": 3200, "output_tokens": 10}},
            ],
        }
    ]
}


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape, parsed by prometheus_client."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


TOKEN = "scrape-me-please"


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.TACX = {**settings.TACX, "METRICS_TOKEN": TOKEN}


def test_by_default_loopback_is_not_enough_not_even_from_a_proxy_on_the_same_host(client, settings):
    settings.TACX = {**settings.TACX, "METRICS_TOKEN": "", "METRICS_LOOPBACK": False}
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3"):
        response = client.get("/metrics", REMOTE_ADDR=address)
        assert response.status_code == 401 and b"tacx_tasks" not in response.content
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert response.status_code == 401 and b"tacx_tasks" not in response.content
    assert client.post("/metrics").status_code == 405


def test_loopback_switched_on_serves_direct_loopback_clients_only(client, settings):
    settings.TACX = {**settings.TACX, "METRICS_TOKEN": "", "METRICS_LOOPBACK": True}
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401
    # A reverse proxy on the same host: its connection is loopback, the client behind it is not.
    for header in ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP"):
        response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", **{header: "203.0.113.9"})
        assert response.status_code == 401 and b"tacx_tasks" not in response.content, header


def test_a_staff_session_is_served_and_a_user_without_staff_is_not(client, django_user_model, settings):
    settings.TACX = {**settings.TACX, "METRICS_TOKEN": ""}
    client.force_login(django_user_model.objects.create_user("viewer", "v@example.com", None))
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401
    client.force_login(django_user_model.objects.create_user("staff", "s@example.com", None, is_staff=True))
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_with_a_token_configured_the_bearer_token_is_required_from_anywhere(client, settings):
    settings.TACX = {**settings.TACX, "METRICS_TOKEN": TOKEN, "METRICS_LOOPBACK": False}
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic scrape-me-please").status_code == 401
    response = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer scrape-me-please")
    assert response.status_code == 200
    assert b"tacx_tasks" in response.content


@pytest.mark.cli
def test_the_values_change_as_a_real_task_runs(client, local_repository, origin_and_clone, monkeypatch, start_model_server):
    _, clone = origin_and_clone
    server = start_model_server(SCRIPT)
    point_claude_at(monkeypatch, server)
    commit_workflow(clone, "stages:\n  - name: planning\n  - name: pr_creation\n")
    Worker.objects.create(kind=Worker.Kind.COORDINATOR, name="coordinator:test", host="box", heartbeat_at=timezone.now() - timedelta(seconds=30))
    from django_q.tasks import async_task

    async_task("math.floor", 1.5)  # one message waiting in the ORM broker

    before = scrape(client)
    assert value(before, "tacx_tasks", status="running") == 0
    assert value(before, "tacx_queue_depth") == 1
    assert value(before, "tacx_workers", kind="coordinator") == 1
    assert 30 <= value(before, "tacx_coordinator_heartbeat_age_seconds") < 60
    assert value(before, "tacx_trigger_to_start_seconds_count") == 0

    task, _ = services.task_create(repository=local_repository, issue_number=3, title="Plan it", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)

    def run() -> None:
        try:
            jobs.task_run_inline(task=task)
        finally:
            connection.close()

    runner = threading.Thread(target=run)
    runner.start()
    during = None
    deadline = time.monotonic() + 30
    while runner.is_alive() and time.monotonic() < deadline:
        samples = scrape(client)
        if value(samples, "tacx_tokens_total", provider="claude", model="claude-sonnet-4-5", type="input") > 0:
            during = samples
            break
        time.sleep(0.1)
    runner.join(timeout=60)
    after = scrape(client)

    # While the agent ran: the task and its stage were running, its worker alive, its first
    # turn's usage (stored live) already counted.
    assert during is not None, "never saw the running task"
    assert value(during, "tacx_tasks", status="running") == 1
    assert value(during, "tacx_stages", status="running") == 1
    assert value(during, "tacx_workers", kind="agent") == 1
    assert value(during, "tacx_tokens_total", provider="claude", model="claude-sonnet-4-5", type="input") == 3000
    assert value(during, "tacx_trigger_to_start_seconds_count") == 1
    # Afterwards: succeeded, every token and the cost counted, durations observed.
    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert value(after, "tacx_tasks", status="running") == 0
    assert value(after, "tacx_tasks", status="succeeded") == 1
    assert value(after, "tacx_workers", kind="agent") == 0
    assert value(after, "tacx_tokens_total", provider="claude", model="claude-sonnet-4-5", type="input") == 9300
    assert value(after, "tacx_tokens_total", provider="claude", model="claude-sonnet-4-5", type="output") == 360
    assert value(after, "tacx_cost_usd_total", provider="claude", model="claude-sonnet-4-5") == pytest.approx(float(task.cost_usd))
    assert value(after, "tacx_spend_today_usd", repository="sample") == pytest.approx(float(task.cost_usd))
    planning = {"stage": "planning", "provider": "claude", "outcome": "succeeded"}
    assert value(after, "tacx_stage_duration_seconds_count", **planning) == 1
    assert value(after, "tacx_stage_duration_seconds_bucket", **planning, le="1.0") == 0  # the scripted pause
    assert value(after, "tacx_stage_duration_seconds_bucket", **planning, le="+Inf") == 1
    assert value(after, "tacx_stage_duration_seconds_sum", **planning) > 1.5
    assert value(after, "tacx_stage_duration_seconds_count", stage="pr_creation", provider="tacx", outcome="succeeded") == 1
