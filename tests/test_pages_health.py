"""/health: database, queue depth, coordinator heartbeat age and workers; 200 only when healthy,
and nothing secret in it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from coordinator import dispatch
from pipeline.models import Worker

pytestmark = pytest.mark.django_db


def coordinator(age_seconds: float) -> Worker:
    return Worker.objects.create(
        kind=Worker.Kind.COORDINATOR,
        name="coordinator:secret-host:1",
        host="secret-host",
        heartbeat_at=timezone.now() - timedelta(seconds=age_seconds),
    )


def test_it_is_healthy_with_a_fresh_coordinator_heartbeat(client):
    coordinator(5)
    Worker.objects.create(kind=Worker.Kind.AGENT, name="w1", host="secret-host")
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True}
    assert body["queue"] == {"ok": True, "depth": 0}
    assert 4 <= body["coordinator"]["heartbeat_age_seconds"] <= 10
    assert body["workers"] == {"live": 0, "busy": 1}


def slot(name: str, age_seconds: float, *, exited: bool = False) -> Worker:
    now = timezone.now()
    return Worker.objects.create(
        kind=Worker.Kind.SLOT, name=name, host="secret-host", heartbeat_at=now - timedelta(seconds=age_seconds), exited_at=now if exited else None
    )


def test_health_the_workers_page_and_admission_count_the_same_live_slots(client, alice, settings):
    """Four live q2 slots, one of them running an agent, plus a stale slot and an exited one:
    /health, /workers/ and the dispatcher's admission limit all see 4 live slots."""
    settings.TACX = {**settings.TACX, "MAX_CONCURRENT_TASKS": 10, "ADMIT_BY_SLOTS": True}
    coordinator(1)
    for i in range(4):
        slot(f"h:{i}", 2)
    slot("h:stale", 3600)
    slot("h:gone", 1, exited=True)
    Worker.objects.create(kind=Worker.Kind.AGENT, name="agent", host="secret-host")
    assert client.get("/health").json()["workers"] == {"live": 4, "busy": 1}
    assert dispatch.admission_limit() == 4
    client.force_login(alice)
    page = client.get("/workers/").content.decode()
    assert 'data-slots-live="4"' in page and 'data-slots-busy="1"' in page


def test_it_is_unhealthy_without_a_coordinator(client):
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["coordinator"] == {"ok": False, "heartbeat_age_seconds": None, "max_age_seconds": pytest.approx(120.0)}


def test_it_is_unhealthy_when_the_coordinator_heartbeat_is_old(client):
    coordinator(3600)
    assert client.get("/health").status_code == 503


def test_it_counts_the_queue_of_django_q(client, settings):
    from django_q.tasks import async_task

    coordinator(1)
    async_task("math.floor", 1.5)
    assert client.get("/health").json()["queue"]["depth"] == 1


def test_it_reveals_no_host_name_or_setting(client, settings):
    settings.GITHUB_TOKEN = "ghp_" + "x" * 36
    coordinator(1)
    text = json.dumps(client.get("/health").json())
    assert "secret-host" not in text and "ghp_" not in text and "coordinator:" not in text


def test_it_needs_no_login(client):
    assert client.get("/health").status_code in (200, 503)
