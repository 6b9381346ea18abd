"""Instances in the SWE-bench JSONL format, and reading pytest's verdicts: bad lines are clear
per-line errors, and test ids with spaces and brackets stay whole."""

from __future__ import annotations

import json

from evaluation import testlog
from evaluation.instances import parse_jsonl, to_jsonl
from evaluation.mining import CLOSES, is_test_path

GOOD = {
    "instance_id": "calc-1",
    "repo": "/src/calc",
    "base_commit": "a" * 40,
    "problem_statement": "add() subtracts\n\nIt should add.",
    "test_patch": "diff --git a/tests/t.py b/tests/t.py\n",
    "FAIL_TO_PASS": ["tests/t.py::test_add"],
    "PASS_TO_PASS": [],
}


def line(**changes) -> str:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...})


def test_a_good_line_round_trips_with_its_extra_fields():
    text = line(patch="diff --git a/calc.py b/calc.py\n", hints_text="see #3") + "\n"
    instances, errors = parse_jsonl(text)
    assert errors == []
    (instance,) = instances
    assert instance.title == "add() subtracts" and instance.patch.startswith("diff --git")
    assert json.loads(to_jsonl(instances)) == json.loads(text)


def test_swebench_datasets_json_encoded_test_lists_are_accepted():
    instances, errors = parse_jsonl(line(FAIL_TO_PASS=json.dumps(["t::a", "t::b [x y]"]), PASS_TO_PASS="[]"))
    assert errors == [] and instances[0].FAIL_TO_PASS == ("t::a", "t::b [x y]")


def test_each_bad_line_is_an_error_naming_the_line_and_the_field_and_the_rest_still_parse():
    text = "\n".join(
        [
            line(),
            "{not json",
            line(instance_id="c2", base_commit="main"),
            line(instance_id="c3", FAIL_TO_PASS=[]),
            line(instance_id="c4", problem_statement=...),
            line(instance_id="c5", PASS_TO_PASS=["tests/t.py::test_add"]),
            line(),  # the same id again
            "[1, 2]",
            "",
            line(instance_id="c9", FAIL_TO_PASS=[3]),
            line(instance_id="ok"),
        ]
    )
    instances, errors = parse_jsonl(text, source="x.jsonl")
    assert [i.instance_id for i in instances] == ["calc-1", "ok"]
    assert [str(e) for e in errors] == [
        "x.jsonl line 2: not valid JSON: Expecting property name enclosed in double quotes at column 2",
        "x.jsonl line 3: base_commit: must be a commit id (7 to 64 hex digits), got 'main'",
        "x.jsonl line 4: FAIL_TO_PASS: must name at least one test (the tests the fix makes pass)",
        "x.jsonl line 5: problem_statement: missing",
        "x.jsonl line 6: PASS_TO_PASS: 'tests/t.py::test_add' is in FAIL_TO_PASS too",
        "x.jsonl line 7: instance_id: 'calc-1' already on line 1",
        "x.jsonl line 8: (line): must be a JSON object, got list",
        "x.jsonl line 10: FAIL_TO_PASS[0]: must be a non-empty string, got 3",
    ]
    assert errors[1].instance_id == "c2"


def test_bytes_that_are_not_utf8_are_an_error_of_their_line():
    instances, errors = parse_jsonl(line().encode() + b"\n\xff\xfe\n")
    assert len(instances) == 1 and str(errors[0]) == "instances line 2: not UTF-8 text (byte 1 of the line)"


SUMMARY = """\
tests/t.py::test_x PASSED
=========================== short test summary info ============================
PASSED tests/t.py::test_order[ASC NULLS FIRST]
PASSED tests/t.py::test_order[a]b]
SKIPPED [1] tests/t.py:14: nope
XFAIL tests/t.py::test_xf - bug 1
XPASS tests/t.py::test_xp - bug 2
ERROR tests/test_imp.py
ERROR tests/t.py::test_err - RuntimeError: fixture
FAILED tests/t.py::test_order[DESC - x] - AssertionError: assert 'DESC -...
FAILED tests/t.py::test_xps - [XPASS(strict)] bug 3
==== 2 failed, 2 passed, 1 skipped, 1 xfailed, 1 xpassed, 2 errors in 0.03s ====
"""


def test_pytest_summary_lines_keep_ids_with_spaces_and_brackets_whole():
    statuses = testlog.parse_pytest(SUMMARY)
    assert statuses == {
        "tests/t.py::test_order[ASC NULLS FIRST]": "PASSED",
        "tests/t.py::test_order[a]b]": "PASSED",
        "tests/t.py::test_xf": "XFAIL",
        "tests/t.py::test_xp": "XPASS",
        "tests/test_imp.py": "ERROR",
        "tests/t.py::test_err": "ERROR",
        "tests/t.py::test_order[DESC - x]": "FAILED",
        "tests/t.py::test_xps": "FAILED",
    }
    # Output above the summary (a test printing "PASSED") is not a verdict.
    assert "tests/t.py::test_x" not in statuses


def test_known_ids_win_over_the_separator_rule():
    statuses = testlog.parse_pytest("= short test summary info =\nFAILED t.py::test_a[x - y] - boom\n", known=["t.py::test_a[x - y]"])
    assert statuses == {"t.py::test_a[x - y]": "FAILED"}


def test_the_expected_failure_rule_is_pytests_own():
    statuses = testlog.parse_pytest(SUMMARY)
    # An xfail that fails, and a non-strict xfail that starts passing, both pass; a strict one
    # that starts passing fails; a missing test fails; skipped is neither.
    assert testlog.passed(statuses, "tests/t.py::test_xf") and testlog.passed(statuses, "tests/t.py::test_xp")
    assert testlog.failed(statuses, "tests/t.py::test_xps")
    assert testlog.failed(statuses, "tests/t.py::test_missing") and not testlog.passed(statuses, "tests/t.py::test_missing")
    assert not testlog.passed({"t": "SKIPPED"}, "t") and not testlog.failed({"t": "SKIPPED"}, "t")
    assert testlog.failed({"t": "TIMEOUT"}, "t")


def test_collect_only_output_lists_the_ids():
    out = "tests/t.py::test_a\ntests/t.py::test_b[ASC NULLS FIRST]\n\n2 tests collected in 0.01s\n"
    assert testlog.collected_ids(out) == ["tests/t.py::test_a", "tests/t.py::test_b[ASC NULLS FIRST]"]


def test_what_closes_an_issue_and_what_is_a_test_file():
    assert CLOSES.findall("Fixes #12, closes #3; resolved #4. Fixed: #5") == ["12", "3", "4", "5"]
    assert CLOSES.findall("prefix #12 and #13") == []
    assert all(map(is_test_path, ["tests/data/x.json", "pkg/test_a.py", "a_test.py", "conftest.py", "src/testing/h.py"]))
    assert not any(map(is_test_path, ["calc.py", "docs/testimony.md", "src/contest.py"]))
