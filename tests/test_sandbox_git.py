"""Nothing an agent wrote runs as TAC-X: hooks, fsmonitor, credential helpers and a re-pointed
`.git` file planted by an agent never execute in TAC-X's own git commands (which hold the push
token), with the sandbox on (the agent cannot even plant them), with it off (TAC-X notices, puts
things back and refuses the attempt), and at the git level for a poisoned repository."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from github_standin import TOKEN, standin  # noqa: F401

from pipeline import git as tgit
from pipeline import jobs, services
from pipeline.models import AgentEvent, Repository, Stage, StageResult, Task
from tests import conftest
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
    conftest.commit_workflow(
        clone,
        "stages:\n  - name: planning\n    provider: command\n    max_attempts: 2\n"
        f"    options: {{argv: {json.dumps(['/bin/bash', '-c', script])}}}\n  - name: pr_creation\n"
    )


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
    store = tgit.store_path(worktree)  # the task's own git directory
    m = str(markers)
    for gitdir in (common, store):
        for hook in ("pre-push", "pre-commit", "post-commit", "reference-transaction", "post-index-change"):
            (gitdir / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {m}/{hook}\n")
            (gitdir / "hooks" / hook).chmod(0o755)
        for key, value in (("core.fsmonitor", f"touch {m}/fsmonitor"), ("credential.helper", f"!touch {m}/credential; true"), ("core.hooksPath", str(gitdir / "hooks"))):
            subprocess.run(["git", "config", "--file", str(gitdir / "config"), key, value], check=True)
    home = tmp_path / "home"
    (home / ".gitconfig").write_text(f"[core]\n\tfsmonitor = touch {m}/global\n")
    fake = worktree / "fakegit"
    fake.mkdir()
    (fake / "config").write_text(f"[core]\n\tfsmonitor = touch {m}/fake\n")
    (worktree / ".git").write_text(f"gitdir: {fake}\n")
    (worktree / "new.txt").write_text("hello\n")

    tgit.pin_worktree(clone, worktree)  # what the runner does after every agent attempt
    assert (worktree / ".git").read_text() == f"gitdir: {store}\n"
    assert tgit.commit_all(worktree, "tacx: commit")
    assert "new.txt" in tgit.diff(git(clone, "rev-parse", "main"), worktree)
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


# --- the git store: what one task's agent can do to another task, the workflow and the user ----
# (issue 19, item 4). Two tasks of one repository run the same workflow; the agent of issue 1
# attacks (tests/agents/git_attack.py), the other is the victim.

ATTACK = str(Path(__file__).resolve().parent / "agents" / "git_attack.py")


def attack_workflow(clone: Path, spec: dict, stage: str = "planning") -> str:
    """Commit a workflow whose `stage` runs the git attack agent; returns the workflow text."""
    argv = [sys.executable, ATTACK, json.dumps(spec)]
    text = (
        f"stages:\n  - name: {stage}\n    provider: command\n    max_attempts: 1\n    timeout: 120\n"
        f"    options: {{argv: {json.dumps(argv)}}}\n  - name: pr_creation\n"
    )
    (clone / ".tac").mkdir(exist_ok=True)
    (clone / ".tac" / "workflow.yaml").write_text(text)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "workflow")
    git(clone, "push", "--quiet", "origin", "main")
    return text


def start(repository, issue: int, title: str) -> Task:
    task, _ = services.task_create(repository=repository, issue_number=issue, title=title, trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return task


def plan_of(task: Task) -> str:
    return StageResult.objects.filter(task=task, stage__name="planning").order_by("-id").values_list("output_text", flat=True).first() or ""


def everything_recorded(task: Task) -> str:
    results = StageResult.objects.filter(task=task).values_list("output_text", "error")
    events = AgentEvent.objects.filter(task=task).values_list("data", flat=True)
    return "\n".join([*(a + b for a, b in results), *(json.dumps(e) for e in events), json.dumps(Task.objects.get(pk=task.pk).workflow)])


def tree_of(repo: Path, ref: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", ref).splitlines()


@pytest.mark.slow
def test_a_task_cannot_rewrite_another_tasks_branch(local_repository, origin_and_clone):
    """Task A's agent waits for task B's ref to appear (B's agent commits, then works on) and
    points it at a commit of its own: B's pushed branch must hold B's work only."""
    origin, clone = origin_and_clone
    canary = f"CANARY-A-{os.urandom(6).hex()}"
    attack_workflow(clone, {"mode": "refs", "canary": canary.encode().hex(), "wait": 15, "hold": 8})
    victim = start(local_repository, 2, "B works")
    attacker = start(local_repository, 1, "A attacks")
    errors: list[BaseException] = []

    def run_victim() -> None:
        try:
            jobs.task_run_inline(task=victim)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run_victim)
    thread.start()
    jobs.task_run_inline(task=attacker)
    thread.join(300)
    assert not errors, errors
    victim.refresh_from_db()
    assert victim.status == Task.Status.SUCCEEDED, victim.status_reason
    assert '"rewrite_other_ref": {\n  "ok": false' in plan_of(attacker), plan_of(attacker)
    for repo in (origin, clone):
        files = tree_of(repo, victim.branch)
        assert "b.txt" in files and "a.txt" not in files, (repo, files)
        assert canary not in git(repo, "log", "-p", victim.branch)


def test_a_task_cannot_rewrite_shared_objects_nor_the_workflow_another_task_reads(local_repository, origin_and_clone):
    """Task A's agent replaces the objects of README.md and of .tac/workflow.yaml at the base
    commit (git does not re-hash a loose object it reads). Task B then checks out the real
    README, runs the real workflow (no setup hook of A's), and pushes the real text; the user's
    base commit is unchanged."""
    origin, clone = origin_and_clone
    readme = (clone / "README.md").read_text()
    forged_workflow = (
        "hooks:\n  setup:\n    run: ['echo FORGED-SETUP-RAN > forged.txt']\n"
        "stages:\n  - name: planning\n    provider: command\n"
        "    options: {argv: ['/bin/bash', '-c', \"printf '# Plan\\\\n\\\\nFORGED-WORKFLOW\\\\n' > plan.md\"]}\n"
        "  - name: pr_creation\n"
    )
    # Hex in the spec: the real workflow (which carries the spec) must not contain the markers.
    real = attack_workflow(clone, {"mode": "objects", "readme": b"FORGED-README\n".hex(), "workflow": forged_workflow.encode().hex()})
    attacker = jobs.task_run_inline(task=start(local_repository, 1, "A attacks"))
    assert attacker.status == Task.Status.SUCCEEDED, attacker.status_reason
    victim = jobs.task_run_inline(task=start(local_repository, 2, "B works"))
    assert victim.status == Task.Status.SUCCEEDED, victim.status_reason
    recorded = everything_recorded(victim)
    assert "FORGED" not in recorded
    assert '"role": "B"' in plan_of(victim) and readme.splitlines()[0] in plan_of(victim)
    assert Task.objects.get(pk=victim.pk).workflow == Workflow_of(real)
    for repo in (origin, clone):
        assert git(repo, "show", f"{victim.branch}:README.md") == (readme + "B was here\n").strip()
    assert git(clone, "show", "main:README.md") == readme.strip()
    assert git(clone, "show", "main:.tac/workflow.yaml") == real.strip()
    assert git(clone, "fsck", "--no-dangling").strip() == ""


def Workflow_of(text: str) -> dict:  # noqa: N802 - reads as "the workflow of"
    from pipeline.workflow import load_workflow_text

    return load_workflow_text(text.encode()).to_json()


def test_an_agent_that_repoints_head_moves_no_branch_of_the_user(local_repository, origin_and_clone):
    """The building agent writes `ref: refs/heads/main` into its HEAD and leaves a file: TAC-X
    refuses to commit (HEAD is not the task's branch) and the user's main stays where it was, so
    the next task branches from the real main."""
    origin, clone = origin_and_clone
    canary = f"CANARY-HEAD-{os.urandom(6).hex()}"
    attack_workflow(clone, {"mode": "head", "canary": canary}, stage="building")
    main = git(clone, "rev-parse", "main")
    task = jobs.task_run_inline(task=start(local_repository, 1, "A attacks"))
    assert task.status == Task.Status.FAILED
    building = Stage.objects.get(task=task, name="building")
    assert "HEAD" in building.error and "refs/heads/main" in building.error and "re-pointed" in building.error, building.error
    assert git(clone, "rev-parse", "main") == main and git(origin, "rev-parse", "main") == main
    assert git(clone, "log", "--all", "--format=%H", "--", "sneaky.txt") == ""  # the agent's file was committed nowhere
    other = start(local_repository, 2, "B works")
    jobs.task_run_inline(task=other)
    assert Task.objects.get(pk=other.pk).base_commit == main


def test_a_fifo_planted_as_alternates_costs_no_timeout(local_repository, origin_and_clone):
    """Task A's agent puts a FIFO at objects/info/alternates of every object directory in its
    reach. Nothing of TAC-X's, of task B's or of the user's git waits on it."""
    origin, clone = origin_and_clone
    attack_workflow(clone, {"mode": "fifo"})
    began = time.monotonic()
    attacker = jobs.task_run_inline(task=start(local_repository, 1, "A attacks"))
    assert '"fifo_alternates": {\n  "ok": false' in plan_of(attacker), plan_of(attacker)
    assert attacker.status == Task.Status.SUCCEEDED, attacker.status_reason
    victim = jobs.task_run_inline(task=start(local_repository, 2, "B works"))
    assert victim.status == Task.Status.SUCCEEDED, victim.status_reason
    assert time.monotonic() - began < 150  # one git command waiting on a FIFO takes 300 s
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, timeout=20)
    assert status.returncode == 0
    assert not stat.S_ISFIFO(os.lstat(clone / ".git" / "objects" / "info").st_mode)
    assert not (clone / ".git" / "objects" / "info" / "alternates").exists()


def test_an_agent_cannot_read_the_users_unpushed_branch_or_stash(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    secrets = {name: f"CANARY-{name}-{os.urandom(6).hex()}" for name in ("branch", "stash")}
    attack_workflow(clone, {"mode": "read", "objects": {}})  # rewritten below with the object names
    git(clone, "checkout", "-q", "-b", "unpushed-work")
    (clone / "private.txt").write_text(secrets["branch"] + "\n")
    git(clone, "add", "private.txt")
    git(clone, "commit", "-q", "-m", "private")
    branch_blob = git(clone, "rev-parse", "HEAD:private.txt")
    git(clone, "checkout", "-q", "main")
    (clone / "README.md").write_text(secrets["stash"] + "\n")
    git(clone, "stash", "-q")
    stash_blob = git(clone, "rev-parse", "stash@{0}:README.md")
    attack_workflow(clone, {"mode": "read", "objects": {"branch_blob": branch_blob, "stash_blob": stash_blob, "stash_commit": git(clone, "rev-parse", "stash@{0}")}})
    task = jobs.task_run_inline(task=start(local_repository, 1, "A reads"))
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    plan = plan_of(task)
    assert '"branch_blob": {\n  "ok": false' in plan and '"stash_blob": {\n  "ok": false' in plan, plan
    recorded = everything_recorded(task)
    for canary in secrets.values():
        assert canary not in recorded
    assert "unpushed-work" not in plan and "refs/stash" not in plan


def test_a_fifo_in_the_tasks_own_git_directory_is_refused_at_once(local_repository, origin_and_clone):
    """Found alongside: the agent may write its own index, HEAD and refs, so it can put a FIFO
    there. TAC-X's git would wait on it until its timeout (300 s); it is refused at once, with
    the entry named, before any git command of TAC-X's opens it."""
    origin, clone = origin_and_clone
    commit_workflow(clone, 'gd=$(git rev-parse --git-dir); rm -f "$gd/index"; mkfifo "$gd/index"; printf "# Plan\\n\\nx\\n" > plan.md')
    began = time.monotonic()
    task = run(local_repository)
    assert time.monotonic() - began < 100
    assert task.status == Task.Status.FAILED
    planning = Stage.objects.get(task=task, name="planning")
    assert "index is a FIFO" in planning.error, planning.error
    assert planning.attempts == 1  # permanent


def test_a_task_store_goes_with_its_worktree_and_an_orphan_store_is_reaped(origin_and_clone, tmp_path, settings):
    clone = origin_and_clone[1]
    head = git(clone, "rev-parse", "HEAD")
    root = tmp_path / "trees"
    kept, removed, orphan = (root / name for name in ("kept-1-t1", "removed-1-t2", "orphan-1-t3"))
    for path in (kept, removed, orphan):
        assert tgit.worktree_at(clone, path, f"tacx/{path.name}", head) == head
        assert tgit.store_path(path).is_dir() and tgit.store_path(path).parent == Path(settings.VAR_DIR).resolve() / "taskgit"
    tgit.worktree_remove(clone, removed)
    assert not removed.exists() and not tgit.store_path(removed).exists()
    shutil.rmtree(orphan)  # its worktree deleted by hand
    assert tgit.remove_orphan_store(root, older_than=3600) is None  # too recent to be sure
    old = time.time() - 7200
    os.utime(tgit.store_path(orphan), (old, old))
    assert tgit.remove_orphan_store(root, older_than=3600) == tgit.store_path(orphan)
    assert tgit.store_path(kept).is_dir() and git(kept, "rev-parse", "HEAD") == head
    assert tgit.remove_orphan_store(root, older_than=3600) is None
