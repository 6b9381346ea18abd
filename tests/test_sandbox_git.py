"""Nothing an agent wrote runs as TAC-X: hooks, fsmonitor, credential helpers and a re-pointed
`.git` file planted by an agent never execute in TAC-X's own git commands (which hold the push
token), with the sandbox on (the agent cannot even plant them), with it off (TAC-X notices, puts
things back and refuses the attempt), and at the git level for a poisoned repository."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from github_standin import TOKEN, standin  # noqa: F401

from pipeline import git as tgit
from pipeline import jobs, services
from pipeline.models import Repository, Stage, StageResult, Task
from tests.conftest import git, make_origin_and_clone

pytestmark = [pytest.mark.django_db(transaction=True)]


def planter(markers: Path) -> str:
    """A bash planner that plants every program git could be made to run, each of which would
    leave a marker file on the host if TAC-X ran it, then writes plan.md."""
    m = str(markers)
    return f"""
set +e
common=$(git rev-parse --path-format=absolute --git-common-dir)
admin=$(git rev-parse --path-format=absolute --git-dir)
printf '#!/bin/sh\\nenv > {m}/hook-env\\ntouch {m}/pre-push\\n' > "$common/hooks/pre-push" && chmod +x "$common/hooks/pre-push"
printf '#!/bin/sh\\ntouch {m}/post-commit\\n' > "$common/hooks/post-commit" && chmod +x "$common/hooks/post-commit"
git config core.fsmonitor "touch {m}/fsmonitor"
git config credential.helper "!touch {m}/credential; true"
git config core.hooksPath "$PWD/.myhooks"
mkdir -p .myhooks && printf '#!/bin/sh\\ntouch {m}/hookspath\\n' > .myhooks/pre-push && chmod +x .myhooks/pre-push
mkdir -p fakegit && cp -r "$admin"/. fakegit/ && printf 'ref: refs/heads/main\\n' > fakegit/HEAD
printf '[core]\\n\\tfsmonitor = touch {m}/fake-gitdir\\n\\thooksPath = {m}/nowhere\\n' > fakegit/config
printf 'gitdir: %s/fakegit\\n' "$PWD" > .git
printf '[core]\\n\\tfsmonitor = touch {m}/global\\n' > "$HOME/.gitconfig"
printf '# Plan\\n\\nplanted\\n' > plan.md
echo planted
"""


def commit_workflow(clone: Path, script: str) -> None:
    (clone / ".tac").mkdir(exist_ok=True)
    (clone / ".tac" / "workflow.yaml").write_text(
        "stages:\n  - name: planning\n    provider: command\n    max_attempts: 2\n"
        f"    options: {{argv: {json.dumps(['/bin/bash', '-c', script])}}}\n  - name: pr_creation\n"
    )
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "workflow")


def run(repository) -> Task:
    task, _ = services.task_create(repository=repository, issue_number=3, title="Plant", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return jobs.task_run_inline(task=task)


def common_dir_of(repository: Repository) -> Path:
    from pipeline import repos

    return tgit.common_dir(repos.source_dir(repository, fetch=False))


@pytest.fixture
def markers(tmp_path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


def test_sandboxed_agent_cannot_plant_hooks_or_config_and_tacx_pushes_clean(local_repository, origin_and_clone, markers):
    origin, clone = origin_and_clone
    commit_workflow(clone, planter(markers))
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert sorted(os.listdir(markers)) == []
    common = common_dir_of(local_repository)
    assert not (common / "hooks" / "pre-push").exists()
    assert subprocess.run(["git", "config", "--get", "core.fsmonitor"], cwd=clone, capture_output=True).returncode == 1
    # TAC-X's push went to the origin, from the real worktree (not the agent's fake git dir).
    assert git(origin, "rev-parse", task.branch)
    assert "plan.md" not in git(origin, "ls-tree", "-r", "--name-only", task.branch)


def test_unsandboxed_agent_plants_them_tacx_runs_none_restores_and_refuses_the_attempt(local_repository, origin_and_clone, markers, settings):
    settings.TACX = {**settings.TACX, "SANDBOX": "off"}
    origin, clone = origin_and_clone
    commit_workflow(clone, planter(markers))
    task = run(local_repository)
    assert task.status == Task.Status.FAILED
    planning = Stage.objects.get(task=task, name="planning")
    assert planning.attempts == 1  # permanent
    assert "changed the repository's git configuration or hooks" in planning.error
    assert sorted(os.listdir(markers)) == []  # none of the planted programs ever ran
    common = common_dir_of(local_repository)
    assert not (common / "hooks" / "pre-push").exists() and not (common / "hooks" / "post-commit").exists()
    for key in ("core.fsmonitor", "credential.helper", "core.hooksPath"):
        assert subprocess.run(["git", "config", "--get", key], cwd=clone, capture_output=True).returncode == 1, key
    assert task.branch not in git(origin, "branch", "--list")


def test_a_poisoned_repository_runs_nothing_in_tacx_git_commands_including_the_token_push(tmp_path, markers, monkeypatch):
    """The git level alone: hooks, fsmonitor, credential helper, hooksPath, a global config and a
    re-pointed .git file are all in place; TAC-X's status, add, commit, diff and a push with the
    token header run none of them and follow the real git directory."""
    origin, clone = make_origin_and_clone(tmp_path, "poisoned")
    worktree = tmp_path / "wt"
    tgit.worktree_add(clone, worktree, "tacx/1-x", "main")
    common = tgit.common_dir(clone)
    m = str(markers)
    for hook in ("pre-push", "pre-commit", "post-commit", "reference-transaction", "post-index-change"):
        (common / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {m}/{hook}\n")
        (common / "hooks" / hook).chmod(0o755)
    for key, value in (("core.fsmonitor", f"touch {m}/fsmonitor"), ("credential.helper", f"!touch {m}/credential; true"), ("core.hooksPath", str(common / "hooks"))):
        subprocess.run(["git", "config", key, value], cwd=clone, check=True)
    home = tmp_path / "home"
    (home / ".gitconfig").write_text(f"[core]\n\tfsmonitor = touch {m}/global\n")
    fake = worktree / "fakegit"
    fake.mkdir()
    (fake / "config").write_text(f"[core]\n\tfsmonitor = touch {m}/fake\n")
    (worktree / ".git").write_text(f"gitdir: {fake}\n")
    (worktree / "new.txt").write_text("hello\n")

    tgit.pin_worktree(clone, worktree)  # what the runner does after every agent attempt
    assert (worktree / ".git").read_text().startswith(f"gitdir: {common / 'worktrees'}")
    assert tgit.commit_all(worktree, "tacx: commit")
    assert "new.txt" in tgit.diff("main", worktree)
    header = "Authorization: Basic " + "c2VjcmV0LXRva2Vu"
    tgit.push(worktree, str(origin), "tacx/1-x", auth_header=header)
    assert sorted(os.listdir(markers)) == []
    assert "new.txt" in git(origin, "ls-tree", "-r", "--name-only", "tacx/1-x")


def test_github_repository_sandboxed_planter_changes_nothing_in_the_mirror_and_the_token_push_is_clean(db, standin, tmp_path, markers):  # noqa: F811
    from github_standin import command_workflow  # noqa: F401 - the stand-in's own workflow helper

    files = {"README.md": "# sample\n"}
    origin, clone = make_origin_and_clone(tmp_path, "sample", files)
    repo = Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=str(origin), default_branch="main", trigger_label="rpi-auto")
    commit_workflow(clone, planter(markers))
    git(clone, "push", "--quiet", "origin", "main")
    task, _ = services.task_create(repository=repo, issue_number=12, title="Plant", trigger_source="webhook")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert sorted(os.listdir(markers)) == []
    mirror = common_dir_of(repo)
    assert not (mirror / "hooks" / "pre-push").exists()
    (pull,) = standin.pulls_of("octo/sample")
    assert pull["head"]["ref"] == task.branch
    for r in StageResult.objects.filter(task=task):
        assert TOKEN not in (r.output_text + r.error)
