"""The toolchain is explicit (issue 21 item 7): `toolchains: [name]` makes an interpreter found on
TAC-X's PATH (past a pyenv shim) readable in the sandbox of the hooks, the test command and the
agents, and puts its bin directories first on the hooks' PATH; each hook records which
`python3`/`python`/`node` it reached, and the task page shows it. A name this machine does not
have fails the task before anything runs, naming the name, the PATH searched and the fix."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import jobs, services
from pipeline.models import AgentEvent, StageResult, Task
from pipeline.sandbox import toolchains
from pipeline.workflow import Workflow, WorkflowError, load_workflow_text
from tests import conftest
from tests.conftest import grant
from tests.test_pipeline_hooks import WHEEL, tiny_wheel

REAL_PYTHON = os.path.realpath(sys.executable)


def tools_dir(tmp_path: Path) -> Path:
    """An operator's installation outside every directory the sandbox shows: opt/tacx-py/bin
    with `tacx-python`, a link to the interpreter running these tests."""
    bin_dir = tmp_path / "opt" / "tacx-py" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "tacx-python").symlink_to(REAL_PYTHON)
    return bin_dir


# --- resolving names (no sandbox) --------------------------------------------------------------


def test_toolchains_are_program_names_validated_with_the_file_and_the_field():
    wf = load_workflow_text("toolchains: [python3.11, node, python3.11]\n")
    assert wf.toolchains == ("python3.11", "node") and Workflow.from_json(wf.to_json()).toolchains == ("python3.11", "node")
    assert load_workflow_text(None).toolchains == ()
    with pytest.raises(WorkflowError) as exc:
        load_workflow_text("toolchains: [/usr/bin/python3, ../node]\n")
    assert exc.value.errors == [
        ".tac/workflow.yaml: toolchains[0]: must be a program name found on TAC-X's PATH (letters, digits, . _ + -; no path), got '/usr/bin/python3'"
    ]


def test_a_name_is_resolved_with_its_link_chain_its_prefix_and_its_bin_directories(tmp_path):
    bin_dir = tools_dir(tmp_path)
    (found,) = toolchains.resolve(["tacx-python"], search_path=f"relative/bin{os.pathsep}{bin_dir}{os.pathsep}/usr/bin")
    assert found.path == str(bin_dir / "tacx-python") and found.real == REAL_PYTHON
    assert str(bin_dir / "tacx-python") in found.read and str(bin_dir.parent) in found.read  # the prefix (its lib/)
    assert REAL_PYTHON in found.read
    assert found.bin_dirs[0] == str(bin_dir) and os.path.dirname(REAL_PYTHON) in found.bin_dirs
    path = toolchains.hook_path([found], f"/usr/bin{os.pathsep}{bin_dir}")
    assert path.split(os.pathsep)[: len(found.bin_dirs)] == list(found.bin_dirs) and path.count(str(bin_dir)) == 1


def test_a_system_bin_directory_is_not_moved_first_so_a_later_toolchain_keeps_its_name():
    node = toolchains.Toolchain(name="node", path="/usr/bin/node", real="/usr/bin/node", read=("/usr/bin/node",), bin_dirs=("/usr/bin",))
    python = toolchains.Toolchain(name="python3.11", path="/opt/py/bin/python3.11", real="/opt/py/bin/python3.11", read=(), bin_dirs=("/opt/py/bin",))
    assert toolchains.hook_path([node, python], "/usr/local/bin:/usr/bin:/bin") == "/opt/py/bin:/usr/local/bin:/usr/bin:/bin"


def test_a_prefix_holding_tacx_home_is_not_shown_only_the_program(tmp_path, settings):
    home = Path(os.path.expanduser("~"))  # the test's HOME (conftest)
    (home / "bin").mkdir()
    (home / "bin" / "mytool").symlink_to(REAL_PYTHON)
    (found,) = toolchains.resolve(["mytool"], search_path=str(home / "bin"))
    assert str(home) not in found.read and str(home / "bin" / "mytool") in found.read
    assert any(f"{home} is not shown" in note for note in found.notes)


def test_a_pyenv_shim_is_replaced_by_the_interpreter_of_the_selected_version(tmp_path, monkeypatch):
    root = tmp_path / "pyenv"
    (root / "shims").mkdir(parents=True)
    shim = root / "shims" / "python3.11"
    shim.write_text(f'#!/usr/bin/env bash\nset -e\nprogram="${{0##*/}}"\nexport PYENV_ROOT="{root}"\nexec "{root}/libexec/pyenv" exec "$program" "$@"\n')
    shim.chmod(0o755)
    version_bin = root / "versions" / "3.11.9" / "bin"
    version_bin.mkdir(parents=True)
    (version_bin / "python3.11").symlink_to(REAL_PYTHON)
    (root / "version").write_text("3.11.9\n")
    monkeypatch.delenv("PYENV_VERSION", raising=False)
    (found,) = toolchains.resolve(["python3.11"], search_path=str(root / "shims"))
    assert found.path == str(version_bin / "python3.11") and str(root / "versions" / "3.11.9") in found.read

    # A selected version without the program: the search goes on past the shim, and says why.
    monkeypatch.setenv("PYENV_VERSION", "2.7.18")
    with pytest.raises(toolchains.ToolchainError) as exc:
        toolchains.resolve(["python3.11"], search_path=str(root / "shims"))
    assert "is a pyenv shim, and pyenv's selected version (2.7.18) has no python3.11" in str(exc.value)


def test_a_name_that_is_not_found_fails_the_task_before_any_stage_naming_the_path_and_the_fix(local_repository, origin_and_clone, monkeypatch):
    _, clone = origin_and_clone
    monkeypatch.setenv("PATH", f"/usr/bin{os.pathsep}/bin")
    conftest.commit_workflow(clone, yaml.safe_dump({"toolchains": ["python3.11", "tacx-no-such-python9"]}))
    task, _ = services.task_create(repository=local_repository, issue_number=5, title="Anything", trigger_source="cli")
    assert services.task_dispatch(task=task, enqueue=False) is False
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED
    reason = task.status_reason
    assert "toolchains[1]: tacx-no-such-python9 was not found on TAC-X's PATH (/usr/bin:/bin)" in reason, reason
    assert "or remove it from `toolchains` in .tac/workflow.yaml" in reason
    assert not StageResult.objects.filter(task=task).exists()


# --- in the real sandbox -------------------------------------------------------------------------

PROBE = "import os, sys; print('ran', os.path.realpath(sys.executable))"


def workflow(real_python: str, **extra) -> dict:
    # The agent is a shell (TAC-X's own interpreter is hidden in these tests): it runs the
    # toolchain's interpreter by its real path, which only `toolchains` makes readable.
    agent = f"printf '# Plan\\n\\nx\\n' > plan.md; {real_python} -c \"print('agent reached the toolchain')\" || echo 'agent: no toolchain'"
    return {
        "hooks": {"setup": {"run": [f'tacx-python -c "{PROBE}"', f'python3 -c "{PROBE}"'], "timeout": 60}},
        "stages": [{"name": "planning", "provider": "command", "timeout": 60, "max_attempts": 1, "options": {"argv": ["/bin/sh", "-c", agent]}}, {"name": "pr_creation"}],
        **extra,
    }


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_toolchain_is_reachable_in_the_hooks_and_the_agent_and_hidden_without_the_key(
    local_repository, origin_and_clone, tmp_path, settings, monkeypatch, client, django_user_model
):
    _, clone = origin_and_clone
    bin_dir = tools_dir(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # The operator's interpreter is not allowed for reading: only what `toolchains` brings.
    settings.TACX = {**settings.TACX, "SANDBOX_ALLOW_READ": [str(conftest.ROOT / "tests" / "agents")]}

    conftest.commit_workflow(clone, yaml.safe_dump(workflow(REAL_PYTHON, toolchains=["tacx-python"])))
    task, _ = services.task_create(repository=local_repository, issue_number=6, title="With the toolchain", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    setup = AgentEvent.objects.get(task=task, data__hook="setup", data__status="passed").data
    assert setup["output"].count(f"ran {REAL_PYTHON}") == 2, setup["output"]  # tacx-python, and python3 from its bin/
    reached = {i["name"]: i for i in setup["interpreters"]}
    assert reached["tacx-python"]["path"] == str(bin_dir / "tacx-python") and reached["tacx-python"]["real"] == REAL_PYTHON
    assert reached["python3"]["real"] == os.path.realpath(os.path.join(os.path.dirname(REAL_PYTHON), "python3"))
    assert set(reached) == {"python3", "python", "node", "tacx-python"}
    plan_text = " ".join(AgentEvent.objects.filter(task=task, kind="output").values_list("data__text", flat=True))
    assert "agent reached the toolchain" in plan_text

    client.force_login(grant(django_user_model.objects.create_user("viewer", "v@example.com", "pw-pw-pw-pw"), "view_task"))
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert f'tacx-python: <code>{bin_dir / "tacx-python"}</code> → <code>{REAL_PYTHON}</code>' in page

    # The same workflow without the key: the hook cannot see the operator's installation.
    conftest.commit_workflow(clone, yaml.safe_dump(workflow(REAL_PYTHON)))
    task, _ = services.task_create(repository=local_repository, issue_number=7, title="Without", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.FAILED
    assert "tacx-python: not found" in task.status_reason and "under `toolchains:`" in task.status_reason, task.status_reason


def readme_python_example() -> str:
    text = (conftest.ROOT / "README.md").read_text()
    start = text.index("**A Python project, the common case.**")
    return re.search(r"```yaml\n(.*?)```", text[start:], re.S).group(1)


def test_every_workflow_of_the_readmes_repository_environment_is_valid():
    text = (conftest.ROOT / "README.md").read_text()
    start = text.index("### Repository environment: hooks and tests")
    blocks = re.findall(r"```yaml\n(.*?)```", text[start : text.index("\n### ", start + 1)], re.S)
    assert len(blocks) == 2
    full, python = (load_workflow_text(block, source="README") for block in blocks)
    assert full.toolchains == ("python3.11", "node") and full.hook("setup").cache_paths == (".cache/pre-commit",)
    assert python.hook("setup").cache_key == ("requirements.txt",) and python.test_command.run == (".venv/bin/python -m pytest -q",)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_readmes_python_example_installs_its_requirements_in_the_sandbox(local_repository, origin_and_clone, settings):
    """The README's hook example, as written (only the test command differs: no pytest offline):
    a venv from the named interpreter, `pip install -r requirements.txt` into it, and the test
    command and the agent reaching that venv's interpreter, with TAC-X's own hidden."""
    example = yaml.safe_load(readme_python_example())
    try:
        toolchains.resolve(example["toolchains"])
    except toolchains.ToolchainError as exc:
        pytest.skip(str(exc))
    _, clone = origin_and_clone
    settings.TACX = {**settings.TACX, "SANDBOX_ALLOW_READ": [str(conftest.ROOT / "tests" / "agents")]}
    (clone / "vendor").mkdir()
    (clone / WHEEL).write_bytes(tiny_wheel())
    (clone / "requirements.txt").write_text(f"./{WHEEL}\n")
    check = ".venv/bin/python -c \"import sys, tinypkg; print('tests ran', tinypkg.expected('Ada'), sys.version_info[:2])\""
    agent = f"echo 'x = 1' > x.py; {check}"
    workflow = {
        **example,
        "test_command": {"run": check, "timeout": 120},
        "stages": [{"name": "building", "provider": "command", "timeout": 120, "max_attempts": 1, "options": {"argv": ["/bin/sh", "-c", agent]}}, {"name": "pr_creation"}],
    }
    conftest.commit_workflow(clone, yaml.safe_dump(workflow))

    task, _ = services.task_create(repository=local_repository, issue_number=8, title="README example", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    setup = AgentEvent.objects.get(task=task, data__hook="setup", data__status="passed").data
    assert "Successfully installed tinypkg-0.1" in setup["output"] and "externally-managed-environment" not in setup["output"]
    building = StageResult.objects.get(task=task, stage__name="building")
    assert building.tests_status == "passed" and "tests ran Goodbye, Ada" in building.tests_output
    messages = " ".join(AgentEvent.objects.filter(task=task, kind="output").values_list("data__text", flat=True))
    assert "tests ran Goodbye, Ada" in messages  # the agent ran the venv's interpreter too
