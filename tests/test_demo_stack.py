"""The README's main command: the whole stack (daphne, a django-q2 cluster, the coordinator under
honcho) takes the demo task through every stage with the real claude CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.cli]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_demo_runs_a_task_through_every_stage_on_the_whole_stack(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    } | {"TACX_VAR_DIR": str(tmp_path / "var"), "TACX_WORKTREE_ROOT": str(tmp_path / "trees")}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    proc = subprocess.run(
        [*manage, "demo", "--exit-when-done", "--pace", "0", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "Admin login created: admin / " in out
    for stage in ("planning", "building", "reviewing", "pr_creation"):
        assert f"  {stage}" in out and "succeeded" in out
    assert "Task 1 succeeded" in out
    password = out.split("Admin login created: admin / ")[1].split()[0]
    assert f"as admin / {password}" in out.split("Task 1 succeeded")[1]  # the login again, at the end
    assert "GET /" not in out + proc.stderr  # no access log by default
    # A second run reuses the admin and does not print a password again.
    again = subprocess.run(
        [*manage, "demo", "--exit-when-done", "--pace", "0", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Admin login created" not in again.stdout and "Task 2 succeeded" in again.stdout


def test_the_github_demo_goes_from_a_labelled_issue_to_a_draft_pr_and_a_review_round(tmp_path):
    """`manage.py demo --github`: the stand-in on loopback plays GitHub; the stack's coordinator
    polls it for the labelled issue, opens a draft PR, and turns a review into a round that
    pushes a new commit to the same branch."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "GITHUB_TOKEN", "GITHUB_API_URL")
    } | {"TACX_VAR_DIR": str(tmp_path / "var"), "TACX_WORKTREE_ROOT": str(tmp_path / "trees")}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    proc = subprocess.run(
        [*manage, "demo", "--github", "--exit-when-done", "--pace", "0", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "issue #1 opened on tacx-demo/greeter and labelled 'rpi-auto' by you" in out
    assert "Task 1 created from issue #1 by the coordinator's poll." in out
    assert "Task 1 succeeded" in out
    assert "Draft pull request #2 opened on the stand-in" in out
    act_two = out.split("reviewed PR #2")[1]
    assert "Round 1 (review) started" in act_two and "Round 1 succeeded" in act_two
    assert "  building     succeeded" in act_two  # the round's own building attempt
    assert "TAC-X replied on the review thread:" in act_two
    # The round's commit answers the review and sits on the task's branch in the origin.
    (origin,) = (tmp_path / "var" / "demo").glob("*/origin.git")
    log = subprocess.run(["git", "log", "--format=%s", "tacx/1-add-a-farewell-to-the-greeter"], cwd=origin, capture_output=True, text=True, check=True).stdout
    assert log.splitlines()[0] == "Address review: greet_all()"
    assert "Add farewell() and tests" in log
    # --github needs the stack: refused before anything starts.
    refused = subprocess.run([*manage, "demo", "--github", "--inline"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--github needs the stack" in refused.stderr
