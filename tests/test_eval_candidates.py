"""Best of N in the evaluation harness (issue 25, item 7): `manage.py eval_run` compares
`candidates: 1` with `candidates: 3` on the same instance, each a normal task of the normal
stage jobs whose pr_creation is replaced by recording the diff. A small real project graded by
its tests in the sandbox; `command` agents (tests/agents/eval_candidate_agent.py) stand in for
the CLIs, whose candidates run with the real claude CLI in test_candidates_claude.py and in the
README's comparison (`manage.py eval_demo --compare`). The single run makes a wrong fix; of the
three candidates the judge chooses the right one, which is what gets graded."""

from __future__ import annotations

import shlex
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

from evaluation import selectors
from evaluation.instances import Instance, to_jsonl
from evaluation.mining import candidates, patch_between
from evaluation.models import EvalResult, EvalRun
from pipeline.models import Stage
from tests import eval_project
from tests.conftest import git

pytestmark = pytest.mark.django_db(transaction=True)

AGENT = str(Path(__file__).parent / "agents" / "eval_candidate_agent.py")


def workflow(n: int) -> str:
    building = {"name": "building", "provider": "command", "timeout": 60, "max_attempts": 1}
    building["options"] = {"argv": [sys.executable, AGENT, "{prompt}"]}
    if n > 1:
        building["candidates"] = n
    return yaml.safe_dump({"stages": [building, {"name": "pr_creation"}]})


def test_eval_run_compares_one_candidate_with_three_on_the_same_instance(tmp_path):
    repo, _ = eval_project.build(tmp_path)
    found = next(c for c in candidates(repo) if hasattr(c, "base") and c.issues == [1])
    instance = Instance(
        instance_id="calc-1",
        repo=str(repo),
        base_commit=found.base,
        problem_statement="add() subtracts\n\nadd(2, 3) gives -1 instead of 5.",
        test_patch=patch_between(repo, found.base, found.commit, found.test_files),
        FAIL_TO_PASS=tuple(eval_project.FAIL_TO_PASS[1]),
        PASS_TO_PASS=(),
    )
    (tmp_path / "instances.jsonl").write_text(to_jsonl([instance]))
    for n in (1, 3):
        (tmp_path / f"c{n}.yaml").write_text(workflow(n))
    branches_before = git(repo, "branch", "--all")

    out = StringIO()
    call_command(
        "eval_run",
        str(tmp_path / "instances.jsonl"),
        "--workflow",
        str(tmp_path / "c1.yaml"),
        "--workflow",
        str(tmp_path / "c3.yaml"),
        "--concurrency",
        "2",
        "--test-timeout",
        "10",
        "--test-runner",
        shlex.join(eval_project.RUNNER),
        stdout=out,
        stderr=StringIO(),
    )

    one, three = EvalRun.objects.order_by("pk")
    assert one.status == three.status == EvalRun.Status.FINISHED
    assert one.batch == three.batch and "candidates: 3" in three.workflow_text and "pr_creation" not in three.workflow_text
    single, best = EvalResult.objects.get(run=one), EvalResult.objects.get(run=three)
    assert (single.outcome, best.outcome) == ("unresolved", "resolved"), (single.reason, best.reason)
    assert "+    return a * b" in single.diff
    # The graded diff is the chosen candidate's, on the task branch: c2's, by the judge.
    assert "+    return a + b" in best.diff and "a * b" not in best.diff and "abs(" not in best.diff
    parent = Stage.objects.get(task=best.task, name="building", parent__isnull=True)
    record = parent.candidate_info["passes"]["first"]
    assert (record["chosen"], record["rule"], record["applied"]) == (2, "judge", 2)
    assert sorted(parent.candidates.values_list("candidate", "status")) == [(1, "succeeded"), (2, "succeeded"), (3, "succeeded")]
    # Three candidates and the selection: four attempts, one building round.
    assert (single.attempts, best.attempts, best.rounds) == (1, 4, 1)
    assert best.task.pr_url == "" and git(repo, "branch", "--all") == branches_before
    # The report shows both runs side by side, with their resolve rates.
    first, second = (selectors.run_summary(r) for r in (one, three))
    assert (first.resolved, second.resolved) == (0, 1)
    assert second.cost_usd == best.cost_usd and best.cost_usd == best.task.cost_usd
    assert "c3.yaml" in out.getvalue() and "1/1" in out.getvalue()
