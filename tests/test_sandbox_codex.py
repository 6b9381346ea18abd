"""Codex inside TAC-X's sandbox, with Debian's bubblewrap on PATH (put there explicitly, so the
result does not depend on the machine): codex runs with danger-full-access inside ours and its
shell commands run. Outside it, codex 0.169's own sandbox can silently run nothing and exit 0
(measured here: workspace-write, bubblewrap on PATH, CODEX_HOME under TMPDIR; it warns "could not
create PATH aliases" on stderr and, in some runs but not all, emits no command item at all): the
provider turns that shape into a failed attempt that says why. Because the real CLI does not
fail the same way every time, that shape is tested on its recorded stream."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.modelserver import ScriptedModelServer
from pipeline import jobs, sandbox
from pipeline.providers.base import Invocation
from pipeline.providers.codex import CodexStreamParser
from tests.conftest import commit_workflow, git, point_claude_at


@pytest.fixture
def bwrap_on_path(tmp_path, monkeypatch) -> Path:
    """A PATH whose first directory holds `bwrap` (the one the sandbox itself uses)."""
    real = sandbox.tools().bwrap
    bin_dir = tmp_path / "bin-with-bwrap"
    bin_dir.mkdir()
    (bin_dir / "bwrap").symlink_to(real)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which("bwrap") == str(bin_dir / "bwrap")
    return bin_dir


@pytest.mark.cli
@pytest.mark.django_db(transaction=True)
def test_codex_builds_inside_tacx_sandbox_with_bubblewrap_on_path(local_repository, origin_and_clone, bwrap_on_path, monkeypatch):
    from pipeline import services
    from pipeline.models import AgentEvent, StageResult, Task

    origin, clone = origin_and_clone
    script = {
        "conversations": [
            {"name": "planning", "match": "TACX-STAGE: planning", "turns": [
                {"text": "Plan.", "tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n\nAdd NOTES.md.\n"}}]},
                {"text": "Planned."},
            ]},
            {"name": "building", "match": "TACX-STAGE: building", "turns": [
                {"text": "Building.", "tool_calls": [{"bash": "printf 'made by codex\\n' > NOTES.md && echo created"}]},
                {"text": "Built."},
            ]},
        ]
    }
    with ScriptedModelServer(script) as server:
        point_claude_at(monkeypatch, server, tacx_key=True)
        commit_workflow(
            clone,
            "stages:\n  - name: planning\n    provider: claude\n    model: claude-sonnet-4-5\n"
            f"  - name: building\n    provider: codex\n    model: gpt-5\n    timeout: 120\n"
            f"    options: {{base_url: '{server.url}/v1', sandbox: workspace-write}}\n  - name: pr_creation\n"
        )
        task, _ = services.task_create(repository=local_repository, issue_number=4, title="Notes", trigger_source="cli")
        services.task_dispatch(task=task, enqueue=False)
        task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    build = StageResult.objects.get(task=task, stage__name="building")
    results = AgentEvent.objects.filter(result=build, kind="tool_result")
    assert [r.data.get("exit_code") for r in results] == [0]
    assert git(origin, "show", f"{task.branch}:NOTES.md") == "made by codex"


def feed(parser: CodexStreamParser, lines: list[str]) -> None:
    for line in lines:
        parser.feed(line)


TURN = '{"type":"turn.completed","usage":{"input_tokens":10,"output_tokens":2}}'


def test_a_command_codex_declined_fails_the_attempt():
    parser = CodexStreamParser(Invocation(prompt="x", cwd="/", sandboxed=True))
    feed(parser, [
        '{"type":"item.started","item":{"id":"c1","type":"command_execution","command":"make","status":"in_progress"}}',
        '{"type":"item.completed","item":{"id":"c1","type":"command_execution","command":"make","status":"declined","exit_code":null}}',
        TURN,
    ])
    outcome = parser.finish(exit_code=0)
    assert not outcome.success and "never ran (codex's sandbox refused it): make" in outcome.error


def test_a_command_that_never_finished_fails_the_attempt():
    parser = CodexStreamParser(Invocation(prompt="x", cwd="/", sandboxed=True))
    feed(parser, ['{"type":"item.started","item":{"id":"c1","type":"command_execution","command":"sleep 9","status":"in_progress"}}', TURN])
    outcome = parser.finish(exit_code=0)
    assert not outcome.success and "never finished: sleep 9" in outcome.error


def test_the_helper_warning_only_counts_when_codex_used_its_own_sandbox():
    warning = "WARNING: proceeding, even though we could not create PATH aliases: Refusing to create helper binaries"
    for inv, ok in (
        (Invocation(prompt="x", cwd="/", sandboxed=True), True),
        (Invocation(prompt="x", cwd="/", options={"sandbox": "danger-full-access"}), True),
        (Invocation(prompt="x", cwd="/", options={"sandbox": "workspace-write"}), False),
    ):
        parser = CodexStreamParser(inv)
        feed(parser, ['{"type":"item.completed","item":{"id":"m","type":"agent_message","text":"done"}}', TURN])
        assert parser.finish(exit_code=0, stderr_tail=warning).success is ok, inv
