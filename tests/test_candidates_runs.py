"""Best of N (issue 25): candidates running in parallel as stage jobs (threads here, each
`run_stage` as a q2 worker runs it), with small real programs through the `command` provider in
the sandbox: a cancel stops every candidate and leaves no process or worktree; a task budget
they would exceed is refused before start with the arithmetic; a budget reached mid-way stops
all of them; a kill -9 during the selection loses nothing and runs no candidate twice.
The real CLIs are exercised in test_candidates_claude.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from django.db import connection

from pipeline import attempt, jobs, services
from pipeline.models import Stage, StageResult, Task
from tests import conftest
from tests.conftest import ROOT, git, processes_matching, wait_for
from tests.test_coordinator_reaping import database_url

pytestmark = pytest.mark.django_db(transaction=True)

AGENTS = Path(__file__).parent / "agents"
CANDIDATE = str(AGENTS / "candidate_agent.py")
SCRIPTED = str(AGENTS / "scripted_agent.py")
CHECK = 'from greeter import farewell\n\nassert farewell("Ada") == "Goodbye, Ada"\n'


def agent(mode: str, tag: str, *extra: str) -> dict:
    argv = [sys.executable, CANDIDATE, "{prompt}", tag, mode, *extra]
    return {"provider": "command", "timeout": 120, "max_attempts": 1, "options": {"argv": argv}}


def setup(clone: Path, building: dict, *, judge: dict | None = None, **top) -> None:
    stages = [{"name": "building", **building}]
    if judge is not None:
        stages.append({"name": "reviewing", **judge})
    (clone / "check.py").write_text(CHECK)
    workflow = {"stages": stages, "publish": "none", "test_command": {"run": f"{sys.executable} check.py", "timeout": 60}, **top}
    conftest.commit_workflow(clone, yaml.safe_dump(workflow))


def start(repository, issue: int = 5) -> Task:
    task, _ = services.task_create(
        repository=repository, issue_number=issue, title="Add a farewell", body="Please.", trigger_source="cli"
    )
    services.task_dispatch(task=task, enqueue=False)
    return task


def fan_out(task: Task) -> list[Stage]:
    building = task.stages.get(name="building", parent__isnull=True)
    assert attempt.run_stage(building.pk, enqueue_next=False) == attempt.RunResult.FANNED_OUT
    return list(building.candidates.order_by("candidate"))


def run_in_parallel(stages: list[Stage]) -> list[threading.Thread]:
    """Each candidate's stage job in a thread of its own (as q2 workers would run them)."""

    def run(stage_id: int) -> None:
        try:
            attempt.run_stage(stage_id, enqueue_next=False)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(s.pk,)) for s in stages]
    for t in threads:
        t.start()
    return threads


def candidate_dirs(task: Task) -> list[Path]:
    """The candidates' worktrees on disk (each recorded for the clean-up before it was made)."""
    return sorted(Path(p) for p in task.worktrees.values_list("path", flat=True) if Path(p).exists() and p[-3:-1] == "-c")


def test_a_cancel_while_candidates_run_stops_all_of_them_and_leaves_no_process_or_worktree(local_repository, clone):
    tag = f"cand-hang-{uuid.uuid4().hex}"
    setup(clone, {"candidates": 3, **agent("hang", tag)})
    task = start(local_repository)
    children = fan_out(task)
    assert [(c.candidate, c.status) for c in children] == [(1, "queued"), (2, "queued"), (3, "queued")]
    threads = run_in_parallel(children)
    # All three run at once, each one running attempt of its own (a worker row each).
    wait_for(lambda: len(processes_matching(tag)) >= 6, "three candidates and their children", timeout=60)
    assert Stage.objects.filter(parent__task=task, status=Stage.Status.RUNNING).count() == 3
    assert services.task_cancel(task=Task.objects.get(pk=task.pk), reason="cancelled by a test")
    started = time.monotonic()
    for t in threads:
        t.join(timeout=60)
    assert time.monotonic() - started < 30
    assert processes_matching(tag) == []
    assert sorted(Stage.objects.filter(parent__task=task).values_list("status", flat=True)) == ["cancelled"] * 3
    assert sorted(StageResult.objects.filter(task=task).values_list("outcome", flat=True)) == ["cancelled"] * 3
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED
    assert len(candidate_dirs(task)) == 3
    services.task_worktree_remove(task=task)
    assert candidate_dirs(task) == [] and not task.worktrees.filter(removed_at__isnull=True).exists()


