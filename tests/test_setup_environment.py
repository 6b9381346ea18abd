"""What `setup` makes stays out of every commit (issue 21 item 1), on a real repository with a bare
origin, no .gitignore, and the hooks in the real sandbox: a venv-like tree (many files and a symlink
to the host's python) and a build directory left by setup never reach the pushed branch; a
builder that adds more files than the workflow's `commit_limit` fails the attempt with the biggest
paths and the key that raises the limit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from pipeline import git as tacx_git
from pipeline import jobs, services
from pipeline.models import Task
from pipeline.workflow import Workflow, WorkflowError, parse_workflow
from tests import conftest
from tests.conftest import git

# A venv as `python -m venv` leaves it, in small: many files and bin/python linking to the host.
SETUP = [
    "mkdir -p .venv/bin .venv/lib/site-packages/pkg build-output",
    f"ln -s {sys.executable} .venv/bin/python",
    "for i in $(seq 1 250); do echo \"x = $i\" > .venv/lib/site-packages/pkg/mod_$i.py; done",
    "echo artefact > build-output/made-by-setup.txt",
]
BUILDER = "import pathlib; pathlib.Path('farewell.py').write_text('def farewell(name):\\n    return f\"Goodbye, {name}\"\\n')"
FLOODER = "import pathlib; d = pathlib.Path('generated'); d.mkdir(); [(d / f'f{i}.txt').write_text('x' * i) for i in range(300)]"


def workflow(builder: str, **extra) -> dict:
    stage = {"name": "building", "provider": "command", "timeout": 60, "max_attempts": 1, "options": {"argv": [sys.executable, "-c", builder]}}
    return {"stages": [stage, {"name": "pr_creation"}], "hooks": {"setup": {"run": SETUP, "timeout": 60}}, **extra}


def build(repository, clone: Path, builder: str, **extra) -> Task:
    """Commit ``workflow(builder, **extra)`` to ``clone`` (which has no .gitignore), then run a
    task with it in this process until it ends."""
    assert not (clone / ".gitignore").exists()
    conftest.commit_workflow(clone, yaml.safe_dump(workflow(builder, **extra)))
    task, _ = services.task_create(repository=repository, issue_number=3, title="Add farewell", body="Please.", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return jobs.task_run_inline(task=task)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_what_setup_made_never_reaches_the_pushed_branch(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    task = build(local_repository, clone, BUILDER)

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    worktree = Path(task.worktree_path)
    assert (worktree / ".venv" / "bin" / "python").is_symlink() and (worktree / "build-output" / "made-by-setup.txt").is_file()
    files = git(origin, "ls-tree", "-r", "--name-only", task.branch).split()
    base = git(clone, "ls-tree", "-r", "--name-only", "main").split()
    assert sorted(set(files) - set(base)) == ["farewell.py"]
    # The repository's own ignore rules were not touched; the exclusion is TAC-X's.
    assert not (worktree / ".gitignore").exists()
    store = tacx_git.store_path(worktree)
    exclude = (store / "info" / "exclude").read_text()
    assert "/build-output/\n" in exclude and ".venv\n" in exclude


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_builder_adding_more_files_than_the_commit_limit_fails_with_the_biggest_paths(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    task = build(local_repository, clone, FLOODER)

    assert task.status == Task.Status.FAILED
    reason = task.status_reason
    assert "adds 300 file(s)" in reason and "commit_limit (200 files, 5000000 bytes)" in reason, reason
    assert "generated/ (300 files)" in reason and "generated/f299.txt (299 bytes)" in reason
    assert "raise `commit_limit: {files: N, bytes: N}`" in reason
    assert git(origin, "branch", "--list", task.branch) == ""


@pytest.mark.django_db(transaction=True)
def test_a_raised_commit_limit_lets_the_same_builder_through(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    task = build(local_repository, clone, FLOODER, commit_limit={"files": 400})

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert len([f for f in git(origin, "ls-tree", "-r", "--name-only", task.branch).split() if f.startswith("generated/")]) == 300


def test_environment_and_commit_limit_are_validated_like_the_other_keys():
    base = {"stages": [{"name": "building", "provider": "command", "options": {"argv": ["true"]}}], "publish": "none"}
    wf = parse_workflow(base, source="t")
    assert wf.environment == (".venv", "venv", "node_modules", "__pycache__", ".pytest_cache", ".tox")
    assert (wf.commit_limit.files, wf.commit_limit.bytes) == (200, 5_000_000)
    wf = parse_workflow({**base, "environment": ["dist", "tools/cache/"], "commit_limit": {"bytes": 10}}, source="t")
    assert wf.environment == ("dist", "tools/cache") and (wf.commit_limit.files, wf.commit_limit.bytes) == (200, 10)
    assert Workflow.from_json(wf.to_json()).commit_limit.bytes == 10
    with pytest.raises(WorkflowError) as exc:
        parse_workflow({**base, "environment": ["../up", "a*"], "commit_limit": {"files": 0, "lines": 3}}, source="t")
    text = "\n".join(exc.value.errors)
    assert "t: environment[0]: must be a path inside the repository" in text
    assert "t: commit_limit.lines: unknown key" in text
