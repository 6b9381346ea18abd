"""The evaluation's rules without an agent: the workflow as an evaluation runs it, an instance
that cannot be evaluated (its base_commit, its test_patch, its repository) ends as a clear
error while the others start, claims and recovery after a driver died, how a finished task
becomes an outcome, the run's figures, and the API and page."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from evaluation import selectors, services
from evaluation.instances import Instance, LineError
from evaluation.mining import candidates, patch_between
from evaluation.models import EvalResult, EvalRun
from pipeline.models import Repository, Stage, StageResult, Task
from pipeline.workflow import WorkflowError
from tests import eval_project
from tests.conftest import git

pytestmark = pytest.mark.django_db

WORKFLOW = "stages:\n  - name: building\n  - name: pr_creation\n"


@pytest.fixture
def project(tmp_path):
    repo, fixes = eval_project.build(tmp_path)
    found = next(c for c in candidates(repo) if hasattr(c, "base") and c.issues == [1])
    instance = Instance(
        instance_id="calc-1",
        repo=str(repo),
        base_commit=found.base,
        problem_statement="add() subtracts",
        test_patch=patch_between(repo, found.base, found.commit, found.test_files),
        FAIL_TO_PASS=tuple(eval_project.FAIL_TO_PASS[1]),
        PASS_TO_PASS=(),
    )
    return repo, instance


def make_run(instances, workflow: str = WORKFLOW, **kw) -> EvalRun:
    return services.eval_run_create(
        workflow_text=workflow, workflow_source="a.yaml", instances=instances, test_runner=eval_project.RUNNER, test_timeout=5, **kw
    )


def test_the_workflow_runs_without_pr_creation_and_publishes_nothing():
    text, workflow = services.eval_workflow_text(WORKFLOW, source="a.yaml")
    assert [s.name for s in workflow.stages] == ["building"] and workflow.publish == "none"
    # Without `stages`, the default stages but pr_creation.
    _, default = services.eval_workflow_text("review_rounds: 1\n", source="b.yaml")
    assert [s.name for s in default.stages] == ["planning", "building", "reviewing"]
    assert services.workflow_fingerprint(workflow) != services.workflow_fingerprint(default)
    with pytest.raises(WorkflowError, match="c.yaml: stages: has nothing to run once pr_creation is left out"):
        services.eval_workflow_text("stages:\n  - name: pr_creation\n", source="c.yaml")
    with pytest.raises(WorkflowError, match="d.yaml: stages\\[0\\] \\(building\\).timeout: must be >= 1"):
        services.eval_workflow_text("stages:\n  - name: building\n    timeout: -1\n  - name: pr_creation\n", source="d.yaml")


def test_bad_instances_end_as_clear_errors_and_the_good_one_starts_as_a_task_at_its_base(project):
    repo, good = project
    missing = Instance(**{**good.__dict__, "instance_id": "no-base", "base_commit": "0" * 40})
    broken = Instance(**{**good.__dict__, "instance_id": "bad-patch", "test_patch": good.test_patch.replace(" def test_module_has_a_docstring", " def test_not_there")})
    elsewhere = Instance(**{**good.__dict__, "instance_id": "remote", "repo": "octo/calc"})
    # octo/calc is fetched into TAC-X's mirror from its registered clone URL: here one that
    # does not exist.
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/calc", clone_url=str(repo.parent / "nowhere.git"), enabled=False)
    run = make_run([missing, broken, elsewhere, good], input_errors=[LineError("i.jsonl", 7, "not valid JSON")])
    for result in run.results.order_by("position"):
        assert services.eval_result_start(result=result, enqueue=False)
    results = {r.instance_id: r for r in run.results.all()}
    assert results["no-base"].outcome == "error" and f"base_commit {'0' * 40} does not exist in {repo}" in results["no-base"].reason
    assert results["bad-patch"].outcome == "error" and "test_patch does not apply at base_commit" in results["bad-patch"].reason
    assert results["remote"].outcome == "error" and "repo octo/calc: cannot fetch it" in results["remote"].reason
    assert "pass --repo PATH" in results["remote"].reason
    assert all(results[i].task is None for i in ("no-base", "bad-patch", "remote"))

    ok = results["calc-1"]
    assert ok.status == "running" and ok.outcome == ""
    task = ok.task
    assert task.status == Task.Status.RUNNING and task.trigger_source == "eval"
    assert task.base_commit == good.base_commit
    assert [s.name for s in task.stages.order_by("position")] == ["building"] and task.workflow["publish"] == "none"
    # TAC-X's copy holds the base and its history, not the fix nor anything after it.
    copy = task.repository.local_path
    assert not task.repository.enabled
    assert git(copy, "rev-parse", "refs/heads/tacx-eval") == good.base_commit
    assert git(copy, "rev-list", "--all").split() == git(repo, "rev-list", good.base_commit).split()
    assert run.input_errors == [{"source": "i.jsonl", "line": 7, "instance_id": "", "message": "not valid JSON"}]


def test_an_instance_is_claimed_once_and_a_dead_drivers_rows_are_picked_up(project):
    _, good = project
    run = make_run([good])
    result = run.results.get()
    assert services.eval_result_start(result=result, enqueue=False)
    assert not services.eval_result_start(result=result, enqueue=False)  # a second driver
    assert Task.objects.filter(trigger_source="eval").count() == 1
    result.refresh_from_db()
    assert not services.eval_result_finish(result=result)  # its task still runs

    # A driver that died after its claim, before the task: pending again. One that died while
    # grading: graded again. One whose task runs: left to its stage jobs.
    other = make_run([good])
    orphan = other.results.get()
    EvalResult.objects.filter(pk=orphan.pk).update(status="running")
    EvalResult.objects.filter(pk=result.pk).update(status="grading")
    assert services.eval_results_recover(runs=[run, other]) == 2
    orphan.refresh_from_db()
    result.refresh_from_db()
    assert orphan.status == "pending" and result.status == "running"


def finished_task(result: EvalResult, status: str, *, stage_outcome: str = "", error: str = "") -> Task:
    task = result.task
    if stage_outcome:
        stage = task.stages.get()
        StageResult.objects.create(stage=stage, task=task, attempt=1, outcome=stage_outcome, error=error)
        Stage.objects.filter(pk=stage.pk).update(status="failed")
    Task.objects.filter(pk=task.pk).update(status=status, status_reason=error or status, finished_at=timezone.now(), cost_usd=Decimal("0.5"))
    task.refresh_from_db()
    return task


@pytest.mark.parametrize(
    "status, stage_outcome, error, outcome",
    [
        ("budget_exceeded", "budget_exceeded", "budget: $1.00 used", "budget_exceeded"),
        ("failed", "timed_out", "timed out after 120 s", "timeout"),
        ("failed", "stalled", "no output for 300 s", "timeout"),
        ("failed", "failed", "building left no changes: the branch has no diff against its base", "empty_patch"),
        ("failed", "failed", "could not authenticate", "agent_error"),
        ("cancelled", "cancelled", "cancelled", "agent_error"),
        ("succeeded", "", "", "empty_patch"),
    ],
)
def test_a_finished_task_becomes_one_outcome_without_grading(project, status, stage_outcome, error, outcome):
    _, good = project
    run = make_run([good])
    result = run.results.get()
    services.eval_result_start(result=result, enqueue=False)
    result.refresh_from_db()
    finished_task(result, status, stage_outcome=stage_outcome, error=error)
    assert services.eval_result_finish(result=result)
    result.refresh_from_db()
    assert (result.status, result.outcome) == ("done", outcome)
    assert result.cost_usd == Decimal("0.5") and result.diff == ""
    assert services.eval_run_finish_if_done(run=run)


def test_the_run_figures_and_the_report(project):
    _, good = project
    run = make_run([good, Instance(**{**good.__dict__, "instance_id": "b"}), Instance(**{**good.__dict__, "instance_id": "c"})])
    rows = list(run.results.order_by("position"))
    for row, (outcome, cost, seconds) in zip(rows, [("resolved", "0.30", 10), ("unresolved", "0.10", 20), ("resolved", "0.20", 40)], strict=True):
        EvalResult.objects.filter(pk=row.pk).update(status="done", outcome=outcome, cost_usd=Decimal(cost), wall_seconds=seconds)
    s = selectors.run_summary(run)
    assert (s.instances, s.done, s.resolved) == (3, 3, 2)
    assert s.resolve_rate == pytest.approx(2 / 3)
    assert s.cost_per_instance == Decimal("0.2") and s.cost_per_resolved == Decimal("0.3")
    assert (s.median_seconds, s.p90_seconds) == (20, 40)
    assert s.progress() == "3/3 done, 2 resolved, $0.60"
    report = selectors.run_report(run)
    assert report["resolved_ids"] == ["calc-1", "c"] and report["unresolved_ids"] == ["b"]


def test_the_api_and_the_page_compare_two_runs_on_the_same_instances(project, api, client, alice):
    _, good = project
    a, b = make_run([good], batch="x"), make_run([good], workflow="stages:\n  - name: planning\n  - name: building\n  - name: pr_creation\n", batch="x")
    EvalResult.objects.filter(run=a).update(status="done", outcome="resolved", cost_usd=Decimal("0.2"), diff="+fix\n")
    EvalResult.objects.filter(run=b).update(status="done", outcome="unresolved", cost_usd=Decimal("0.4"))

    listed = api.get("/api/evaluations/").json()
    assert [r["id"] for r in listed] == [b.pk, a.pk]
    assert listed[1]["summary"]["resolve_rate"] == 1.0 and listed[1]["summary"]["progress"] == "1/1 done, 1 resolved, $0.20"
    detail = api.get(f"/api/evaluations/{a.pk}/").json()
    assert detail["results"][0]["outcome"] == "resolved" and "diff" not in detail["results"][0]
    export = api.get(f"/api/evaluations/{a.pk}/export/")
    assert export["Content-Type"] == "application/x-ndjson" and b'"model_patch": "+fix\\n"' in export.content
    assert api.get("/api/evaluations/999999/").status_code == 404

    client.force_login(alice)
    page = client.get("/evaluations/").content.decode()  # the latest batch: both runs
    assert f'data-run="{a.pk}"' in page and f'data-run="{b.pk}"' in page
    assert "outcome-resolved" in page and "outcome-unresolved" in page and 'class="point"' in page
    assert "different-instances" not in page
    assert client.get("/evaluations/?runs=x").status_code == 200


def test_two_workflows_on_one_instance_get_a_task_each_on_the_same_copy(project):
    _, good = project
    a, b = make_run([good], batch="y"), make_run([good], batch="y")
    for run in (a, b):
        assert services.eval_result_start(result=run.results.get(), enqueue=False)
    ta, tb = (run.results.get().task for run in (a, b))
    assert ta.pk != tb.pk and ta.repository_id == tb.repository_id
    assert ta.issue_number != tb.issue_number and ta.status == tb.status == Task.Status.RUNNING