def test_a_task_budget_the_candidates_would_exceed_is_refused_before_start_with_the_arithmetic(local_repository, clone):
    # One earlier building attempt of the command provider cost $0.45 (one `spend` step).
    conftest.commit_workflow(
        clone,
        yaml.safe_dump(
            {
                "publish": "none",
                "stages": [
                    {
                        "name": "building",
                        "provider": "command",
                        "options": {"argv": [sys.executable, SCRIPTED, "spend", "1", "0"], "format": "claude-stream-json"},
                    }
                ],
            }
        ),
    )
    earlier = jobs.task_run_inline(task=start(local_repository, issue=4))
    assert earlier.status == Task.Status.SUCCEEDED, earlier.status_reason
    setup(clone, {"candidates": 3, **agent("work", "unused")}, budget={"usd": 1.0})
    task = jobs.task_run_inline(task=start(local_repository))
    assert task.status == Task.Status.BUDGET_EXCEEDED
    assert task.status_reason == (
        "stage building: 3 candidates would exceed the task budget $1.00: $0.00 spent + c1 command ≈$0.45 (mean of 1) + "
        "c2 command ≈$0.45 (mean of 1) + c3 command ≈$0.45 (mean of 1) = $1.35 > $1.00; refused before start"
    )
    assert not Stage.objects.filter(task=task, parent__isnull=False).exists()
    assert not StageResult.objects.filter(task=task).exists()  # nothing ran, nothing was spent


def test_a_budget_reached_mid_way_stops_every_candidate(local_repository, clone):
    tag = f"cand-spend-{uuid.uuid4().hex}"
    spend = {
        "provider": "command",
        "timeout": 120,
        "max_attempts": 1,
        "options": {"argv": [sys.executable, SCRIPTED, "spend", "40", "0.3", tag], "format": "claude-stream-json"},
    }
    setup(clone, {"candidates": 3, **spend}, budget={"usd": 2.0})
    task = start(local_repository)
    threads = run_in_parallel(fan_out(task))
    for t in threads:
        t.join(timeout=90)
    task.refresh_from_db()
    assert task.status == Task.Status.BUDGET_EXCEEDED, task.status_reason
    outcomes = sorted(StageResult.objects.filter(task=task).values_list("outcome", flat=True))
    assert "budget_exceeded" in outcomes and set(outcomes) <= {"budget_exceeded", "cancelled"} and len(outcomes) == 3
    assert Stage.objects.filter(parent__task=task, status=Stage.Status.RUNNING).count() == 0
    assert processes_matching(tag) == []
    # Counted together: each stopped long before its 40 steps ($18); the overshoot past $2 is the
    # meter's: each attempt re-reads the others' spend every budgets.REFRESH_SECONDS.
    assert all(r.cost_usd < 18 for r in StageResult.objects.filter(task=task))
    assert task.cost_usd < 10


def test_a_kill_9_during_the_selection_loses_nothing_and_runs_no_candidate_twice(local_repository, clone, settings, tmp_path):
    tag = f"cand-judge-{uuid.uuid4().hex}"
    # The judge waits for a file the test makes once the first selection was killed.
    release = tmp_path / "signals" / "release"
    release.parent.mkdir()
    settings.TACX = {**settings.TACX, "SANDBOX_ALLOW_READ": [*settings.TACX["SANDBOX_ALLOW_READ"], str(release.parent)]}
    setup(clone, {"candidates": 3, **agent("work", tag), "max_attempts": 2}, judge=agent("judge-wait", tag, str(release)))
    task = start(local_repository)
    for t in run_in_parallel(fan_out(task)):
        t.join(timeout=90)
    parent = Stage.objects.get(task=task, name="building", parent__isnull=True)
    assert parent.status == Stage.Status.QUEUED  # every candidate ended: the selection is next
    # The selection in a process of its own, killed with SIGKILL while the judge works.
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection),
        "TACX_WORKTREE_ROOT": str(settings.TACX["WORKTREE_ROOT"]),
        "TACX_VAR_DIR": str(tmp_path / "var"),
        "TACX_LEASE_SECONDS": "3",
        "TACX_SANDBOX_ALLOW_READ": os.pathsep.join(settings.TACX["SANDBOX_ALLOW_READ"]),
        "DJANGO_SETTINGS_MODULE": "tacx_site.settings",
    }
    code = f"import django; django.setup(); from pipeline import attempt; attempt.run_stage({parent.pk}, enqueue_next=False)"
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True)
    try:
        wait_for(lambda: len(processes_matching(tag)) >= 2, "the judge to run", timeout=60)
        record = wait_for(
            lambda: Stage.objects.get(pk=parent.pk).candidate_info.get("passes", {}).get("first"), "the first step recorded"
        )
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    wait_for(lambda: processes_matching(tag) == [], "the judge to end with its worker", timeout=15)
    release.touch()
    assert record["passing"] == [2, 3] and "chosen" not in record
    # The reaper closes the lost attempt and queues the selection again; it runs here.
    wait_for(
        lambda: services.stage_reap_expired(enqueue=False), "the lease to expire and the reaper to act", timeout=30, interval=0.5
    )
    task = jobs.task_run_inline(task=Task.objects.get(pk=task.pk))
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    parent.refresh_from_db()
    outcomes = list(StageResult.objects.filter(stage=parent).order_by("attempt").values_list("attempt", "outcome"))
    assert outcomes == [(1, "worker_lost"), (2, "succeeded")]
    # No candidate ran twice; the record written before the kill was kept and used.
    assert [StageResult.objects.filter(stage__parent=parent, stage__candidate=k).count() for k in (1, 2, 3)] == [1, 1, 1]
    again = parent.candidate_info["passes"]["first"]
    assert again["candidates"] == record["candidates"]
    assert (again["chosen"], again["rule"], again["reasons"]) == (2, "judge", "c2 documents the function")
    assert "Say goodbye" in git(Path(local_repository.local_path), "show", f"{task.branch}:greeter.py")


