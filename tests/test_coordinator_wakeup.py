"""A `@tacx` comment starts its round at once (issue 23): the webhook wakes the coordinator
instead of waiting for its tick, and the delivery that queued a round lets start_one_round look
in the same cycle instead of after its housekeeping rest (half the comments waited up to 1 s)."""

from __future__ import annotations

import threading
import time

import pytest
from github_standin import standin  # noqa: F401
from rounds_helpers import deliver

from coordinator import wakeup
from coordinator.loop import Coordinator
from coordinator.models import WebhookDelivery
from pipeline.github import GitHubClient
from pipeline.models import Repository, Round, Stage, Task


def finished_task_with_pull_request() -> Task:
    """A task that opened PR #7 and finished: what a comment round continues (no agent runs
    here: the round only has to be started, its building stage queued)."""
    repository = Repository.objects.create(
        kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url="/nonexistent", default_branch="main"
    )
    task = Task.objects.create(
        repository=repository,
        issue_number=3,
        title="t",
        status=Task.Status.SUCCEEDED,
        branch="tacx/3-t",
        pr_number=7,
        workflow={},
    )
    for position, name in enumerate(("planning", "building", "reviewing", "pr_creation")):
        Stage.objects.create(task=task, name=name, position=position, provider="command", status=Stage.Status.SUCCEEDED)
    return task


def comment(client, standin, n: int):  # noqa: F811
    """`@tacx` on the task's issue (#3), as a signed delivery to the webhook view."""
    if 3 not in standin.issues["octo/sample"]:
        standin.add_issue("octo/sample", number=3, title="t", body="b", labels=())
    c = standin.add_comment("octo/sample", 3, f"@tacx change {n}", author="alice")
    answer = deliver(client, standin, "issue_comment.created", delivery=f"wake-{n}", sender="alice", number=3, comment_id=c["id"])
    assert answer.status_code == 202, answer.content


def coordinator_for(standin, **kwargs) -> Coordinator:  # noqa: F811
    return Coordinator(client=GitHubClient(base_url=standin.url, token=standin.token), **kwargs)


def test_a_delivery_that_queues_a_round_starts_it_in_the_same_cycle(db, settings, client, standin):  # noqa: F811
    settings.TACX = {**settings.TACX, "HOUSEKEEPING_SECONDS": 600.0}
    task = finished_task_with_pull_request()
    coordinator = coordinator_for(standin, tick=0, poll_interval=3600.0)
    for _ in range(5):  # the first polls the repository once; then a cycle finds nothing
        if not coordinator.run_cycle():
            break
    # After a cycle that found nothing, the housekeeping steps (start_one_round too) rest 600 s.
    assert coordinator._idle_until.get("start_one_round", 0) > time.monotonic() + 500
    comment(client, standin, 1)
    coordinator.run_cycle()
    (round_,) = Round.objects.filter(task=task)
    assert round_.status == Round.Status.RUNNING, (round_.status, round_.reason)
    assert Stage.objects.get(task=task, name="building").status == Stage.Status.QUEUED


def test_waiter_wakes_on_a_datagram_and_removes_a_dead_coordinators_socket(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    waiter = wakeup.Waiter()
    assert waiter.open()
    try:
        started = time.monotonic()
        assert waiter.wait(0.05) is False and time.monotonic() - started >= 0.05
        # A coordinator that died without closing leaves its socket file: nobody listens there.
        dead = wakeup.Waiter()
        assert dead.open()
        dead.sock.close()
        assert wakeup.wake_coordinators() == 1
        assert not dead.path.exists()
        started = time.monotonic()
        assert waiter.wait(30) is True and time.monotonic() - started < 5
        # Many wake-ups at once cost one cycle: all of them are read.
        for _ in range(5):
            wakeup.wake_coordinators()
        assert waiter.wait(30) is True
        assert waiter.wait(0) is False
        # Between two steps of a cycle the loop asks without waiting.
        assert waiter.woken() is False
        wakeup.wake_coordinators()
        assert waiter.woken() is True and waiter.woken() is False
    finally:
        waiter.close()
    assert not list((tmp_path / "var" / "wake").iterdir())
    assert wakeup.wake_coordinators() == 0


@pytest.mark.django_db(transaction=True)
def test_a_comment_webhook_wakes_a_sleeping_coordinator_before_its_tick(settings, client, standin):  # noqa: F811
    task = finished_task_with_pull_request()
    coordinator = coordinator_for(standin, tick=120.0, poll_interval=3600.0)  # a tick far longer than the test
    cycles = []
    run_cycle = coordinator.run_cycle
    coordinator.run_cycle = lambda: cycles.append(run_cycle()) or cycles[-1]
    loop = threading.Thread(target=coordinator.run, daemon=True)
    loop.start()
    try:
        # Asleep: a cycle found nothing to do, and its socket is there to be woken through.
        deadline = time.monotonic() + 30
        while not (cycles and cycles[-1] is False) and time.monotonic() < deadline:
            time.sleep(0.01)
        asleep = len(cycles)
        time.sleep(0.3)
        assert len(cycles) == asleep and list(wakeup.wake_dir().glob("coordinator-*.sock"))
        posted = time.monotonic()
        comment(client, standin, 1)
        while time.monotonic() - posted < 30 and not Round.objects.filter(task=task, status=Round.Status.RUNNING).exists():
            time.sleep(0.01)
        waited = time.monotonic() - posted
        assert Round.objects.filter(task=task, status=Round.Status.RUNNING).exists(), list(
            WebhookDelivery.objects.values("status", "result")
        )
        assert waited < 10, waited  # not the 120 s tick
    finally:
        coordinator.stop()
        loop.join(30)
    assert not loop.is_alive()
    assert not list(wakeup.wake_dir().glob("coordinator-*.sock"))  # closed with the loop
