"""The hand-back gate, attacked for real (issue 19, items 1, 2 and the nested repository of 4):
hostile `command` agents (and the real claude CLI's Bash tool) in the real sandbox leave traps in
their worktree: plan.md or review.md as a symlink to TAC-X's environment, to the GitHub App's
key or to a sibling task's file, a hardlink, a FIFO, a sparse gigabyte, a symlink into /proc
committed on the branch, an embedded repository with a clean filter, a submodule. TAC-X must
refuse each with a clear message recorded as an event, and no canary may appear in any stage
result, event, prompt or the pushed branch."""

from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from harness.cli_runs import DUMMY_API_KEY
from harness.modelserver import ScriptedModelServer
from pipeline import jobs, services
from pipeline.models import AgentEvent, Repository, StageResult, Task
from tests.conftest import ROOT, git

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

AGENT = str(ROOT / "tests" / "agents" / "handback.py")
PLAN = [{"write": "plan.md", "text": "# Plan\n1. add feature.txt\n"}]
BUILD = [{"write": "feature.txt", "text": "a feature\n"}]


def stage(name: str, actions: list[dict]) -> str:
    argv = [sys.executable, AGENT, json.dumps(actions)]
    return f"  - name: {name}\n    provider: command\n    timeout: 120\n    options: {{argv: {json.dumps(argv)}}}\n"


def workflow(clone: Path, stages: list[tuple[str, list[dict]]], extra: str = "") -> None:
    text = extra + "stages:\n" + "".join(stage(name, actions) for name, actions in stages) + "  - name: pr_creation\n"
    (clone / ".tac").mkdir(exist_ok=True)
    (clone / ".tac" / "workflow.yaml").write_text(text)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "workflow")


