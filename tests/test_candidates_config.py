"""Best of N (issue 25), the parts without a run: the workflow keys and their errors, the judge's
answer read strictly, the choice rules, the candidates' branch names (no D/F conflict in git)."""

from __future__ import annotations

import subprocess

import pytest

from pipeline.attempt.selection import choose, parse_verdict, summary
from pipeline.lib.candidates import CandidateSpec, candidate_branch
from pipeline.workflow import Workflow, WorkflowError, default_workflow, load_workflow_text


def stages(building: str, *, reviewing: bool = True) -> str:
    return (
        "stages:\n - name: planning\n - name: building\n"
        + building
        + (" - name: reviewing\n" if reviewing else "")
        + " - name: pr_creation\n"
    )


def errors(text: str) -> list[str]:
    with pytest.raises(WorkflowError) as info:
        load_workflow_text(text)
    return info.value.errors


def test_a_number_or_a_list_of_candidates_and_the_default_select():
    w = load_workflow_text(stages("   candidates: 3\n"))
    b = w.stage("building")
    assert b.candidates == (CandidateSpec("claude", "claude-sonnet-4-5"),) * 3
    assert b.select == ("tests", "judge", "smallest_diff")
    w = load_workflow_text(
        stages(
            "   candidates: [{provider: claude}, {provider: codex, model: gpt-5, prompt_variant: Keep it small}]\n   select: [tests, smallest_diff]\n"
        )
    )
    b = w.stage("building")
    assert b.candidates == (CandidateSpec("claude", "claude-sonnet-4-5"), CandidateSpec("codex", "gpt-5", "Keep it small"))
    assert b.select == ("tests", "smallest_diff")
    # The snapshot a task keeps reads back the same; one candidate is the ordinary run.
    assert Workflow.from_json(w.to_json()).stage("building") == b
    assert load_workflow_text(stages("   candidates: 1\n")).stage("building").candidates == ()


def test_a_workflow_without_candidates_keeps_its_fingerprint_keys():
    data = default_workflow().to_json()
    assert not any({"candidates", "select", "round_candidates"} & set(s) for s in data["stages"])


def test_bad_values_are_explained_with_the_file_the_field_and_the_problem():
    assert errors(stages("   candidates: 0\n")) == [
        ".tac/workflow.yaml: stages[1] (building).candidates: must be between 1 and 8, got 0"
    ]
    assert errors(stages("   candidates: [{provider: claude, colour: red}]\n")) == [
        ".tac/workflow.yaml: stages[1] (building).candidates[0].colour: unknown key (allowed: provider, model, prompt_variant, options)"
    ]
    assert (
        "unknown or unusable provider 'command'"
        in errors(stages("   candidates: [{provider: command}, {provider: claude}]\n"))[0]
    )
    assert errors(stages("   select: [tests, vibes]\n")) == [
        ".tac/workflow.yaml: stages[1] (building).select: unknown rule 'vibes' (known: tests, judge, smallest_diff; the smallest diff always breaks a tie last)"
    ]
    assert errors(stages("   select: [tests, tests]\n"))[0].endswith("rule 'tests' appears twice")
    assert errors(stages("   round_candidates: {review: 2, lunch: 3}\n"))[0].endswith(
        "round_candidates.lunch: unknown round kind (known: review, comment, ci_fix)"
    )
    assert (
        "only the building stage may run candidates"
        in errors("stages:\n - name: planning\n   candidates: 2\n - name: building\n - name: pr_creation\n")[0]
    )
    assert "there is no reviewing stage" in errors(stages("   candidates: 2\n   select: [judge]\n", reviewing=False))[0]
    # Several problems at once, as for every other key.
    assert len(errors(stages("   candidates: yes\n   select: 3\n"))) == 2


def test_a_budget_that_pauses_is_refused_where_a_stage_runs_candidates():
    # Several candidates reaching one pausing budget would end as budget stops (one open pause
    # per task), so the workflow says so before anything runs instead of surprising the user.
    task_level = errors("budget: {usd: 2, on_exceed: pause}\n" + stages("   candidates: 3\n"))
    assert any("budget.on_exceed: is pause, but stage building runs candidates" in e for e in task_level)
    stage_level = errors(stages("   candidates: 2\n   budget: {usd: 1, on_exceed: pause}\n"))
    assert any("stages[1] (building).budget.on_exceed: is pause" in e for e in stage_level)
    # The same budgets without candidates, or failing instead of pausing, are accepted.
    load_workflow_text("budget: {usd: 2, on_exceed: pause}\n" + stages(""))
    load_workflow_text("budget: {usd: 2, on_exceed: fail}\n" + stages("   candidates: 3\n"))


