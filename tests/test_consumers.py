"""The websocket stream through the real ASGI application (origin check, session auth, router):
events arrive in order, a reconnect with ``after`` resumes without loss or repeats, anonymous
and foreign-origin sockets are refused; it works by polling without Redis and is woken through
channels_redis with it."""

from __future__ import annotations

import time
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from harness import fake_runner
from pipeline.models import AgentEvent
from tacx_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def session(alice) -> str:
    client = Client()
    client.force_login(alice)
    return client.cookies["sessionid"].value


@pytest.fixture
def task(local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=1)
    fake_runner.events_add(fake_runner.stage_claim(task, "planning"), fake_runner.sample_conversation())
    return task


def socket(path: str, *, session: str | None = None, origin: bytes | None = b"http://testserver") -> WebsocketCommunicator:
    headers = [(b"host", b"testserver")]
    if origin:
        headers.append((b"origin", origin))
    if session:
        headers.append((b"cookie", f"sessionid={session}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def receive_events(comm: WebsocketCommunicator, count: int, timeout: float = 5.0) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        message = await comm.receive_json_from(timeout=max(0.01, deadline - time.monotonic()))
        assert message["type"] == "events"
        events += message["events"]
    return events


def ids_of(task) -> list[int]:
    return list(AgentEvent.objects.filter(task=task).order_by("id").values_list("id", flat=True))


def test_a_task_stream_sends_every_event_in_order_with_its_html(session, task, local_repository):
    other = fake_runner.task_running(repository=local_repository, issue_number=2)
    fake_runner.events_add(fake_runner.stage_claim(other, "planning"), fake_runner.sample_conversation())
    expected = ids_of(task)

    async def scenario():
        comm = socket(f"/ws/tasks/{task.pk}/events/?after=0", session=session)
        connected, _ = await comm.connect()
        assert connected
        events = await receive_events(comm, len(expected))
        assert await comm.receive_nothing(timeout=0.6)
        await comm.disconnect()
        return events

    events = async_to_sync(scenario)()
    assert [e["id"] for e in events] == expected
    call = next(e for e in events if e["kind"] == "tool_call")
    assert '<strong class="tool-name">Write</strong>' in call["html"]
    assert call["stage"] == "planning" and call["attempt"] == 1


def test_new_events_arrive_while_connected(session, task):
    last = ids_of(task)[-1]

    async def scenario():
        comm = socket(f"/ws/tasks/{task.pk}/events/?after={last}", session=session)
        assert (await comm.connect())[0]
        assert await comm.receive_nothing(timeout=0.4)
        result = await sync_to_async(task.results.get)(stage__name="planning")
        await sync_to_async(fake_runner.events_add)(result, [("message", {"role": "assistant", "text": "more"})])
        events = await receive_events(comm, 1, timeout=3)
        await comm.disconnect()
        return events

    events = async_to_sync(scenario)()
    assert [e["data"]["text"] for e in events] == ["more"]


def test_a_reconnect_with_the_last_id_resumes_without_loss_or_repeats(session, task):
    result = task.results.get(stage__name="planning")
    before = len(ids_of(task))

    async def scenario():
        comm = socket(f"/ws/tasks/{task.pk}/events/", session=session)
        assert (await comm.connect())[0]
        first = await receive_events(comm, before)
        await comm.disconnect()
        # While the client is away the agent goes on.
        await sync_to_async(fake_runner.events_add)(result, [("message", {"role": "assistant", "text": f"away {i}"}) for i in range(5)])
        await sync_to_async(fake_runner.attempt_finish)(result, output_text="# Plan")
        comm = socket(f"/ws/tasks/{task.pk}/events/?after={first[-1]['id']}", session=session)
        assert (await comm.connect())[0]
        missed = len(await sync_to_async(ids_of)(task)) - len(first)
        second = await receive_events(comm, missed)
        assert await comm.receive_nothing(timeout=0.6)
        await comm.disconnect()
        return first, second

    first, second = async_to_sync(scenario)()
    received = [e["id"] for e in first + second]
    assert received == ids_of(task)  # everything, in order, once
    assert [e["data"].get("text") for e in second[:5]] == [f"away {i}" for i in range(5)]


def test_the_list_stream_sends_slim_events_of_every_task(session, task, local_repository):
    count = AgentEvent.objects.count()

    async def scenario():
        comm = socket("/ws/events/?after=0", session=session)
        assert (await comm.connect())[0]
        events = await receive_events(comm, count)
        other = await sync_to_async(fake_runner.task_running)(repository=local_repository, issue_number=2)
        more = await receive_events(comm, 2)  # "task created" and "task started"
        await comm.disconnect()
        return events, more, other

    events, more, other = async_to_sync(scenario)()
    assert [e["id"] for e in events] == list(
        AgentEvent.objects.filter(id__lte=events[-1]["id"]).order_by("id").values_list("id", flat=True)
    )
    assert set(events[0]) == {"id", "task_id", "kind"}
    assert {e["task_id"] for e in more} == {other.pk} and {e["kind"] for e in more} == {"status"}


def test_an_anonymous_socket_is_refused(task):
    async def scenario():
        comm = socket(f"/ws/tasks/{task.pk}/events/")
        return await comm.connect()

    assert async_to_sync(scenario)() == (False, 4401)


@pytest.mark.parametrize("origin", [b"http://evil.example", None])
def test_a_socket_from_another_origin_is_refused(session, task, origin):
    async def scenario():
        comm = socket(f"/ws/tasks/{task.pk}/events/", session=session, origin=origin)
        connected, _ = await comm.connect()
        return connected

    assert async_to_sync(scenario)() is False


@pytest.mark.parametrize("path,code", [("/ws/tasks/999999/events/", 4404), ("/ws/events/?after=abc", 4400), ("/ws/events/?after=-5", 4400)])
def test_a_bad_request_is_closed_with_a_reason(session, task, path, code):
    async def scenario():
        return await socket(path, session=session).connect()

    assert async_to_sync(scenario)() == (False, code)


def test_with_redis_a_notification_wakes_the_stream_long_before_the_safety_poll(session, task, settings):
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # A prefix of its own: other test runs may share this Redis.
            "CONFIG": {"hosts": [settings.REDIS_URL], "prefix": f"tacx-test-{uuid.uuid4().hex[:8]}"},
        }
    }
    settings.TACX = {**settings.TACX, "LIVE_SAFETY_POLL_SECONDS": 30.0}
    result = task.results.get(stage__name="planning")
    last = ids_of(task)[-1]

    async def scenario():
        comm = socket(f"/ws/tasks/{task.pk}/events/?after={last}", session=session)
        assert (await comm.connect())[0]
        await comm.receive_nothing(timeout=0.3)  # the first read is done: now it only waits
        started = time.monotonic()
        await sync_to_async(fake_runner.events_add)(result, [("message", {"role": "assistant", "text": "via redis"})])
        events = await receive_events(comm, 1, timeout=5)
        waited = time.monotonic() - started
        await comm.disconnect()
        return events, waited

    events, waited = async_to_sync(scenario)()
    assert [e["data"]["text"] for e in events] == ["via redis"]
    assert waited < 2.0  # woken through channels_redis, not by the 30 s poll
