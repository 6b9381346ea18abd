"""The whole pipeline with the real agent CLIs (Claude Code, Codex) against the scripted model
server on loopback: real tool calls in a real worktree, a real bare origin, the real database."""

from __future__ import annotations

import copy
import time

import pytest
import yaml
from django.core.management import call_command

from harness.cli_runs import DUMMY_API_KEY
from harness.modelserver import ScriptedModelServer
from pipeline import jobs, services
from pipeline.models import AgentEvent, Stage, StageResult, Task
from tests.conftest import ROOT, commit_workflow, git, point_claude_at

pytestmark = [pytest.mark.cli, pytest.mark.django_db(transaction=True)]

DEMO_SCRIPT = yaml.safe_load((ROOT / "demo" / "script.yaml").read_text())
USAGE_MAP = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_input_tokens",
    "cache_write_tokens": "cache_creation_input_tokens",
}


def conversation(script: dict, name: str) -> dict:
    return next(c for c in script["conversations"] if c["name"] == name)


def scripted_sums(script: dict, name: str) -> dict[str, int]:
    turns = conversation(script, name)["turns"]
    return {ours: sum(t.get("usage", {}).get(theirs, 0) for t in turns) for ours, theirs in USAGE_MAP.items()}


@pytest.fixture
def model_server(monkeypatch, start_model_server):
    def start(script: dict) -> ScriptedModelServer:
        server = start_model_server(script)
        point_claude_at(monkeypatch, server, tacx_key=True)
        monkeypatch.setenv("GITHUB_TOKEN", "ghp_" + "s3cret" * 6)
        return server

    return start


def assert_no_secret_leaked(task: Task) -> None:
    """Neither the model key nor the forge token (``model_server``'s) reached a transcript or a prompt."""
    for event in AgentEvent.objects.filter(task=task):
        assert DUMMY_API_KEY not in str(event.data) and "s3cret" not in str(event.data)


def codex_building(server: ScriptedModelServer, sandbox: str) -> str:
    """A workflow's building stage by Codex (gpt-5) against the scripted ``server``, in its ``sandbox`` mode."""
    return f"""  - name: building
    provider: codex
    model: gpt-5
    timeout: 120
    options: {{base_url: "{server.url}/v1", sandbox: {sandbox}}}
"""


def run(repository, *, title: str = "Add a farewell", body: str = "Please add farewell(name).") -> Task:
    task, created = services.task_create(repository=repository, issue_number=42, title=title, body=body, trigger_source="cli")
    assert created
    services.task_dispatch(task=task, enqueue=False)
    return jobs.task_run_inline(task=task)


def test_the_four_stages_run_with_the_real_claude_cli_and_record_exact_usage(local_repository, origin_and_clone, model_server):
    origin, _ = origin_and_clone
    model_server(DEMO_SCRIPT)
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason

    results = {r.stage.name: r for r in StageResult.objects.filter(task=task).select_related("stage")}
    assert list(results) == ["planning", "building", "reviewing", "pr_creation"]
    assert all(r.success and r.outcome == "succeeded" for r in results.values())
    for name in ("planning", "building", "reviewing"):
        r = results[name]
        expected = scripted_sums(DEMO_SCRIPT, name)
        assert {k: getattr(r, k) for k in expected} == expected, name
        assert r.turns == len(conversation(DEMO_SCRIPT, name)["turns"])
        assert r.cost_usd > 0 and r.session_id and r.cli_version.startswith("2.1.197")
    # plan.md was written by the CLI's Write tool and stored; the review verdict was read.
    assert "farewell" in results["planning"].output_text
    assert results["reviewing"].verdict == "APPROVE"
    # Tool calls of the real CLI are in the transcript, with their inputs.
    calls = AgentEvent.objects.filter(result=results["planning"], kind="tool_call")
    assert any(e.data["name"] == "Write" and e.data["input"]["file_path"].endswith("plan.md") for e in calls)
    # The builder's Bash commit reached the bare origin on the task's branch.
    log = git(origin, "log", "--format=%s", task.branch)
    assert "Add farewell() and tests" in log
    assert "def farewell" in git(origin, "show", f"{task.branch}:greeter.py")
    # Task totals are the sum of its attempts; the PR body carries the per-stage table.
    assert task.input_tokens == sum(r.input_tokens for r in results.values())
    body = results["pr_creation"].output_text
    assert "Closes #" not in body and "APPROVE" in body and "| building |" in body
    assert_no_secret_leaked(task)


def test_two_providers_in_one_workflow_claude_plans_and_codex_builds(local_repository, origin_and_clone, model_server):
    origin, clone = origin_and_clone
    script = copy.deepcopy(DEMO_SCRIPT)
    # Codex's shell cannot commit inside its sandbox; TAC-X commits what the builder leaves.
    building = conversation(script, "building")
    building["turns"] = [building["turns"][0], building["turns"][2]]
    server = model_server(script)
    commit_workflow(clone, "\nstages:\n  - name: planning\n" + codex_building(server, "workspace-write") + "  - name: reviewing\n  - name: pr_creation\n")
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    build = StageResult.objects.get(task=task, stage__name="building")
    assert build.provider == "codex" and build.cli_version.endswith("0.169.0")
    expected = scripted_sums(script, "building")
    assert (build.input_tokens, build.output_tokens, build.cache_read_tokens) == (
        expected["input_tokens"],
        expected["output_tokens"],
        expected["cache_read_tokens"],
    )
    assert build.cost_usd > 0  # from the price table: Codex reports no cost
    assert "def farewell" in git(origin, "show", f"{task.branch}:greeter.py")
    assert any(r["api"] == "openai" for r in server.requests)


