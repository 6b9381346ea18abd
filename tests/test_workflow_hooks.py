"""The workflow's hooks, test_command and setup_env are validated on load like the rest of the
file: a mistake names the file, the field and the problem."""

from __future__ import annotations

import pytest

from pipeline.workflow import Workflow, load_workflow_text
from tests.test_workflow import refusal

STAGES = """
stages:
  - name: planning
  - name: building
  - name: reviewing
  - name: pr_creation
"""


def test_hooks_accept_a_command_a_list_or_a_mapping_and_get_default_timeouts():
    wf = load_workflow_text(
        """
hooks:
  setup: make deps
  before_stage: [echo one, echo two]
  after_stage: {run: echo after, timeout: 7}
  cleanup: {run: [rm -rf .cache], network: {allow: [registry.npmjs.org, "*.pypi.org", "localhost:8080"]}}
test_command: {run: pytest -q, timeout: 600, network: {allow: [pypi.org]}}
setup_env: [NPM_TOKEN, PIP_INDEX_URL]
"""
    )
    assert wf.hook("setup").run == ("make deps",) and wf.hook("setup").timeout == 900
    assert wf.hook("before_stage").run == ("echo one", "echo two") and wf.hook("before_stage").timeout == 300
    assert wf.hook("after_stage").timeout == 7
    assert wf.hook("cleanup").network_allow == ("registry.npmjs.org", "*.pypi.org", "localhost:8080")
    assert wf.test_command.run == ("pytest -q",) and wf.test_command.timeout == 600 and wf.test_command.network_allow == ("pypi.org",)
    assert wf.setup_env == ("NPM_TOKEN", "PIP_INDEX_URL")


def test_hooks_and_tests_survive_the_task_snapshot():
    wf = load_workflow_text("hooks: {setup: {run: [a, b], timeout: 5, network: {allow: [x.org]}}}\ntest_command: make test\nsetup_env: [NPM_TOKEN]\n")
    again = Workflow.from_json(wf.to_json())
    assert again.hook("setup") == wf.hook("setup")
    assert again.test_command == wf.test_command and again.setup_env == ("NPM_TOKEN",)


def test_no_hooks_and_no_test_command_is_the_default():
    wf = load_workflow_text(None)
    assert wf.hooks == {} and wf.test_command is None and wf.setup_env == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hooks: {setpu: make}", ".tac/workflow.yaml: hooks.setpu: unknown key (allowed: after_stage, before_stage, cleanup, setup)"),
        ("hooks: [make]", ".tac/workflow.yaml: hooks: must be a mapping"),
        ("hooks: {setup: {run: []}}", ".tac/workflow.yaml: hooks.setup.run: must be a non-empty command or list of non-empty commands"),
        ("hooks: {setup: {run: [make, 3]}}", ".tac/workflow.yaml: hooks.setup.run: must be a non-empty command"),
        ("hooks: {setup: {run: make, timeout: 0}}", ".tac/workflow.yaml: hooks.setup.timeout: must be >= 1, got 0"),
        ("hooks: {setup: {run: make, timout: 5}}", ".tac/workflow.yaml: hooks.setup.timout: unknown key"),
        ("hooks: {setup: {run: make, network: {allow: ['https://x.org/']}}}", ".tac/workflow.yaml: hooks.setup.network.allow[0]: must be a host name"),
        ("hooks: {setup: {run: make, network: {deny: [x]}}}", ".tac/workflow.yaml: hooks.setup.network.deny: unknown key"),
        ("test_command: 42", ".tac/workflow.yaml: test_command: must be a command"),
        ("setup_env: [GITHUB_TOKEN]", ".tac/workflow.yaml: setup_env[0]: GITHUB_TOKEN is TAC-X's own credential"),
        ("setup_env: [GITHUB_APP_PRIVATE_KEY]", ".tac/workflow.yaml: setup_env[0]: GITHUB_APP_PRIVATE_KEY is TAC-X's own credential"),
        ("setup_env: ['NPM TOKEN; rm -rf /']", ".tac/workflow.yaml: setup_env[0]: must be an environment variable name"),
        ("test_command: make\nstages: [{name: planning}, {name: pr_creation}]", ".tac/workflow.yaml: test_command: needs a building stage"),
    ],
)
def test_bad_hooks_fail_with_the_file_the_field_and_the_problem(text, message):
    error = str(refusal(text))
    assert error.startswith(message), error
