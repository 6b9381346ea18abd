"""Best of N (issue 25) with the real agent CLIs against the scripted model server: three
candidates of one building stage, each a stage job of its own in its own worktree, branch and
sandbox; the repository's test command on each; the judge (the reviewing stage's provider);
the smallest diff; the winner's commits on the task branch and in the pull request; the losers'
branches removed when the task ends. A real bare origin, the real database."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli_runs import CLI_VERSIONS, DUMMY_API_KEY
from harness.modelserver import ScriptedModelServer
from pipeline import jobs, services
from pipeline.models import Stage, StageResult, Task
from tests.conftest import ROOT, git, grant, point_claude_at

pytestmark = [pytest.mark.cli, pytest.mark.django_db(transaction=True)]

DEMO_SCRIPT = yaml.safe_load((ROOT / "demo" / "script.yaml").read_text())
CHECK = 'from greeter import farewell\n\nassert farewell("Ada") == "Goodbye, Ada", farewell("Ada")\nprint("1 passed")\n'
WRONG = "cat >> greeter.py <<'PY'\n\n\ndef farewell(name: str) -> str:\n    return f\"Bye {name}\"\nPY\n"
SMALL = "cat >> greeter.py <<'PY'\n\n\ndef farewell(name: str) -> str:\n    return f\"Goodbye, {name}\"\nPY\n"
BIG = (
    "cat >> greeter.py <<'PY'\n\n\ndef farewell(name: str) -> str:\n"
    '    """Say goodbye to `name`.\n\n    The counterpart of greet(): same shape, other words.\n    """\n'
    '    message = "Goodbye"\n    separator = ", "\n    return message + separator + name\nPY\n'
)


def conversation(name: str) -> dict:
    return copy.deepcopy(next(c for c in DEMO_SCRIPT["conversations"] if c["name"] == name))


def candidate(k: int, change: str, message: str, usage: int) -> dict:
    """Candidate c<k> of the building stage: one change, committed, then a final word."""
    return {
        "name": f"c{k}",
        "match": f"(candidate c{k})",
        "turns": [
            {"tool_calls": [{"bash": change}], "usage": {"input_tokens": usage, "output_tokens": 50}},
            {
                "tool_calls": [{"bash": f"git add -A && git commit -q -m '{message}'"}],
                "usage": {"input_tokens": usage + 100, "output_tokens": 20},
            },
            {"text": "Done.", "usage": {"input_tokens": usage + 200, "output_tokens": 5}},
        ],
    }


def judge(text: str) -> dict:
    return {
        "name": "judge",
        "match": "(selection)",
        "turns": [{"text": text, "usage": {"input_tokens": 3000, "output_tokens": 40}}],
    }


def script(judge_text: str) -> dict:
    return {
        "conversations": [
            candidate(1, WRONG, "c1: farewell, wrong words", 1000),
            candidate(2, BIG, "c2: farewell, the long way", 1100),
            candidate(3, SMALL, "c3: farewell", 1200),
            judge(judge_text),
            conversation("planning"),
            conversation("reviewing"),
        ]
    }


def workflow(building: str, **top) -> str:
    data = {
        "stages": [{"name": "planning"}, yaml.safe_load(building), {"name": "reviewing"}, {"name": "pr_creation"}],
        "test_command": {"run": f"{sys.executable} check.py", "timeout": 60},
        **top,
    }
    return yaml.safe_dump(data)


def setup(clone: Path, text: str) -> None:
    (clone / "check.py").write_text(CHECK)
    (clone / ".tac").mkdir(exist_ok=True)
    (clone / ".tac" / "workflow.yaml").write_text(text)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "workflow and check")


def start(repository, issue: int = 42) -> Task:
    task, created = services.task_create(
        repository=repository, issue_number=issue, title="Add a farewell", body="Please add farewell(name).", trigger_source="cli"
    )
    assert created
    services.task_dispatch(task=task, enqueue=False)
    return task


def story(task: Task) -> str:
    """What happened, for an assertion's message: the reason, the stages, the status events."""
    stages = list(task.stages.values_list("name", "candidate", "status", "error"))
    events = [e.data.get("message") for e in task.events.order_by("id") if e.data.get("message")]
    return "\n".join(map(str, [task.status_reason, *stages, *events]))


