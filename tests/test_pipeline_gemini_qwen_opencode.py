"""The whole pipeline with the real Gemini CLI, Qwen Code and opencode (from node_modules) against
the scripted model server on loopback: plan.md written by the CLI's own file tool, the change made
and committed by its own shell tool, usage recorded exactly, cost as priced (or as opencode
reported it); and one workflow whose three agent stages use three different CLIs."""

from __future__ import annotations

import copy
import time
from decimal import Decimal

import pytest
import yaml

from harness.cli_runs import CLI_VERSIONS, DUMMY_API_KEY
from harness.modelserver import ScriptedModelServer
from pipeline.lib.pricing import cost_for
from pipeline.models import AgentEvent, Stage, StageResult, Task
from pipeline.providers.base import Usage
from tests.conftest import ROOT, git
from tests.test_pipeline_claude import assert_no_secret_leaked, codex_building, commit_workflow, conversation, run, scripted_sums

pytestmark = [pytest.mark.cli, pytest.mark.django_db(transaction=True)]

DEMO_SCRIPT = yaml.safe_load((ROOT / "demo" / "script.yaml").read_text())
MODELS = {"gemini": "gemini-2.5-pro", "qwen": "qwen3-coder-plus", "opencode": "glm-4.6"}
WRITE_TOOLS = {"gemini": "write_file", "qwen": "write_file", "opencode": "write"}
SHELL_TOOLS = {"gemini": "run_shell_command", "qwen": "run_shell_command", "opencode": "bash"}


@pytest.fixture
def model_server(monkeypatch, start_model_server):
    """Starts the scripted server and points every provider at it through its own variables."""

    def start(script: dict) -> ScriptedModelServer:
        server = start_model_server(script)
        for name, value in {
            "GOOGLE_GEMINI_BASE_URL": server.url,
            "GEMINI_API_KEY": DUMMY_API_KEY,
            "OPENAI_BASE_URL": f"{server.url}/v1",
            "OPENAI_API_KEY": DUMMY_API_KEY,
            "OPENCODE_BASE_URL": f"{server.url}/v1",
            "OPENCODE_API_KEY": DUMMY_API_KEY,
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": DUMMY_API_KEY,
            "TACX_MODEL_API_KEY": DUMMY_API_KEY,
            "GITHUB_TOKEN": "ghp_" + "s3cret" * 6,
        }.items():
            monkeypatch.setenv(name, value)
        return server

    return start


def openai_like_sums(script: dict, name: str) -> dict[str, int]:
    """What the Gemini API and Chat Completions can say of the script's usage: they have no
    cache-write figure, so cache writes are part of the prompt, i.e. ordinary input."""
    sums = scripted_sums(script, name)
    return {**sums, "input_tokens": sums["input_tokens"] + sums["cache_write_tokens"], "cache_write_tokens": 0}


def workflow(provider: str, model: str) -> str:
    stage = f"    provider: {provider}\n    model: {model}\n    timeout: 120\n"
    return "stages:\n" + "".join(f"  - name: {n}\n{stage}" for n in ("planning", "building", "reviewing")) + "  - name: pr_creation\n"


@pytest.mark.parametrize("provider", ["gemini", "qwen", "opencode"])
def test_the_four_stages_run_with_the_real_cli_and_record_exact_usage(provider, local_repository, origin_and_clone, model_server):
    origin, clone = origin_and_clone
    server = model_server(DEMO_SCRIPT)
    commit_workflow(clone, workflow(provider, MODELS[provider]))

    task = run(local_repository)

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    results = {r.stage.name: r for r in StageResult.objects.filter(task=task).select_related("stage")}
    assert list(results) == ["planning", "building", "reviewing", "pr_creation"]
    for name in ("planning", "building", "reviewing"):
        r = results[name]
        expected = openai_like_sums(DEMO_SCRIPT, name)
        assert {k: getattr(r, k) for k in expected} == expected, name
        assert r.turns == len(conversation(DEMO_SCRIPT, name)["turns"]), name
        assert r.provider == provider and r.cli_version == CLI_VERSIONS[provider]
        assert r.session_id
        priced = cost_for(MODELS[provider], Usage(**{k: getattr(r, k) for k in expected}))
        assert priced is not None and priced > 0
        if provider == "opencode":  # opencode's own figure, from the price TAC-X configured
            assert abs(r.cost_usd - priced) < Decimal("0.000001"), name
        else:
            assert r.cost_usd == priced.quantize(r.cost_usd), name
    # plan.md came from the CLI's own file tool; the builder's commit came from its shell tool.
    assert "farewell" in results["planning"].output_text
    calls = AgentEvent.objects.filter(result=results["planning"], kind="tool_call")
    assert any(e.data["name"] == WRITE_TOOLS[provider] for e in calls)
    builds = AgentEvent.objects.filter(result=results["building"], kind="tool_call")
    assert any(e.data["name"] == SHELL_TOOLS[provider] and "git commit" in str(e.data["input"]) for e in builds)
    assert "Add farewell() and tests" in git(origin, "log", "--format=%s", task.branch)
    assert results["reviewing"].verdict == "APPROVE"
    # Only the scripted conversations were played: no auxiliary call consumed a turn.
    assert not [r for r in server.requests if r["overrun"]]
    assert_no_secret_leaked(task)


