"""`manage.py eval_run` end to end: three instances of a real small project, each a normal task
run by the real `claude` CLI against the scripted model server (the right fix, no change, a
wrong fix), graded in the sandbox by their tests: resolved, empty patch, unresolved (its new
test loops forever and meets the per-test limit), with the costs the price table gives for the
script's tokens. Nothing reaches the project's own repository."""

from __future__ import annotations

import json
import shlex
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from evaluation import selectors
from evaluation.instances import Instance, to_jsonl
from evaluation.mining import candidates, patch_between
from evaluation.models import EvalResult, EvalRun
from pipeline.lib.pricing import cost_for
from pipeline.lib.usage import Usage
from pipeline.models import Task
from tests import eval_project
from tests.conftest import ROOT, git, needs_cli, point_claude_at

pytestmark = [*needs_cli(ROOT / "node_modules" / ".bin" / "claude"), pytest.mark.django_db(transaction=True)]

MODEL = "claude-sonnet-4-5"
WORKFLOW = f"""
stages:
  - name: building
    provider: claude
    model: {MODEL}
    timeout: 120
    max_attempts: 1
    permission_mode: acceptEdits
    allowed_tools: [Read, Write, Edit, Bash]
  - name: pr_creation
"""
STATEMENTS = {
    1: "add() subtracts\n\nadd(2, 3) gives -1 instead of 5.",
    2: "Parse ORDER BY words\n\nWe need ordering('name ASC NULLS FIRST').",
    3: "countdown never ends\n\ncountdown(-1) never returns.",
}
SCRIPT = {
    "conversations": [
        {
            "name": "right-fix",
            "match": "gives -1 instead of 5",
            "turns": [
                {"tool_calls": [{"bash": "sed -i 's/return a - b/return a + b/' calc.py && git add -A && git commit -qm 'Fix add'"}],
                 "usage": {"input_tokens": 1200, "output_tokens": 60, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 100}},
                {"text": "Fixed.", "usage": {"input_tokens": 1300, "output_tokens": 7}},
            ],
        },
        {
            "name": "no-change",
            "match": "We need ordering(",
            "turns": [{"text": "I cannot see what to change.", "usage": {"input_tokens": 900, "output_tokens": 11}}],
        },
        {
            "name": "wrong-fix",
            "match": "countdown(-1) never returns",
            "turns": [
                {"tool_calls": [{"bash": "printf '\\n# countdown looks fine\\n' >> calc.py"}], "usage": {"input_tokens": 1000, "output_tokens": 40}},
                {"text": "Done.", "usage": {"input_tokens": 1100, "output_tokens": 5}},
            ],
        },
    ]
}
USAGE_KEYS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens", "cache_read_tokens": "cache_read_input_tokens", "cache_write_tokens": "cache_creation_input_tokens"}


def scripted_cost(name: str) -> Decimal:
    turns = next(c for c in SCRIPT["conversations"] if c["name"] == name)["turns"]
    sums = {ours: sum(t.get("usage", {}).get(theirs, 0) for t in turns) for ours, theirs in USAGE_KEYS.items()}
    return cost_for(MODEL, Usage(**sums))


def project_instances(repo) -> list[Instance]:
    """The three good fixes as instances (FAIL_TO_PASS as eval_mine finds them; a few
    PASS_TO_PASS tests, to keep the run short)."""
    found = {c.issues[0]: c for c in candidates(repo) if hasattr(c, "base") and c.issues[0] in (1, 2, 3)}
    instances = []
    for number, candidate in sorted(found.items()):
        instances.append(
            Instance(
                instance_id=f"calc-{number}",
                repo=str(repo),
                base_commit=candidate.base,
                problem_statement=STATEMENTS[number],
                test_patch=patch_between(repo, candidate.base, candidate.commit, candidate.test_files),
                FAIL_TO_PASS=tuple(eval_project.FAIL_TO_PASS[number]),
                PASS_TO_PASS=("tests/test_calc.py::test_countdown_from_three", "tests/test_calc.py::test_module_has_a_docstring"),
                patch=patch_between(repo, candidate.base, candidate.commit, candidate.code_files),
            )
        )
    return instances