@pytest.fixture
def every_provider(monkeypatch, start_model_server):
    """The scripted server with claude, codex and gemini pointed at it (each through its own variables)."""

    def start(script_: dict) -> ScriptedModelServer:
        server = start_model_server(script_)
        for name, value in {
            "GOOGLE_GEMINI_BASE_URL": server.url,
            "GEMINI_API_KEY": DUMMY_API_KEY,
            "OPENAI_BASE_URL": f"{server.url}/v1",
            "OPENAI_API_KEY": DUMMY_API_KEY,
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": DUMMY_API_KEY,
            "TACX_MODEL_API_KEY": DUMMY_API_KEY,
        }.items():
            monkeypatch.setenv(name, value)
        return server

    return start


@pytest.fixture
def claude_server(monkeypatch, start_model_server):
    def run(s: dict) -> ScriptedModelServer:
        server = start_model_server(s)
        point_claude_at(monkeypatch, server, tacx_key=True)
        return server

    return run


def test_three_claude_candidates_the_smaller_right_fix_wins_and_a_garbage_judge_falls_back(
    local_repository, origin_and_clone, claude_server, client, alice
):
    """One run asserts: candidates as stage jobs of their own (own worktree, branch, attempt,
    cost), the failing one out by its tests, the judge's garbage recorded with the fallback rule,
    the smaller right fix chosen, only its commits on the task branch and in the PR, the PR
    body's candidates line, and, once the task ended, no candidate worktree or branch left."""
    origin, clone = origin_and_clone
    setup(clone, workflow("{name: building, candidates: 3}"))
    claude_server(script("I like the second one best, it is very thorough!"))
    task = jobs.task_run_inline(task=start(local_repository))
    assert task.status == Task.Status.SUCCEEDED, story(task)

    parent = Stage.objects.get(task=task, name="building", parent__isnull=True)
    children = list(parent.candidates.order_by("candidate"))
    assert [(c.candidate, c.status, c.provider) for c in children] == [(k, "succeeded", "claude") for k in (1, 2, 3)]
    branches = [c.candidate_info["branch"] for c in children]
    assert branches == [f"tacx-candidates/{task.branch.removeprefix('tacx/')}/c{k}" for k in (1, 2, 3)]
    results = {c.candidate: StageResult.objects.get(stage=c) for c in children}
    assert [results[k].tests_status for k in (1, 2, 3)] == ["failed", "passed", "passed"]
    assert all(r.cost_usd > 0 and r.input_tokens > 0 for r in results.values())
    # Each ran in its own worktree, recorded for the clean-up (the task's, then c1..c3).
    paths = sorted(task.worktrees.values_list("path", flat=True))
    assert paths == sorted([task.worktree_path] + [f"{task.worktree_path}-c{k}" for k in (1, 2, 3)])

    record = parent.candidate_info["passes"]["first"]
    assert record["passing"] == [2, 3]
    assert record["judge"]["ok"] is False and "unusable answer (its last line is not JSON)" in record["judge"]["error"]
    assert (record["chosen"], record["rule"]) == (3, "smallest_diff")
    assert "judge: unusable answer" in record["reasons"]
    sizes = {r["k"]: r["lines"] for r in record["candidates"]}
    assert sizes[3] < sizes[2]
    selection = StageResult.objects.get(stage=parent, output_file="selection")
    assert selection.success and selection.provider == "claude" and selection.cost_usd > 0  # the judge's run
    assert selection.tests_status == "passed"
    assert "TACX-STAGE: building (selection)" in selection.prompt and 'return f"Bye {name}"' not in selection.prompt

    # Only the winner's commits are on the task branch, in the origin.
    log = git(origin, "log", "--format=%s", f"main..{task.branch}")
    assert "c3: farewell" in log and "c2:" not in log and "c1:" not in log
    assert 'return f"Goodbye, {name}"' in git(origin, "show", f"{task.branch}:greeter.py")
    body = StageResult.objects.get(task=task, stage__name="pr_creation").output_text
    assert "## Candidates" in body and "3 candidates, $" in body and "chosen: c3 claude" in body and "tests 1/1" in body
    assert task.cost_usd == sum(r.cost_usd for r in StageResult.objects.filter(task=task))

    # The task page shows them side by side: status, tests, diff, cost, transcript, the choice.
    client.force_login(grant(alice, "view_task"))
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    table = page[page.index('id="candidates-building"') :]
    table = table[: table.index("</section>")]
    rows = table.split('<tr class="candidate')[1:]
    assert len(rows) == 3 and "chosen" in rows[2] and "chosen" not in rows[0] + rows[1]
    assert "1/1" in rows[2] and "failed" in rows[0] and f"?attempt={results[3].pk}#transcript" in rows[2]
    assert "Chosen: <strong>c3</strong> by smallest_diff" in table and "Judge: unusable answer" in table

    # Kept until the task ends; then the clean-up removes every candidate's worktree and branch.
    assert all(git(origin, "branch", "--list", b) for b in branches)
    services.task_worktree_remove(task=task)
    assert not any(git(origin, "branch", "--list", b) for b in branches)
    assert not any(Path(task.worktree_path).with_name(Path(task.worktree_path).name + f"-c{k}").exists() for k in (1, 2, 3))
    assert not Path(task.worktree_path).exists()


