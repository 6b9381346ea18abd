"""The bundled evaluation sample (demo/eval-sample/) that `manage.py eval_demo` and the README's
worked example use: its history builds the same commits every time, `eval_mine` finds its four
instances (the README-only fix dropped) as the README says, and the scripted model has exactly one
conversation for each instance's issue."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from evaluation.instances import parse_jsonl
from harness.eval_sample import SAMPLE_DIR, build
from harness.management.commands.eval_demo import RUNNER
from harness.modelserver.script import load_script
from tests.conftest import git

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

FAIL_TO_PASS = {
    "shop-1": ["tests/test_shop.py::test_total_counts_quantities"],
    "shop-2": ["tests/test_shop.py::test_parse_price_separators[1,50]", "tests/test_shop.py::test_parse_price_separators[ 1,5 ]"],
    "shop-3": ["tests/test_shop.py::test_discount_over_100_is_refused"],
    "shop-4": ["tests/test_shop.py::test_slug_collapses_spaces"],
}


def test_the_sample_mines_into_four_instances_and_each_has_its_scripted_agent(tmp_path):
    repo = build(tmp_path / "shop")
    again = build(tmp_path / "shop-again")
    assert git(repo, "rev-parse", "HEAD") == git(again, "rev-parse", "HEAD")  # fixed authors and dates: the same commit ids

    out, dropped = tmp_path / "instances.jsonl", tmp_path / "dropped.jsonl"
    call_command(
        "eval_mine",
        "--repo",
        str(repo),
        "--workflow",
        str(SAMPLE_DIR / "workflow.yaml"),
        "--issues",
        str(SAMPLE_DIR / "issues.json"),
        "--test-runner",
        " ".join(RUNNER),
        "--test-timeout",
        "10",
        "--output",
        str(out),
        "--dropped",
        str(dropped),
    )
    instances, errors = parse_jsonl(out.read_text(), source=str(out))
    assert errors == []
    assert {i.instance_id: list(i.FAIL_TO_PASS) for i in instances} == FAIL_TO_PASS
    assert [json.loads(line)["reason"] for line in dropped.read_text().splitlines()] == ["changes no test file"]
    issues = json.loads((SAMPLE_DIR / "issues.json").read_text())
    assert instances[0].problem_statement == f"{issues['4']['title']}\n\n{issues['4']['body']}"

    # One scripted conversation per instance, matched by the issue's text in the prompt; with
    # `candidates: 3` (workflow-candidates.yaml) one per candidate, by the issue's text and the
    # "(candidate c<k>)" of the candidate's prompt (a list match: every part must occur).
    script = load_script(SAMPLE_DIR / "script.yaml")
    for instance in instances:
        for mark in ("", " (candidate c1)", " (candidate c2)", " (candidate c3)"):
            prompt = f"TACX-STAGE: building{mark}\n\n{instance.problem_statement}"
            kind = str if not mark else tuple  # the single runs' conversations match a candidate's prompt too: after these
            matching = [c.name for c in script.conversations if isinstance(c.match, kind) and c.matches(prompt)]
            assert len(matching) == 1 and script.select(prompt).name == matching[0], (instance.instance_id, mark, matching)
    judges = [c.name for c in script.conversations if isinstance(c.match, tuple) and "(selection)" in c.match]
    assert judges == ["total-judge", "comma-judge", "slug-judge"]  # shop-3: one candidate passes, no judge


def test_the_sample_is_not_written_over_a_directory_in_use(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(CommandError, match="exists and is not empty"):
        call_command("eval_demo", "--sample-only", str(tmp_path / "busy"))
