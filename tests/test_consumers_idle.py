"""Idle websockets are cheap and bounded per user.

Issue 9 (item 10): 50 idle sockets cost about a fifth of a core (each read the events table four
times a second) and a user could open any number. Now one watcher per process reads the newest
event id and wakes the sockets when it grows, so an idle socket costs no query; a user holds at
most TACX_WS_MAX_PER_USER sockets per process (4429 beyond).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from dashboard import consumers, streams
from harness import fake_runner
from tacx_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def session_of(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def socket(session: str, path: str = "/ws/events/") -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, path, headers=[(b"host", b"testserver"), (b"origin", b"http://testserver"), (b"cookie", f"sessionid={session}".encode())]
    )


def test_a_user_holds_at_most_the_limit_of_sockets(alice, django_user_model, settings):
    from conftest import grant

    settings.TACX = {**settings.TACX, "WS_MAX_PER_USER": 3}
    mine, other = session_of(alice), session_of(grant(django_user_model.objects.create_user("bob"), "view_task"))

    async def scenario():
        open_ = [socket(mine) for _ in range(3)]
        results = [await comm.connect() for comm in open_]
        refused = await socket(mine).connect()
        others = socket(other)
        other_ok = await others.connect()
        await open_[0].disconnect()
        again = socket(mine)
        after_close = await again.connect()
        for comm in [*open_[1:], others, again]:
            await comm.disconnect()
        return results, refused, other_ok, after_close

    results, refused, other_ok, after_close = async_to_sync(scenario)()
    assert all(connected for connected, _ in results)
    assert refused == (False, 4429)
    assert other_ok[0] is True and after_close[0] is True
    assert not consumers._sockets_per_user  # every close was counted


def test_idle_sockets_do_not_read_the_table_and_still_get_new_events(alice, local_repository, settings, monkeypatch):
    settings.TACX = {**settings.TACX, "LIVE_POLL_SECONDS": 0.01, "LIVE_SAFETY_POLL_SECONDS": 0.01}
    task = fake_runner.task_running(repository=local_repository, issue_number=1)
    reads, polls = [0], [0]
    events_after, latest_id = streams.events_after, streams.latest_id

    def counting_events_after(**kwargs):
        reads[0] += 1
        return events_after(**kwargs)

    def counting_latest_id(**kwargs):
        polls[0] += 1
        return latest_id(**kwargs)

    monkeypatch.setattr(streams, "events_after", counting_events_after)
    monkeypatch.setattr(streams, "latest_id", counting_latest_id)
    session = session_of(alice)
    sockets = 10

    async def scenario():
        comms = [socket(session) for _ in range(sockets)]
        for comm in comms:
            assert (await comm.connect())[0]
        start = polls[0]
        deadline = time.monotonic() + 10
        # Twenty rounds of the watcher (0.01 s apart) with nothing new: no socket reads.
        while polls[0] - start < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        idle_reads = reads[0]
        await sync_to_async(lambda: fake_runner.events_add(fake_runner.stage_claim(task, "planning"), fake_runner.sample_conversation()[:1]))()
        received = [await comm.receive_json_from(timeout=5) for comm in comms]
        for comm in comms:
            await comm.disconnect()
        return polls[0] - start, idle_reads, received

    idle_polls, idle_reads, received = async_to_sync(scenario)()
    assert idle_polls >= 20
    # One first read per socket when it opens, plus at most one when the watcher first looks.
    assert idle_reads <= 2 * sockets, f"{idle_reads} reads by {sockets} idle sockets over {idle_polls} polls"
    assert all(message["type"] == "events" and message["events"] for message in received)
