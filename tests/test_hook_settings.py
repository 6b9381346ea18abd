"""Secrets and settings are told apart (issue 21 item 8), on a real repository with a bare origin
and the real sandbox: a `setup_env` value of `1` (PIP_NO_INDEX=1) is not a secret, so the test
output and the PR body keep their digits; a plain hook `env:` reaches the command unredacted; a
real token handed through `setup_env` is still redacted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from pipeline import hooks, jobs, services
from pipeline.lib import redaction
from pipeline.models import StageResult, Task
from pipeline.workflow import WorkflowError, parse_workflow
from tests.conftest import git

TOKEN = "npm_settingstest0123456789"
BUILDER = "import pathlib; pathlib.Path('fix.txt').write_text('fixed')"


def commit_workflow(clone: Path) -> None:
    stage = {"name": "building", "provider": "command", "timeout": 60, "max_attempts": 1, "options": {"argv": [sys.executable, "-c", BUILDER]}}
    wf = {
        "stages": [stage, {"name": "pr_creation"}],
        "setup_env": ["PIP_NO_INDEX", "NPM_TOKEN"],
        "test_command": {
            "run": 'echo "41 passed, 10 warnings in 1.01s no-index=$PIP_NO_INDEX mode=$TEST_MODE token=$NPM_TOKEN"',
            "env": {"TEST_MODE": "strict-1", "RETRIES": 3},
        },
    }
    (clone / ".tac").mkdir(exist_ok=True)
    (clone / ".tac" / "workflow.yaml").write_text(yaml.safe_dump(wf))
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "workflow")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_setup_env_value_of_1_keeps_the_digits_of_the_test_output_and_the_pr_body(local_repository, origin_and_clone, monkeypatch):
    _, clone = origin_and_clone
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("NPM_TOKEN", TOKEN)
    redaction.refresh_literal_secrets()
    commit_workflow(clone)
    task, _ = services.task_create(repository=local_repository, issue_number=5, title="Fix", body="Please.", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    output = StageResult.objects.get(task=task, stage__name="building").tests_output
    assert "41 passed, 10 warnings in 1.01s no-index=1 mode=strict-1 token=[REDACTED]" in output, output
    body = StageResult.objects.get(task=task, stage__name="pr_creation").output_text
    assert "41 passed, 10 warnings in 1.01s no-index=1" in body and TOKEN not in body


def test_only_values_that_can_be_secrets_are_redacted():
    assert not any(hooks.can_be_secret(v) for v in ("1", "0", "12345678", "3.14159265", "true", "production", "localhost", "short"))
    assert all(hooks.can_be_secret(v) for v in (TOKEN, "hunter2hunter2", "s3cr3t-value"))


def test_a_hook_env_is_validated():
    base = {"stages": [{"name": "building", "provider": "command", "options": {"argv": ["true"]}}], "publish": "none"}
    wf = parse_workflow({**base, "hooks": {"setup": {"run": "true", "env": {"A": 1, "B": "x", "C": True}}}}, source="t")
    assert wf.hook("setup").env == (("A", "1"), ("B", "x"), ("C", "1"))
    with pytest.raises(WorkflowError) as exc:
        parse_workflow({**base, "hooks": {"setup": {"run": "true", "env": {"GITHUB_TOKEN": "x", "TACX_HOOK": "y", "D": [1]}}}}, source="t")
    text = "\n".join(exc.value.errors)
    assert "t: hooks.setup.env.GITHUB_TOKEN: is TAC-X's own" in text
