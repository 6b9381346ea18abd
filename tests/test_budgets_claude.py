"""A stage budget stops the real Claude Code CLI mid-run: the scripted model server reports known
usage per turn, the meter prices it live, and the first usage event that reaches the budget
kills the agent's process group; the work done so far is committed and pushed."""

from __future__ import annotations

import pytest

from harness.modelserver import ScriptedModelServer
from pipeline import jobs, services
from pipeline.agent_process import group_alive
from pipeline.lib.pricing import cost_for
from pipeline.models import StageResult, Task, Worker
from pipeline.providers import Usage
from tests.conftest import commit_workflow, git, point_claude_at

pytestmark = [pytest.mark.cli, pytest.mark.django_db(transaction=True)]

MODEL = "claude-sonnet-4-5"
TURN_USAGE = {"input_tokens": 100_000, "output_tokens": 10_000}
TURN_COST = cost_for(MODEL, Usage(input_tokens=100_000, output_tokens=10_000))  # $0.45
BUDGET = "1.00"  # after turn 2 $0.90 is spent; turn 3's input alone brings it to $1.20
SCRIPT = {
    "conversations": [
        {
            "name": "planning",
            "turns": [
                {"text": "Step one.", "tool_calls": [{"bash": "echo one > one.txt"}], "usage": TURN_USAGE, "delay": 0.1},
                {"text": "Step two.", "tool_calls": [{"bash": "echo two > two.txt"}], "usage": TURN_USAGE, "delay": 0.1},
                # Streamed slowly: the agent is killed before this tool call is complete.
                {"text": "Step three.", "tool_calls": [{"bash": "echo three > three.txt"}], "usage": TURN_USAGE, "stream_delay": 0.2},
                {"text": "Done.", "usage": TURN_USAGE},
            ],
        }
    ]
}


@pytest.fixture
def model_server(monkeypatch, start_model_server):
    def start(script: dict) -> ScriptedModelServer:
        server = start_model_server(script)
        point_claude_at(monkeypatch, server)
        return server

    return start


def test_a_stage_budget_stops_the_real_cli_within_one_usage_event(local_repository, origin_and_clone, model_server):
    origin, clone = origin_and_clone
    server = model_server(SCRIPT)
    commit_workflow(clone, f"stages:\n  - name: planning\n    model: {MODEL}\n    budget: {{usd: {BUDGET}}}\n  - name: pr_creation\n")
    task, _ = services.task_create(repository=local_repository, issue_number=7, title="Spend money", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)

    task = jobs.task_run_inline(task=task)

    result = StageResult.objects.get(task=task)
    assert result.outcome == "budget_exceeded" and not result.success
    # Stopped on the event that crossed the line: at least the budget, less than one more turn.
    budget = TURN_COST.__class__(BUDGET)
    assert budget <= result.cost_usd < budget + TURN_COST, result.cost_usd
    assert result.input_tokens == 300_000  # turn 3 had started (its input is known), no turn 4
    assert result.error.startswith("budget exceeded: stage budget $1.00 reached ($1.20")
    assert task.status == Task.Status.BUDGET_EXCEEDED
    assert task.status_reason.startswith("stage planning: budget exceeded: stage budget $1.00 reached")
    assert task.cost_usd == result.cost_usd
    # The work done so far is on the branch in the origin; the third command never ran.
    assert git(origin, "show", f"{task.branch}:one.txt") == "one"
    assert git(origin, "show", f"{task.branch}:two.txt") == "two"
    assert "three.txt" not in git(origin, "ls-tree", "--name-only", task.branch)
    assert "budget ran out" in git(origin, "log", "-1", "--format=%s", task.branch)
    # Nothing of the agent's process group survives, and the model saw no fourth request.
    worker = Worker.objects.get(stage__task=task)
    assert worker.pgid and not group_alive(worker.pgid)
    assert max(r["turn"] for r in server.requests if r["turn"] is not None) == 2