def test_round_candidates_are_one_unless_given_per_round_kind():
    b = load_workflow_text(stages("   round_candidates: {ci_fix: 2}\n")).stage("building")
    assert b.candidates_for("review") == () and len(b.candidates_for("ci_fix")) == 2 and b.candidates_for(None) == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("I pick the second.", "its last line is not JSON"),
        ('{"choice": 2}', 'not an object with exactly "choice" and "reasons"'),
        ('{"choice": 2, "reasons": "x", "also": 1}', 'not an object with exactly "choice" and "reasons"'),
        ('{"choice": 7, "reasons": "x"}', "choice must be one of [2, 3] or null"),
        ('{"choice": true, "reasons": "x"}', "choice must be one of [2, 3] or null"),
        ('{"choice": "2", "reasons": "x"}', "choice must be one of [2, 3] or null"),
        ('{"choice": 2, "reasons": "  "}', "reasons must be a non-empty string"),
        ("[" * 100000, "its last line is not JSON"),
    ],
)
def test_a_hostile_judge_answer_is_an_error_that_says_what_was_wrong(text, problem):
    verdict = parse_verdict(text, {2, 3})
    assert verdict["ok"] is False and f"unusable answer ({problem})" in verdict["error"]


def test_a_good_judge_answer_on_its_last_line_or_in_a_closing_json_block():
    assert parse_verdict('Both pass.\n{"choice": 3, "reasons": "smaller"}', {2, 3}) == {
        "ok": True,
        "choice": 3,
        "reasons": "smaller",
    }
    assert parse_verdict('Here:\n```json\n{"choice": null, "reasons": "same"}\n```', {2, 3}) == {
        "ok": True,
        "choice": None,
        "reasons": "same",
    }


def test_the_rules_judge_then_smallest_diff_then_lowest_number():
    two = [{"k": 2, "lines": 9}, {"k": 3, "lines": 4}]
    assert choose(two, {"ok": True, "choice": 2, "reasons": "documented"}) == (2, "judge", "documented")
    assert choose(two, {"ok": True, "choice": None, "reasons": "same"})[:2] == (3, "smallest_diff")
    assert choose(two, {"ok": False, "error": "unusable answer (empty)"})[2].startswith(
        "judge: unusable answer (empty); c3 has the smallest diff"
    )
    assert choose([{"k": 2, "lines": 4}, {"k": 1, "lines": 4}], {})[:2] == (1, "smallest_diff")
    assert choose([{"k": 5, "lines": 40}], {})[:2] == (5, "only one passed")


def test_the_summary_line_carries_every_candidates_cost_and_the_choice():
    rows = [
        {
            "k": 1,
            "label": "claude",
            "status": "succeeded",
            "tests": "0/1",
            "lines": 3,
            "files": 1,
            "cost_usd": "0.10",
            "error": "",
        },
        {
            "k": 2,
            "label": "codex/gpt-5",
            "status": "succeeded",
            "tests": "12/12",
            "lines": 9,
            "files": 2,
            "cost_usd": "0.31",
            "error": "",
        },
    ]
    text = summary({"candidates": rows, "passing": [2], "chosen": 2, "rule": "judge", "reasons": "clean"})
    assert text.splitlines()[0] == "2 candidates, $0.41; chosen: c2 codex/gpt-5 (tests 12/12, judge: clean)"


def test_candidate_branches_live_beside_the_task_branch_in_git(tmp_path):
    """`tacx/7-x/c1` could not exist next to `tacx/7-x` (a ref is a file or a directory)."""
    task_branch = "tacx/7-add-a-farewell"
    assert candidate_branch(task_branch, 2) == "tacx-candidates/7-add-a-farewell/c2"
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=tmp_path, capture_output=True, text=True
        )

    run("commit", "-q", "--allow-empty", "-m", "x")
    assert run("branch", task_branch).returncode == 0
    assert run("branch", f"{task_branch}/c1").returncode != 0  # the D/F conflict
    assert all(run("branch", candidate_branch(task_branch, k)).returncode == 0 for k in (1, 2, 3))