def test_when_every_candidate_fails_the_task_fails_with_each_ones_reason(local_repository, clone):
    setup(clone, {"candidates": 3, **agent("all-wrong", "unused")})
    task = start(local_repository)
    for t in run_in_parallel(fan_out(task)):
        t.join(timeout=90)
    task = jobs.task_run_inline(task=Task.objects.get(pk=task.pk))
    assert task.status == Task.Status.FAILED
    assert task.status_reason == (
        "stage building failed: none of the 3 candidates passed: c1 (command): tests failed; c2 (command): tests failed; c3 (command): tests failed"
    )
    selection = StageResult.objects.get(stage__task=task, stage__parent__isnull=True, stage__name="building")
    assert not selection.success and selection.attempt == 1  # permanent: not retried


def test_approval_candidates_waits_after_the_selection_and_a_person_chooses_another(local_repository, clone, client, alice):
    setup(clone, {"candidates": 3, **agent("work", "unused")}, approval="candidates")
    task = start(local_repository)
    for t in run_in_parallel(fan_out(task)):
        t.join(timeout=90)
    task = jobs.task_run_inline(task=Task.objects.get(pk=task.pk))
    # No reviewing stage: the building stage's own provider judged, and chose c2.
    assert task.status == Task.Status.AWAITING_APPROVAL, task.status_reason
    assert task.status_reason.startswith("the choice of candidate c2 awaits approval")
    client.force_login(conftest.grant(alice, "view_task", "approve_task"))
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert 'data-candidate="3">Choose c3</button>' in page and "Choose c1" not in page and "Approve the choice" in page
    client.post(f"/tasks/{task.pk}/candidates/1/choose/")  # c1's tests failed: refused
    assert Stage.objects.get(task=task, parent__isnull=True).candidate_info["passes"]["first"]["chosen"] == 2
    client.post(f"/tasks/{task.pk}/candidates/3/choose/")
    client.post(f"/tasks/{task.pk}/approve/")
    task = jobs.task_run_inline(task=Task.objects.get(pk=task.pk))
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    record = Stage.objects.get(task=task, parent__isnull=True).candidate_info["passes"]["first"]
    assert (record["chosen"], record["rule"], record["applied"], record["approved"]) == (3, "person", 3, "alice")
    assert record["reasons"] == "chosen by alice (the selection had chosen c2 by judge)"
    # The branch was moved (forced: c3 does not descend from c2) to exactly c3's work.
    greeter = git(Path(local_repository.local_path), "show", f"{task.branch}:greeter.py")
    assert 'return f"Goodbye, {name}"' in greeter and "Say goodbye" not in greeter
    assert [StageResult.objects.filter(stage__parent__task=task, stage__candidate=k).count() for k in (1, 2, 3)] == [1, 1, 1]


