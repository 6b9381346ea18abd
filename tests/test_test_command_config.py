"""A configuration error is not a failing test (issue 21 item 2), on a real repository with a bare
origin and the real sandbox: a test_command whose interpreter the sandbox does not show fails the
task at once (one builder run, no second), naming the command, the missing path and the fix; and
an allowed venv brings its interpreter along, even when the base interpreter it links to lives
under a hidden directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import jobs, services
from pipeline.models import StageResult, Task
from pipeline.sandbox import policy
from tests import conftest

BUILDER = "import pathlib; pathlib.Path('fix.txt').write_text('fixed')"


def make_venv(tmp_path: Path) -> Path:
    """A venv whose bin/python links to a base interpreter under a hidden directory
    (tmp/.toolchains/py/bin/python3, itself a link to the host's python)."""
    base = tmp_path / ".toolchains" / "py" / "bin"
    base.mkdir(parents=True)
    (base / "python3").symlink_to(os.path.realpath(sys.executable))
    venv = tmp_path / "project-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(base / "python3")
    return venv


def commit_workflow(clone: Path, venv: Path) -> None:
    stage = {"name": "building", "provider": "command", "timeout": 60, "max_attempts": 2, "options": {"argv": [sys.executable, "-c", BUILDER]}}
    wf = {"review_rounds": 3, "stages": [stage, {"name": "pr_creation"}], "test_command": {"run": f"{venv}/bin/python -c \"print('tests ran')\"", "timeout": 60}}
    conftest.commit_workflow(clone, yaml.safe_dump(wf))


def start(repository) -> Task:
    task, _ = services.task_create(repository=repository, issue_number=4, title="Fix", body="Please.", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return jobs.task_run_inline(task=task)


def test_an_allowed_venv_brings_the_hops_of_its_interpreter_link_and_their_prefix(tmp_path):
    venv = make_venv(tmp_path)
    found = policy.link_targets([str(venv)])
    assert str(tmp_path / ".toolchains" / "py" / "bin" / "python3") in found
    assert str(tmp_path / ".toolchains" / "py") in found  # the interpreter's prefix (its lib/)
    assert os.path.realpath(sys.executable) in found


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_venv_allowed_for_reading_runs_its_hidden_base_interpreter(local_repository, origin_and_clone, settings, tmp_path):
    _, clone = origin_and_clone
    venv = make_venv(tmp_path)
    settings.TACX = {**settings.TACX, "SANDBOX_ALLOW_READ": [*settings.TACX["SANDBOX_ALLOW_READ"], str(venv)]}
    commit_workflow(clone, venv)

    task = start(local_repository)

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    building = StageResult.objects.get(task=task, stage__name="building")
    assert building.tests_status == "passed" and "tests ran" in building.tests_output


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_test_command_that_is_not_found_fails_the_task_at_once_without_another_agent_run(local_repository, origin_and_clone, tmp_path):
    _, clone = origin_and_clone
    venv = make_venv(tmp_path)  # not allowed for reading: the sandbox hides it
    commit_workflow(clone, venv)

    task = start(local_repository)

    assert task.status == Task.Status.FAILED
    reason = task.status_reason
    assert "test_command is misconfigured, not failing" in reason and "(exit 127)" in reason, reason
    assert f"{venv}/bin/python" in reason and "TACX_SANDBOX_ALLOW_READ" in reason and "no agent runs again" in reason
    # One builder run: neither a test round nor a retry of the attempt.
    assert StageResult.objects.filter(task=task, stage__name="building").count() == 1
