"""Run fingerprints: every attempt of a real run (Claude Code plans, Codex builds) records the CLI
version, the model, the SHA-256 of the prompt it was given and the commit it started from."""

from __future__ import annotations

import hashlib

import pytest

from harness.cli_runs import CLAUDE_VERSION, CODEX_VERSION
from pipeline import accounting, jobs, services
from pipeline.models import StageResult, Task
from tests.conftest import commit_workflow, git, point_claude_at

pytestmark = [pytest.mark.cli, pytest.mark.django_db(transaction=True)]

SCRIPT = {
    "conversations": [
        {
            "name": "planning",
            "match": "TACX-STAGE: planning",
            "turns": [
                {"tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n\nAdd NOTES.md.\n"}}], "usage": {"input_tokens": 900, "output_tokens": 40}},
                {"text": "Planned.", "usage": {"input_tokens": 950, "output_tokens": 5}},
            ],
        },
        {
            "name": "building",
            "match": "TACX-STAGE: building",
            "turns": [
                {"tool_calls": [{"bash": "printf 'notes\\n' > NOTES.md"}], "usage": {"input_tokens": 1200, "output_tokens": 60}},
                {"text": "Built.", "usage": {"input_tokens": 1300, "output_tokens": 6}},
            ],
        },
    ]
}


def test_each_attempt_of_a_real_run_records_its_fingerprint(local_repository, origin_and_clone, monkeypatch, start_model_server):
    _, clone = origin_and_clone
    server = start_model_server(SCRIPT)
    point_claude_at(monkeypatch, server, tacx_key=True)
    commit_workflow(
        clone,
        "stages:\n"
        "  - name: planning\n"
        "  - name: building\n"
        "    provider: codex\n"
        "    model: gpt-5\n"
        f"    options: {{base_url: '{server.url}/v1', sandbox: workspace-write}}\n"
        "  - name: pr_creation\n"
    )
    main = git(clone, "rev-parse", "HEAD")
    task, _ = services.task_create(repository=local_repository, issue_number=8, title="Add notes", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)

    task = jobs.task_run_inline(task=task)

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    results = {r.stage.name: r for r in StageResult.objects.filter(task=task).select_related("stage")}
    planning, building, pr = results["planning"], results["building"], results["pr_creation"]
    assert (planning.provider, planning.cli_version, planning.model) == ("claude", CLAUDE_VERSION, "claude-sonnet-4-5")
    assert (building.provider, building.cli_version, building.model) == ("codex", CODEX_VERSION, "gpt-5")
    for result in (planning, building):
        assert result.prompt_hash == hashlib.sha256(result.prompt.encode()).hexdigest()
        assert result.prompt.startswith(f"TACX-STAGE: {result.stage.name}")
    assert planning.prompt_hash != building.prompt_hash
    # Each attempt starts from the commit the previous one left: the planner commits nothing,
    # the builder's change is committed by TAC-X, and pr_creation starts from that commit.
    assert planning.base_commit == building.base_commit == task.base_commit == main
    assert building.head_commit != main and pr.base_commit == building.head_commit
    assert git(clone, "rev-parse", building.head_commit) == building.head_commit  # shared object store: a real commit
    # The selector the task page uses lists them in order.
    assert [(f["stage__name"], f["cli_version"], f["base_commit"]) for f in accounting.task_fingerprints(task)] == [
        ("planning", CLAUDE_VERSION, main),
        ("building", CODEX_VERSION, main),
        ("pr_creation", "", building.head_commit),
    ]