def test_approval_plan_also_waits_for_the_choice_after_the_selection(local_repository, clone):
    """The issue's override "before pr_creation when `approval: plan` is set": the plan waits,
    then (the candidates run once it is approved) the selection's choice waits too."""
    plan = {"provider": "command", "timeout": 60, "max_attempts": 1}
    plan["options"] = {"argv": [sys.executable, "-c", "open('plan.md', 'w').write('Add farewell().\\n')"]}
    (clone / "check.py").write_text(CHECK)
    workflow = {
        "stages": [{"name": "planning", **plan}, {"name": "building", "candidates": 3, **agent("work", "unused")}],
        "publish": "none",
        "approval": "plan",
        "test_command": {"run": f"{sys.executable} check.py", "timeout": 60},
    }
    conftest.commit_workflow(clone, yaml.safe_dump(workflow))
    task = jobs.task_run_inline(task=start(local_repository))
    assert task.status == Task.Status.AWAITING_APPROVAL and task.status_reason.startswith("the plan awaits approval")
    assert services.awaiting_choice(task) is None  # the plan's gate, not the candidates'
    assert services.rounds.task_approve(task=task, approved_by="alice", enqueue=False)
    for t in run_in_parallel(fan_out(Task.objects.get(pk=task.pk))):
        t.join(timeout=90)
    task = jobs.task_run_inline(task=Task.objects.get(pk=task.pk))
    assert task.status == Task.Status.AWAITING_APPROVAL, task.status_reason
    assert task.status_reason.startswith("the choice of candidate c2 awaits approval")
    assert services.candidate_choose(task=task, k=3, chosen_by="alice") == ""
    assert services.rounds.task_approve(task=task, approved_by="alice", enqueue=False)
    task = jobs.task_run_inline(task=Task.objects.get(pk=task.pk))
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    record = Stage.objects.get(task=task, name="building", parent__isnull=True).candidate_info["passes"]["first"]
    assert (record["chosen"], record["rule"], record["applied"], record["approved"]) == (3, "person", 3, "alice")
    greeter = git(Path(local_repository.local_path), "show", f"{task.branch}:greeter.py")
    assert 'return f"Goodbye, {name}"' in greeter


def test_approval_plan_with_the_skip_label_does_not_wait_for_the_choice(local_repository, clone):
    (clone / "check.py").write_text(CHECK)
    workflow = {
        "stages": [{"name": "building", "candidates": 3, **agent("work", "unused")}],
        "publish": "none",
        "approval": "plan",
        "test_command": {"run": f"{sys.executable} check.py", "timeout": 60},
    }
    conftest.commit_workflow(clone, yaml.safe_dump(workflow))
    task, _ = services.task_create(
        repository=local_repository,
        issue_number=6,
        title="Add a farewell",
        body="Please.",
        trigger_source="cli",
        labels=["rpi-auto-approved"],
    )
    services.task_dispatch(task=task, enqueue=False)
    for t in run_in_parallel(fan_out(task)):
        t.join(timeout=90)
    task = jobs.task_run_inline(task=Task.objects.get(pk=task.pk))
    assert task.status == Task.Status.SUCCEEDED, task.status_reason


def test_a_retry_after_every_candidate_failed_runs_new_candidates(local_repository, clone, settings, tmp_path):
    better = tmp_path / "signals" / "better"
    better.parent.mkdir()
    settings.TACX = {**settings.TACX, "SANDBOX_ALLOW_READ": [*settings.TACX["SANDBOX_ALLOW_READ"], str(better.parent)]}
    setup(clone, {"candidates": 3, **agent("wrong-until", "unused", str(better))})
    task = start(local_repository)
    for t in run_in_parallel(fan_out(task)):
        t.join(timeout=90)
    task = jobs.task_run_inline(task=Task.objects.get(pk=task.pk))
    assert task.status == Task.Status.FAILED and "none of the 3 candidates passed" in task.status_reason
    # The agents get better (c2 and c3 right from now on); the retry must run them, not judge c1..c3 again.
    better.write_text("")
    services.task_retry(task=task, enqueue=False)
    building = Stage.objects.get(task=task, name="building", parent__isnull=True)
    assert building.status == Stage.Status.QUEUED
    assert "first-retired-1" in building.candidate_info["passes"] and "first" not in building.candidate_info["passes"]
    every = fan_out(Task.objects.get(pk=task.pk))
    new = [c for c in every if c.candidate_info["pass"] == "first"]
    assert [c.candidate for c in new] == [4, 5, 6]  # numbered after the old ones: their own branches and worktrees
    assert [(c.candidate, c.candidate_info["pass"]) for c in every[:3]] == [(k, "first-retired-1") for k in (1, 2, 3)]
    for t in run_in_parallel(new):
        t.join(timeout=90)
    task = jobs.task_run_inline(task=Task.objects.get(pk=task.pk))
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    building.refresh_from_db()
    record = building.candidate_info["passes"]["first"]
    assert record["chosen"] in (5, 6) and sorted(r["k"] for r in record["candidates"]) == [4, 5, 6]
    old = building.candidate_info["passes"]["first-retired-1"]
    assert "chosen" not in old and sorted(r["k"] for r in old["candidates"]) == [1, 2, 3]
    # No old candidate ran twice: one attempt each.
    counts = [StageResult.objects.filter(stage__parent__task=task, stage__candidate=k).count() for k in range(1, 7)]
    assert counts == [1] * 6