def run(repository: Repository, number: int = 19) -> Task:
    task, _ = services.task_create(repository=repository, issue_number=number, title="The gate", body="Do the thing.", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return jobs.task_run_inline(task=task)


def pushed(origin: Path) -> str:
    """Everything on the origin: every branch's log with patches (what a leak would have pushed)."""
    return git(origin, "log", "-p", "--all", "--no-ext-diff", "--binary")


def everything_recorded(task: Task) -> str:
    parts = [json.dumps(e.data) for e in AgentEvent.objects.filter(task=task)]
    for r in StageResult.objects.filter(task=task):
        parts += [r.output_text, r.error, r.prompt, r.output_file, r.tests_output]
    task.refresh_from_db()
    parts += [task.status_reason, task.pr_url]
    return "\n".join(parts)


def assert_refused(task: Task, stage_name: str, message: str, canaries: list[str], origin: Path) -> None:
    assert task.status == Task.Status.FAILED, (task.status, task.status_reason)
    results = list(StageResult.objects.filter(task=task, stage__name=stage_name))
    assert len(results) == 1, "a refusal is permanent: no second attempt"
    assert message in results[0].error, results[0].error
    events = [e.data for e in AgentEvent.objects.filter(task=task, result=results[0], kind=AgentEvent.Kind.ERROR)]
    assert any(e.get("subtype") == "handback" and message in e["message"] for e in events), events
    recorded, branch = everything_recorded(task), pushed(origin)
    for canary in canaries:
        assert canary not in recorded
        assert canary not in branch


@pytest.fixture
def key_canary(tmp_path, monkeypatch, settings) -> tuple[Path, str]:
    """A GitHub App private key file outside every worktree (plain text: redaction must not be
    what hides it)."""
    value = f"KEY-CANARY-{os.urandom(8).hex()}"
    key = tmp_path / "app-key" / "private-key.pem"
    key.parent.mkdir()
    key.write_text(value)
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY_FILE", str(key))
    settings.GITHUB_APP_PRIVATE_KEY_FILE = str(key)
    return key, value


def environ_canary() -> str:
    """An entry of this process's /proc/self/environ (what a symlink to it would hand TAC-X)."""
    entries = [e for e in Path("/proc/self/environ").read_bytes().decode("utf-8", "replace").split("\x00") if "=" in e]
    return max(entries, key=len)


def test_plan_md_as_a_symlink_to_tacx_environment_is_refused(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    workflow(clone, [("planning", [{"symlink": "plan.md", "to": "/proc/self/environ"}])])
    task = run(local_repository)
    assert_refused(task, "planning", "plan.md is a symlink to /proc/self/environ: refused", [environ_canary()], origin)


def test_review_md_as_a_symlink_to_the_app_key_is_refused(local_repository, origin_and_clone, key_canary):
    origin, clone = origin_and_clone
    key, value = key_canary
    workflow(
        clone,
        [("planning", PLAN), ("building", BUILD), ("reviewing", [{"symlink": "review.md", "to": str(key)}, {"say": "VERDICT: APPROVE"}])],
    )
    task = run(local_repository)
    assert_refused(task, "reviewing", "review.md is a symlink to ", [value], origin)
    assert key.read_text() == value  # and it is still there (the unlink never followed the link)


def test_plan_md_as_a_symlink_to_a_sibling_worktree_is_refused(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    value = f"SIBLING-CANARY-{os.urandom(8).hex()}"
    sibling = Path(django_settings.TACX["WORKTREE_ROOT"]) / "other-repo-9-t99"
    sibling.mkdir(parents=True)
    (sibling / "secret.txt").write_text(value)
    workflow(clone, [("planning", [{"symlink": "plan.md", "to": str(sibling / "secret.txt")}])])
    task = run(local_repository)
    assert_refused(task, "planning", f"plan.md is a symlink to {sibling / 'secret.txt'}: refused", [value], origin)
    assert (sibling / "secret.txt").read_text() == value


def test_plan_md_as_a_hardlink_is_refused(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    workflow(clone, [("planning", [{"hardlink": "plan.md", "to": "README.md"}])])
    task = run(local_repository)
    assert_refused(task, "planning", "plan.md is a hardlink (2 names for one file): refused", [], origin)


def test_plan_md_as_a_fifo_ends_the_attempt_at_once(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    workflow(clone, [("planning", [{"fifo": "plan.md"}])])
    started = time.monotonic()
    task = run(local_repository)
    assert time.monotonic() - started < 60
    assert_refused(task, "planning", "plan.md is a FIFO, not a regular file: refused", [], origin)


def test_a_sparse_gigabyte_plan_is_refused_unread(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    workflow(clone, [("planning", [{"sparse": "plan.md", "size": 1 << 30}])])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    task = run(local_repository)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert_refused(task, "planning", "plan.md is 1073741824 bytes; the limit is 262144: refused", [], origin)
    assert grown < 200 * 1024, f"the worker grew by {grown} KiB"
    assert all(len(r.output_text) < 300_000 and len(r.prompt) < 300_000 for r in StageResult.objects.filter(task=task))


def test_a_symlink_inside_the_worktree_is_committed_as_a_link(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    workflow(clone, [("planning", PLAN), ("building", [*BUILD, {"symlink": "docs/readme", "to": "../README.md"}])])
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert git(origin, "ls-tree", task.branch, "docs/readme").startswith("120000 blob ")
    assert git(origin, "cat-file", "-p", f"{task.branch}:docs/readme") == "../README.md"


@pytest.mark.parametrize("committed_by_agent", [False, True])
def test_a_symlink_into_proc_is_not_committed_nor_pushed(local_repository, origin_and_clone, committed_by_agent):
    origin, clone = origin_and_clone
    build = [*BUILD, {"symlink": "env", "to": "/proc/self/environ"}]
    if committed_by_agent:
        build += [{"run": ["git", "add", "-A"]}, {"run": ["git", "commit", "-q", "-m", "feature"]}]
    workflow(clone, [("planning", PLAN), ("building", build)])
    task = run(local_repository)
    assert_refused(task, "building", "env is a symlink to /proc/self/environ, into /proc: refused", [environ_canary()], origin)
    assert task.branch not in git(origin, "branch", "--list") or "env" not in git(origin, "ls-tree", "--name-only", task.branch)


def test_an_embedded_repository_with_a_clean_filter_never_runs_it(local_repository, origin_and_clone, key_canary, tmp_path):
    """Reproduced: an embedded repository's own config defines a clean filter, `* filter=x` in its
    attributes, a stale mtime, added as a gitlink: TAC-X's `git status`/`git add -A` recursed and ran
    the filter outside the sandbox, which copied the App key out."""
    origin, clone = origin_and_clone
    key, value = key_canary
    marker = tmp_path / "filter-ran"
    leak = f"cat {key} > leak.txt; touch {marker}; cat"
    lib = "vendor/lib"
    build = [
        *BUILD,
        {"run": ["git", "init", "-q", lib]},
        {"write": f"{lib}/data.txt", "text": "data\n"},
        {"write": f"{lib}/.gitattributes", "text": "* filter=x\n"},
        {"run": ["git", "-C", lib, "config", "filter.x.clean", leak]},
        {"run": ["git", "-C", lib, "add", "-A"]},
        {"run": ["git", "-C", lib, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "lib"]},
        {"mtime": f"{lib}/data.txt", "seconds": 1_000_000_000},
        {"run": ["git", "add", lib]},
    ]
    workflow(clone, [("planning", PLAN), ("building", build)])
    task = run(local_repository)
    assert_refused(task, "building", "the worktree holds an embedded git repository (vendor/lib/.git): refused", [value], origin)
    assert not marker.exists(), "the embedded repository's filter ran as TAC-X"
    # The agent's own `git add` ran the filter inside the sandbox, where the key is out of reach.
    leaked = Path(task.worktree_path) / lib / "leak.txt"
    assert not leaked.exists() or value not in leaked.read_text()


def test_a_submodule_is_refused_unless_the_workflow_allows_it(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    base = git(clone, "rev-parse", "HEAD")
    build = [
        *BUILD,
        {"write": ".gitmodules", "text": '[submodule "x"]\n\tpath = vendor/x\n\turl = https://example.com/x.git\n'},
        {"run": ["git", "update-index", "--add", "--cacheinfo", f"160000,{base},vendor/x"]},
    ]
    workflow(clone, [("planning", PLAN), ("building", build)])
    task = run(local_repository)
    assert_refused(task, "building", "the index records a submodule (gitlink) at vendor/x", [], origin)


def test_a_gitmodules_change_is_refused_unless_allowed_and_committed_when_allowed(local_repository, origin_and_clone):
    origin, clone = origin_and_clone
    build = [*BUILD, {"write": ".gitmodules", "text": '[submodule "x"]\n\tpath = vendor/x\n\turl = https://example.com/x.git\n'}]
    workflow(clone, [("planning", PLAN), ("building", build)])
    task = run(local_repository)
    assert_refused(task, "building", ".gitmodules is a .gitmodules change; the workflow does not allow submodules", [], origin)

    workflow(clone, [("planning", PLAN), ("building", build)], extra="allow_submodules: true\n")
    git(clone, "push", "-q", "origin", "main")
    task = run(local_repository, number=20)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert ".gitmodules" in git(origin, "ls-tree", "--name-only", task.branch)


@pytest.mark.cli
def test_the_real_claude_cli_bash_tool_cannot_hand_back_the_app_key(local_repository, origin_and_clone, key_canary, monkeypatch):
    origin, clone = origin_and_clone
    key, value = key_canary
    script = {
        "conversations": [
            {
                "name": "planning",
                "match": "TACX-STAGE: planning",
                "turns": [
                    {"text": "Planning.", "tool_calls": [{"bash": f"ln -sf {shlex.quote(str(key))} plan.md && ls -l plan.md"}], "usage": {"input_tokens": 10, "output_tokens": 5}},
                    {"text": "Plan written.", "usage": {"input_tokens": 12, "output_tokens": 3}},
                ],
            }
        ]
    }
    server = ScriptedModelServer(script).start()
    try:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", DUMMY_API_KEY)
        (clone / ".tac").mkdir(exist_ok=True)
        (clone / ".tac" / "workflow.yaml").write_text(
            "stages:\n  - name: planning\n    provider: claude\n    model: claude-sonnet-4-5\n    timeout: 120\n  - name: pr_creation\n"
        )
        git(clone, "add", "-A")
        git(clone, "commit", "-q", "-m", "workflow")
        task = run(local_repository)
    finally:
        server.stop()
    assert_refused(task, "planning", "plan.md is a symlink to ", [value], origin)


def test_commit_subjects_quoted_back_are_capped(local_repository, origin_and_clone):
    from dashboard import selectors

    origin, clone = origin_and_clone
    subject = "S" * 5000
    build = [*BUILD, {"run": ["git", "add", "-A"]}, {"run": ["git", "commit", "-q", "-m", subject]}]
    workflow(clone, [("planning", PLAN), ("building", build)])
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    result = selectors.task_result(task)
    assert result is not None and result.commits
    assert all(len(c.subject) <= 200 for c in result.commits)
    assert subprocess.run(["git", "log", "-1", "--format=%s", task.branch], cwd=origin, capture_output=True, text=True).stdout.strip() == subject