def test_one_workflow_with_three_providers_gemini_plans_codex_builds_claude_reviews(local_repository, origin_and_clone, model_server):
    origin, clone = origin_and_clone
    script = copy.deepcopy(DEMO_SCRIPT)
    server = model_server(script)
    planning = "\nstages:\n  - name: planning\n    provider: gemini\n    model: gemini-2.5-pro\n"
    reviewing = "  - name: reviewing\n    provider: claude\n    model: claude-sonnet-4-5\n  - name: pr_creation\n"
    commit_workflow(clone, planning + codex_building(server, "danger-full-access") + reviewing)

    task = run(local_repository)

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    results = {r.stage.name: r for r in StageResult.objects.filter(task=task).select_related("stage")}
    assert [(n, results[n].provider) for n in ("planning", "building", "reviewing")] == [
        ("planning", "gemini"),
        ("building", "codex"),
        ("reviewing", "claude"),
    ]
    assert results["planning"].cli_version == CLI_VERSIONS["gemini"]
    assert results["building"].cli_version.endswith(CLI_VERSIONS["codex"])
    assert results["reviewing"].cli_version.startswith(CLI_VERSIONS["claude"])
    assert {r["api"] for r in server.requests} >= {"gemini", "openai", "anthropic"}
    plan = openai_like_sums(script, "planning")
    assert (results["planning"].input_tokens, results["planning"].cache_read_tokens) == (plan["input_tokens"], plan["cache_read_tokens"])
    review = scripted_sums(script, "reviewing")
    assert {k: getattr(results["reviewing"], k) for k in review} == review
    assert results["reviewing"].verdict == "APPROVE"
    assert "def farewell" in git(origin, "show", f"{task.branch}:greeter.py")
    assert task.cost_usd == sum(r.cost_usd for r in results.values())


@pytest.mark.parametrize("provider", ["gemini", "qwen", "opencode"])
def test_an_authentication_failure_fails_the_stage_in_seconds_without_a_retry(provider, local_repository, origin_and_clone, model_server):
    _, clone = origin_and_clone
    model_server({"conversations": [{"name": "any", "turns": [{"status": 401, "error_message": "API key not valid"}]}]})
    commit_workflow(clone, f"stages:\n  - name: planning\n    provider: {provider}\n    model: {MODELS[provider]}\n  - name: pr_creation\n")

    started = time.monotonic()
    task = run(local_repository)
    elapsed = time.monotonic() - started

    result = StageResult.objects.get(task=task)
    assert task.status == Task.Status.FAILED
    assert result.error.startswith("agent could not authenticate (HTTP 401 from the model API)")
    assert result.cli_version == CLI_VERSIONS[provider]
    assert Stage.objects.get(task=task, name="planning").attempts == 1  # permanent: not retried
    assert elapsed < 30, f"took {elapsed:.1f} s"


def test_one_workflow_with_the_three_new_clis_opencode_plans_qwen_builds_gemini_reviews(local_repository, origin_and_clone, model_server):
    origin, clone = origin_and_clone
    server = model_server(DEMO_SCRIPT)
    stages = {"planning": "opencode", "building": "qwen", "reviewing": "gemini"}
    commit_workflow(clone, "stages:\n" + "".join(f"  - name: {s}\n    provider: {p}\n    model: {MODELS[p]}\n" for s, p in stages.items()) + "  - name: pr_creation\n")

    task = run(local_repository)

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    results = {r.stage.name: r for r in StageResult.objects.filter(task=task).select_related("stage")}
    for stage, provider in stages.items():
        r = results[stage]
        assert (r.provider, r.cli_version) == (provider, CLI_VERSIONS[provider])
        expected = openai_like_sums(DEMO_SCRIPT, stage)
        assert {k: getattr(r, k) for k in expected} == expected, stage
    assert {r["api"] for r in server.requests} == {"openai-chat", "gemini"}
    assert "Add farewell() and tests" in git(origin, "log", "--format=%s", task.branch)
    assert results["reviewing"].verdict == "APPROVE"