def test_right_fix_no_change_and_wrong_fix_are_resolved_empty_patch_and_unresolved(tmp_path, monkeypatch, start_model_server, settings):
    repo, _ = eval_project.build(tmp_path)
    branches_before = git(repo, "branch", "--all")
    instances_file = tmp_path / "instances.jsonl"
    instances_file.write_text(to_jsonl(project_instances(repo)) + "{not json\n")
    workflow = tmp_path / "building-only.yaml"
    workflow.write_text(WORKFLOW)
    server = start_model_server(SCRIPT)
    point_claude_at(monkeypatch, server, tacx_key=True)

    out, err = StringIO(), StringIO()
    call_command(
        "eval_run", str(instances_file), "--workflow", str(workflow), "--concurrency", "2", "--test-timeout", "3",
        "--test-runner", shlex.join(eval_project.RUNNER), stdout=out, stderr=err,
    )

    run = EvalRun.objects.get()
    assert run.status == EvalRun.Status.FINISHED
    assert "line 4: not valid JSON" in err.getvalue() and run.input_errors[0]["line"] == 4
    results = {r.instance_id: r for r in EvalResult.objects.filter(run=run).select_related("task")}
    assert {k: r.outcome for k, r in results.items()} == {"calc-1": "resolved", "calc-2": "empty_patch", "calc-3": "unresolved"}, {
        k: r.reason for k, r in results.items()
    }
    # The right fix: its diff recorded, every test passing.
    assert "+    return a + b" in results["calc-1"].diff
    assert set(results["calc-1"].tests["FAIL_TO_PASS"].values()) == {"PASSED"}
    # The wrong fix: the new test loops forever, stopped by the per-test limit.
    assert results["calc-3"].tests["FAIL_TO_PASS"] == {"tests/test_calc.py::test_countdown_from_minus_one_is_empty": "TIMEOUT"}
    assert results["calc-3"].tests["PASS_TO_PASS"] == {t: "PASSED" for t in results["calc-3"].instance["PASS_TO_PASS"]}
    assert "timed out after 3 s each" in results["calc-3"].reason
    assert results["calc-2"].diff == "" and "building left no changes" in results["calc-2"].reason
    # Each is a normal task that ran its one building attempt; no pull request.
    for name, instance_id in (("right-fix", "calc-1"), ("no-change", "calc-2"), ("wrong-fix", "calc-3")):
        r = results[instance_id]
        assert r.task.trigger_source == "eval" and r.task.pr_url == ""
        assert r.attempts == 1 and r.rounds == 1 and r.wall_seconds > 0
        assert r.cost_usd == pytest.approx(scripted_cost(name), abs=Decimal("0.000001")), name
        assert r.cost_usd == r.task.cost_usd
    assert results["calc-1"].task.status == Task.Status.SUCCEEDED
    assert results["calc-1"].input_tokens == 2500 and results["calc-1"].cache_read_tokens == 300

    summary = selectors.run_summary(run)
    assert summary.resolved == 1 and summary.resolve_rate == pytest.approx(1 / 3)
    total = sum(scripted_cost(n) for n in ("right-fix", "no-change", "wrong-fix"))
    assert summary.cost_usd == pytest.approx(total, abs=Decimal("0.00001"))
    assert summary.cost_per_resolved == pytest.approx(total, abs=Decimal("0.00001"))
    assert "3/3 done, 1 resolved" in out.getvalue()
    # The copies of the repository the run made (and their mirrors) are gone once it ended.
    assert "removed 6 evaluation copies" in out.getvalue()
    assert list((settings.VAR_DIR / "eval" / "repos").glob("*.git")) == []
    assert list((settings.VAR_DIR / "repos").glob("local-eval*.git")) == []
    assert list((settings.VAR_DIR / "taskgit").glob("eval-*")) == [] and all(r.task.worktree_removed_at for r in EvalResult.objects.select_related("task"))
    # The project's own repository got no branch.
    assert git(repo, "branch", "--all") == branches_before
    # The export is SWE-bench predictions with the outcomes.
    lines = [json.loads(line) for line in selectors.export_lines(run)]
    assert [(x["instance_id"], x["resolved"]) for x in lines] == [("calc-1", True), ("calc-2", False), ("calc-3", False)]
    assert lines[0]["model_patch"] == results["calc-1"].diff
