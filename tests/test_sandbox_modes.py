"""TACX_SANDBOX: `required` never starts an agent unsandboxed (a missing or broken sandbox fails the
attempt at once, permanently, naming what is missing); `off` runs agents unsandboxed and says so
everywhere (/health, the dashboard banner, the transcript, the PR body). And whatever an agent
starts dies with its attempt."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from pipeline import jobs, sandbox, services
from pipeline.models import AgentEvent, Stage, StageResult, Task
from tests import conftest
from tests.conftest import processes_matching

pytestmark = [pytest.mark.django_db(transaction=True)]


def commit_workflow(clone: Path, planning_argv: list[str]) -> None:
    conftest.commit_workflow(
        clone,
        f"stages:\n  - name: planning\n    provider: command\n    options: {{argv: {json.dumps(planning_argv)}}}\n  - name: pr_creation\n"
    )


def run(repository) -> Task:
    task, _ = services.task_create(repository=repository, issue_number=5, title="Do it", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return jobs.task_run_inline(task=task)


def escaping_planner(outside: Path) -> list[str]:
    """A planner that writes plan.md and also a file outside its worktree."""
    code = f"import pathlib; pathlib.Path({str(outside)!r}).write_text('escaped'); pathlib.Path('plan.md').write_text('# Plan\\n')"
    return [sys.executable, "-c", code]


@pytest.fixture(autouse=True)
def _fresh_probe():
    sandbox._probed.clear()
    yield
    sandbox._probed.clear()


def test_required_with_bubblewrap_missing_fails_the_attempt_at_once_and_never_starts_the_agent(local_repository, origin_and_clone, tmp_path, settings):
    _, clone = origin_and_clone
    outside = tmp_path / "escaped.txt"
    commit_workflow(clone, escaping_planner(outside))
    settings.TACX = {**settings.TACX, "SANDBOX_BWRAP": str(tmp_path / "no-such-bwrap")}
    task = run(local_repository)
    assert task.status == Task.Status.FAILED
    planning = Stage.objects.get(task=task, name="planning")
    assert planning.attempts == 1  # permanent: not retried
    assert "agent sandbox cannot be set up: missing bwrap (Debian package bubblewrap)" in planning.error
    assert "TACX_SANDBOX=off" in planning.error
    assert not outside.exists()
    assert not AgentEvent.objects.filter(task=task, kind="system", data__subtype="sandbox").exists()


def test_required_with_bubblewrap_unable_to_make_namespaces_fails_with_its_message(local_repository, origin_and_clone, tmp_path, settings):
    _, clone = origin_and_clone
    outside = tmp_path / "escaped.txt"
    commit_workflow(clone, escaping_planner(outside))
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    settings.TACX = {**settings.TACX, "SANDBOX_BWRAP": str(broken)}
    task = run(local_repository)
    planning = Stage.objects.get(task=task, name="planning")
    assert task.status == Task.Status.FAILED and planning.attempts == 1
    assert "cannot create namespaces here: bwrap: No permissions to create new namespace" in planning.error
    assert not outside.exists()


def test_health_is_unhealthy_when_the_required_sandbox_cannot_be_set_up(client, settings, tmp_path):
    settings.TACX = {**settings.TACX, "SANDBOX_BWRAP": str(tmp_path / "no-such-bwrap")}
    body = client.get("/health").json()
    assert body["sandbox"] == {"mode": "required", "ok": False}
    assert body["status"] == "unhealthy"


def test_off_runs_the_agent_unsandboxed_and_says_so_everywhere(local_repository, origin_and_clone, tmp_path, settings, client, alice):
    _, clone = origin_and_clone
    outside = tmp_path / "escaped.txt"
    commit_workflow(clone, escaping_planner(outside))
    settings.TACX = {**settings.TACX, "SANDBOX": "off"}
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert outside.read_text() == "escaped"  # nothing contained it: that is what off means
    (start,) = AgentEvent.objects.filter(task=task, kind="system", data__subtype="sandbox")
    assert start.data["mode"] == "off"
    body = StageResult.objects.get(task=task, stage__name="pr_creation").output_text
    assert "ran **without the sandbox**" in body
    assert client.get("/health").json()["sandbox"] == {"mode": "off", "ok": True}
    client.force_login(alice)
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "Agents run without the sandbox" in page and "sandbox</div>" in page


def test_required_runs_sandboxed_and_shows_no_banner(local_repository, origin_and_clone, tmp_path, client, alice):
    _, clone = origin_and_clone
    outside = tmp_path / "escaped.txt"
    commit_workflow(clone, escaping_planner(outside))
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    # The write outside the worktree went into the sandbox's own throwaway tmpfs, not the host.
    assert not outside.exists()
    (start,) = AgentEvent.objects.filter(task=task, kind="system", data__subtype="sandbox")
    assert start.data["mode"] == "required"
    client.force_login(alice)
    assert "Agents run without the sandbox" not in client.get("/").content.decode()


def test_a_process_the_agent_detaches_with_setsid_dies_with_the_attempt(local_repository, origin_and_clone):
    _, clone = origin_and_clone
    tag = f"600.{os.getpid()}"
    script = f"setsid sleep {tag} </dev/null >/dev/null 2>&1 & sleep 0.5; printf '# Plan\\n' > plan.md; echo planned"
    commit_workflow(clone, ["/bin/bash", "-c", script])
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert StageResult.objects.get(task=task, stage__name="planning").output_text.startswith("# Plan")
    assert processes_matching(tag) == []


def test_a_read_only_path_that_holds_the_worktree_root_leaves_the_worktree_writable(local_repository, origin_and_clone, settings, tmp_path):
    """srt binds read paths after write paths: an operator's TACX_SANDBOX_ALLOW_READ entry that
    contains the worktree root must not make the worktree read-only."""
    _, clone = origin_and_clone
    outside = tmp_path / "escaped.txt"
    commit_workflow(clone, escaping_planner(outside))
    settings.TACX = {**settings.TACX, "SANDBOX_ALLOW_READ": [*settings.TACX["SANDBOX_ALLOW_READ"], str(tmp_path)]}
    assert str(settings.TACX["WORKTREE_ROOT"]).startswith(str(tmp_path))
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert StageResult.objects.get(task=task, stage__name="planning").output_text.startswith("# Plan")
    assert not outside.exists()  # readable is not writable