def test_a_review_that_requests_changes_sends_the_task_back_to_building_once(local_repository, model_server):
    script = copy.deepcopy(DEMO_SCRIPT)
    rejecting = copy.deepcopy(conversation(script, "reviewing"))
    rejecting["name"], rejecting["match"] = "reviewing-1", "TACX-STAGE: reviewing\n"
    rejecting["turns"][1]["tool_calls"][0]["write"]["content"] = "# Review\n\nfarewell() lacks a docstring.\n\nVERDICT: REQUEST_CHANGES\n"
    rebuild = {
        "name": "building-2",
        "match": "TACX-STAGE: building (round 2)",
        "turns": [
            {"tool_calls": [{"bash": "sed -i 's/^def farewell(name: str) -> str:/&\\n    \"\"\"Say goodbye.\"\"\"/' greeter.py"}], "usage": {"input_tokens": 700, "output_tokens": 70}},
            {"text": "Docstring added.", "usage": {"input_tokens": 800, "output_tokens": 8}},
        ],
    }
    script["conversations"] = [rebuild, rejecting] + script["conversations"]
    model_server(script)
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    rows = list(StageResult.objects.filter(task=task).order_by("id").values_list("stage__name", "round", "verdict"))
    assert rows == [
        ("planning", 1, ""),
        ("building", 1, ""),
        ("reviewing", 1, "REQUEST_CHANGES"),
        ("building", 2, ""),
        ("reviewing", 2, "APPROVE"),
        ("pr_creation", 2, ""),
    ]
    second_build = StageResult.objects.get(task=task, stage__name="building", round=2)
    assert "farewell() lacks a docstring." in second_build.prompt
    assert second_build.input_tokens == 1500


def test_an_authentication_failure_fails_the_stage_in_seconds(local_repository, model_server):
    script = {"conversations": [{"name": "any", "turns": [{"status": 401, "error_message": "invalid x-api-key"}]}]}
    model_server(script)
    started = time.monotonic()
    task = run(local_repository)
    elapsed = time.monotonic() - started
    result = StageResult.objects.get(task=task)
    assert "could not authenticate" in result.error
    assert task.status == Task.Status.FAILED
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert Stage.objects.get(task=task, name="planning").attempts == 1  # permanent: not retried


def test_the_turn_limit_is_a_clear_failure(local_repository, origin_and_clone, model_server):
    _, clone = origin_and_clone
    model_server(DEMO_SCRIPT)
    commit_workflow(clone, "stages:\n  - name: planning\n    max_turns: 1\n    max_attempts: 1\n  - name: pr_creation\n")
    task = run(local_repository)
    result = StageResult.objects.get(task=task)
    assert not result.success and result.exit_code == 1
    assert "turn limit" in result.error
    assert result.input_tokens > 0  # the usage spent before the limit is still recorded


def test_run_task_exit_status_output_and_database_agree(local_repository, model_server, capsys):
    """Regression: the predecessor printed "Pipeline failed at stage 'planning'" while plan.md
    existed, because the stage result was never stored."""
    model_server(DEMO_SCRIPT)
    call_command("run_task", repo=local_repository.local_path, title="Add a farewell", body="Please.")
    out = capsys.readouterr().out
    task = Task.objects.get(trigger_source="cli")
    assert task.status == Task.Status.SUCCEEDED
    assert StageResult.objects.filter(task=task, stage__name="planning", success=True).exists()
    assert f"Task {task.pk} succeeded" in out
    assert "planning" in out and "failed" not in out


def test_run_task_exits_non_zero_when_a_stage_fails(local_repository, model_server, capsys):
    model_server({"conversations": [{"name": "any", "turns": [{"text": "I will not write a plan."}]}]})
    with pytest.raises(SystemExit) as exit_info:
        call_command("run_task", repo=local_repository.local_path, title="Add a farewell", quiet_progress=True)
    assert exit_info.value.code == 1
    task = Task.objects.get(trigger_source="cli")
    assert task.status == Task.Status.FAILED
    assert "plan.md is missing" in capsys.readouterr().err


def test_a_hanging_claude_is_killed_at_its_timeout_and_no_process_of_its_group_survives(local_repository, origin_and_clone, model_server):
    from pipeline.agent_process import group_alive
    from pipeline.models import Worker

    _, clone = origin_and_clone
    model_server({"conversations": [{"name": "any", "turns": [{"hang": True}]}]})
    commit_workflow(clone, "stages:\n  - name: planning\n    timeout: 3\n    max_attempts: 1\n  - name: pr_creation\n")
    started = time.monotonic()
    task = run(local_repository)
    result = StageResult.objects.get(task=task)
    assert (result.outcome, result.error) == ("timed_out", "timed out after 3 s")
    assert time.monotonic() - started < 20
    worker = Worker.objects.get(stage__task=task)
    assert worker.pgid and not group_alive(worker.pgid)
    assert worker.exited_at is not None
