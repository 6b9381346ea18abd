"""`manage.py eval_mine` on a real small project's history: the three commits that fix an issue
with a flipping test become instances with the right FAIL_TO_PASS, in the sandbox; the traps are
dropped with their reasons."""

from __future__ import annotations

import json
import shlex

import pytest
from django.core.management import CommandError, call_command

from evaluation.instances import parse_jsonl
from tests import eval_project
from tests.conftest import git

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(tmp_path):
    return eval_project.build(tmp_path)


def mine(tmp_path, repo, *extra: str, capsys) -> tuple[list, list[dict], str]:
    workflow = tmp_path / "eval-workflow.yaml"
    workflow.write_text(eval_project.WORKFLOW)
    out, dropped = tmp_path / "instances.jsonl", tmp_path / "dropped.jsonl"
    call_command(
        "eval_mine", "--repo", str(repo), "--limit", "10", "--workflow", str(workflow), "--test-timeout", "3",
        "--test-runner", shlex.join(eval_project.RUNNER), "--output", str(out), "--dropped", str(dropped), *extra,
    )
    instances, errors = parse_jsonl(out.read_text(), source=str(out))
    assert errors == []
    return instances, [json.loads(line) for line in dropped.read_text().splitlines()], capsys.readouterr().err


def test_it_finds_the_three_fixes_with_their_flipping_tests_and_drops_the_traps(tmp_path, project, capsys):
    repo, fixes = project
    instances, dropped, err = mine(tmp_path, repo, capsys=capsys)

    by_issue = {i.extra["issue_numbers"][0]: i for i in instances}
    assert sorted(by_issue) == [1, 2, 3]
    for number, instance in by_issue.items():
        assert list(instance.FAIL_TO_PASS) == eval_project.FAIL_TO_PASS[number], number
        assert instance.base_commit == git(repo, "rev-parse", f"{fixes[number]}^")
        assert instance.instance_id == f"calc-{number}" and instance.repo == str(repo.resolve())
        # SWE-bench's split: tests in test_patch, the rest in the reference patch.
        assert "tests/test_calc.py" in instance.test_patch and "calc.py" not in instance.test_patch.replace("tests/test_calc.py", "")
        assert "a/calc.py" in instance.patch and "tests/" not in instance.patch
    # The tests that passed before and after stay as PASS_TO_PASS (the looping one is not there).
    assert "tests/test_calc.py::test_countdown_from_three" in by_issue[3].PASS_TO_PASS
    assert "tests/test_calc.py::test_add_adds" in by_issue[3].PASS_TO_PASS
    # The problem statement is the commit message without the line that closes the issue.
    assert by_issue[1].problem_statement == "Fix add() subtracting\n\nadd(2, 3) gave -1."

    reasons = {d["issues"][0]: d["reason"] for d in dropped}
    assert "fail both before and after the fix on this interpreter" in reasons[4]
    assert "test_needs_python_nine" in reasons[4]
    assert reasons[5] == "changes no test file"
    assert "dropped" in err and "instance calc-2" in err


def test_since_and_limit_bound_what_is_mined(tmp_path, project, capsys):
    repo, fixes = project
    instances, _, _ = mine(tmp_path, repo, "--limit", "1", "--rev", fixes[2], capsys=capsys)
    assert [i.extra["issue_numbers"] for i in instances] == [[2]]  # newest first
    instances, dropped, _ = mine(tmp_path, repo, "--since", "2099-01-01", capsys=capsys)
    assert instances == [] and dropped == []


def test_bad_options_are_clear_errors(tmp_path, project):
    repo, _ = project
    with pytest.raises(CommandError, match="is not a git repository"):
        call_command("eval_mine", "--repo", str(tmp_path))
    with pytest.raises(CommandError, match="--since: must be a date"):
        call_command("eval_mine", "--repo", str(repo), "--since", "last week")
    with pytest.raises(CommandError, match="--rev: 'nope' is not a commit"):
        call_command("eval_mine", "--repo", str(repo), "--rev", "nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: 3\n")
    with pytest.raises(CommandError, match="bad.yaml: stages: must be a non-empty list"):
        call_command("eval_mine", "--repo", str(repo), "--workflow", str(bad))
