"""A repository's memory with the real `claude` CLI against the scripted model server (issue 27,
section 4): task 1's agent leaves a note in .tacx/memory.md with its Bash tool, TAC-X takes it
through the hand-back gate as a proposal, a maintainer accepts it through the API, and task 2's
recorded prompt carries it, as the model received it (the server picks the conversation whose
`match` is the note's text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli_runs import CLAUDE_BIN
from pipeline import jobs, services
from pipeline.models import AgentEvent, MemoryEntry, StageResult, Task
from tests.conftest import commit_workflow, needs_cli, point_claude_at

pytestmark = [*needs_cli(CLAUDE_BIN), pytest.mark.django_db(transaction=True)]

NOTE = "The greeter tests run with python -m pytest -q tests/ from the repository root."
USAGE = {"input_tokens": 900, "output_tokens": 40}
SCRIPT = {
    "conversations": [
        # Only a prompt that carries the note selects this conversation.
        {
            "name": "remembered",
            "match": NOTE,
            "turns": [
                {"tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n\nAdd farewell(); test it with python -m pytest -q tests/.\n"}}], "usage": USAGE},
                {"text": "Planned with what the memory says.", "usage": USAGE},
            ],
        },
        {
            "name": "planning",
            "match": "TACX-STAGE: planning",
            "turns": [
                {"tool_calls": [{"bash": f"mkdir -p .tacx && printf '%s\\n' '# Notes' '- {NOTE}' > .tacx/memory.md"}], "usage": USAGE},
                {"tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n\nAdd farewell().\n"}}], "usage": USAGE},
                {"text": "Planned; left a note for later tasks.", "usage": USAGE},
            ],
        },
    ]
}


def run(repository, number: int) -> Task:
    task, _ = services.task_create(repository=repository, issue_number=number, title="Add a farewell", body="Please add farewell(name).", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    return task


def test_a_note_task_1_leaves_reaches_task_2_s_model_once_a_maintainer_accepts_it(local_repository, origin_and_clone, start_model_server, monkeypatch, api):
    _, clone = origin_and_clone
    server = start_model_server(SCRIPT)
    point_claude_at(monkeypatch, server)
    commit_workflow(clone, "publish: none\nstages:\n  - name: planning\n")

    first = run(local_repository, 51)
    entry = MemoryEntry.objects.get()
    planning = StageResult.objects.get(task=first)
    assert (entry.text, entry.status, entry.source_task_id, entry.source_result_id) == (NOTE, "proposed", first.pk, planning.pk)
    assert entry.proposer == "agent (claude, planning attempt 1)"
    assert "LEAVING NOTES FOR LATER TASKS" in planning.prompt and planning.memory_entries == []
    assert not (Path(first.worktree_path) / ".tacx" / "memory.md").exists()  # taken and removed
    assert AgentEvent.objects.filter(result=planning, kind="tool_call", data__name="Bash").exists()
    assert not any(r["conversation"] == "remembered" for r in server.requests)

    assert api.post(f"/api/memory/{entry.pk}/accept/").json()["status"] == "accepted"

    second = run(local_repository, 52)
    result = StageResult.objects.get(task=second)
    assert result.memory_entries == [entry.pk]
    assert f'memory entry="{entry.pk}">\n{NOTE}\n</untrusted-' in result.prompt
    assert [r["turn"] for r in server.requests if r["conversation"] == "remembered"] == [0, 1]
    assert "Add farewell(); test it with python -m pytest -q tests/." in result.output_text
