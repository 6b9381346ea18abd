"""The demo's safety rails, without starting the stack: a busy port is refused before anything
happens, a task left active by an interrupted run is cancelled by the next one, and the model's
turns are paced so a person can watch."""

from __future__ import annotations

import socket

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from harness.management.commands import demo
from pipeline import services
from pipeline.models import Repository, Task

pytestmark = pytest.mark.django_db


def test_a_busy_port_is_named_with_the_way_to_pick_another_before_anything_starts(settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError) as exc:
            call_command("demo", port=port, exit_when_done=True)
    message = str(exc.value)
    assert f"port {port} on 127.0.0.1 is already in use" in message
    assert f"--port {port + 1}" in message and f"TACX_PORT={port + 1}" in message
    # Nothing was started or created.
    assert not Repository.objects.exists() and not Task.objects.exists()
    assert not get_user_model().objects.exists()
    assert not (settings.VAR_DIR / "demo").exists()


def test_a_free_port_has_no_problem():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert demo.port_problem(port) is None


def test_a_task_left_active_by_an_interrupted_run_is_cancelled_with_the_reason(tmp_path):
    repository = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name=demo.DEMO_REPOSITORY, local_path=str(tmp_path / "gone"))
    left, _ = services.task_create(repository=repository, issue_number=1, title=demo.TITLE)
    other_repo = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="mine", local_path=str(tmp_path))
    mine, _ = services.task_create(repository=other_repo, issue_number=1, title="Not the demo's")
    command = demo.Command()
    command.cancel_leftovers()
    left.refresh_from_db()
    mine.refresh_from_db()
    assert left.status == Task.Status.CANCELLED and "new demo run" in left.status_reason
    assert mine.status == Task.Status.QUEUED


def test_every_turn_of_the_demo_script_is_paced():
    script = demo.paced_script(demo.DEMO_DIR / "script.yaml", 4.0)
    delays = [turn["delay"] for c in script["conversations"] for turn in c["turns"]]
    assert len(delays) == 9 and min(delays) == 4.0
    unpaced = demo.paced_script(demo.DEMO_DIR / "script.yaml", 0)
    assert max(turn.get("delay", 0) for c in unpaced["conversations"] for turn in c["turns"]) < 1


def test_a_negative_pace_is_refused():
    with pytest.raises(CommandError, match="--pace must be >= 0"):
        call_command("demo", pace=-1, inline=True)
