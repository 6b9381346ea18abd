"""The README's `command` provider section: its workflows are valid, and its worked "a stage
that fails" example does what the README says, run for real (sandbox, local repository)."""

from __future__ import annotations

import re

import pytest

from pipeline.models import AgentEvent, StageResult, Task
from pipeline.workflow import load_workflow_text
from tests.conftest import ROOT, git
from tests.test_runner_processes import run

pytestmark = pytest.mark.django_db(transaction=True)


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### The `command` provider")
    return text[start : text.index("\n### ", start + 1)]


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", section(), re.S)


def test_every_workflow_of_the_section_is_valid():
    blocks = yaml_blocks()
    assert len(blocks) == 2
    for block in blocks:
        workflow = load_workflow_text(block, source="README")
        assert workflow.stages[-1].name == "pr_creation"
    assert {"{prompt}", "{model}", "{cwd}", "{max_turns}", "format", "env", "argv"} <= set(re.findall(r"\{\w+\}|\b(?:format|env|argv)\b", section()))


@pytest.mark.slow
def test_the_failing_stage_example_fails_the_task_with_the_exit_code_and_stderr(local_repository, origin_and_clone):
    _, clone = origin_and_clone
    (clone / ".tac").mkdir()
    (clone / ".tac" / "workflow.yaml").write_text(yaml_blocks()[1])
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "workflow from the README")

    task = run(local_repository, title="Add notes")
    assert task.status == Task.Status.FAILED
    planning = StageResult.objects.get(task=task, stage__name="planning")
    assert planning.success
    (building,) = StageResult.objects.filter(task=task, stage__name="building")  # max_attempts: 1
    assert not building.success
    assert building.error.startswith("agent exited with code 3: make: *** No rule to make target build"), building.error
    assert "agent exited with code 3" in task.status_reason
    # The transcript rows the README names: the program's stdout line, then its stderr line.
    rows = AgentEvent.objects.filter(result=building, kind__in=["output", "stderr"]).order_by("id")
    assert [(e.kind, e.data["text"]) for e in rows] == [("output", "starting the build"), ("stderr", "make: *** No rule to make target build")]
    assert not StageResult.objects.filter(task=task, stage__name="pr_creation").exists()