def test_mixed_providers_as_candidates_and_the_judge_chooses_by_its_answer(local_repository, origin_and_clone, every_provider):
    """claude, codex and gemini as the three candidates of one stage, each through its own API of
    the scripted server; the judge's valid answer chooses the larger right fix (the judge's
    rule, not the diff size), with its reasons in the record and the PR body."""
    origin, clone = origin_and_clone
    s = script('{"choice": 2, "reasons": "c2 documents the function"}')
    s["conversations"][0], s["conversations"][2] = (
        candidate(1, SMALL, "c1: farewell", 1000),
        candidate(3, WRONG, "c3: wrong", 1200),
    )
    server = every_provider(s)
    building = (
        "{name: building, candidates: [{provider: claude}, "
        f'{{provider: codex, model: gpt-5, options: {{base_url: "{server.url}/v1", sandbox: danger-full-access}}}}, '
        "{provider: gemini, model: gemini-2.5-pro}]}"
    )
    setup(clone, workflow(building))
    task = jobs.task_run_inline(task=start(local_repository))
    assert task.status == Task.Status.SUCCEEDED, story(task)
    parent = Stage.objects.get(task=task, name="building", parent__isnull=True)
    children = list(parent.candidates.order_by("candidate"))
    assert [c.provider for c in children] == ["claude", "codex", "gemini"]
    versions = [StageResult.objects.get(stage=c).cli_version for c in children]
    assert (
        versions[0].startswith(CLI_VERSIONS["claude"])
        and versions[1].endswith(CLI_VERSIONS["codex"])
        and versions[2] == CLI_VERSIONS["gemini"]
    )
    assert {r["api"] for r in server.requests} >= {"anthropic", "openai", "gemini"}
    record = parent.candidate_info["passes"]["first"]
    assert record["passing"] == [1, 2]
    assert (record["chosen"], record["rule"], record["reasons"]) == (2, "judge", "c2 documents the function")
    assert record["judge"] == {"ok": True, "choice": 2, "reasons": "c2 documents the function"}
    log = git(origin, "log", "--format=%s", f"main..{task.branch}")
    assert "c2: farewell, the long way" in log and "c1:" not in log and "c3:" not in log
    body = StageResult.objects.get(task=task, stage__name="pr_creation").output_text
    assert "chosen: c2 codex/gpt-5 (tests 1/1, judge: c2 documents the function)" in body
