"""The expected-failure rule on a real pytest run in the testbed (the sandbox): an xfail test that
still fails passes, a non-strict xfail test that starts passing (XPASS) passes, a strict one that
starts passing fails, as pytest itself counts them. README: "The rule for expected failures"."""

from __future__ import annotations

import subprocess

import pytest

from evaluation import testlog
from evaluation.testbed import Testbed
from pipeline.workflow import load_workflow_text
from tests import eval_project
from tests.conftest import git

pytestmark = pytest.mark.django_db

TESTS = '''import pytest


@pytest.mark.xfail(reason="bug 1")
def test_still_failing():
    assert 1 + 1 == 3


@pytest.mark.xfail(reason="bug 2")
def test_now_passing():
    assert 1 + 1 == 2


@pytest.mark.xfail(reason="bug 3", strict=True)
def test_now_passing_strict():
    assert 1 + 1 == 2
'''


def test_an_expected_failure_that_starts_passing_follows_pytests_rule(tmp_path):
    repo = tmp_path / "xf"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(repo)], check=True)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_xf.py").write_text(TESTS)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "xfail tests")
    ids = [f"tests/test_xf.py::{name}" for name in ("test_still_failing", "test_now_passing", "test_now_passing_strict")]
    workflow = load_workflow_text(eval_project.WORKFLOW, source="test")
    with Testbed(repo=repo, commit=git(repo, "rev-parse", "HEAD"), workflow=workflow, runner=eval_project.RUNNER, test_timeout=20) as bed:
        statuses = bed.run_tests(ids).statuses
    assert [statuses.get(i) for i in ids] == ["XFAIL", "XPASS", "FAILED"], statuses
    assert [testlog.passed(statuses, i) for i in ids] == [True, True, False]
