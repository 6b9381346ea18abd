"""Running an evaluation: each instance as a normal task through the normal stage jobs, then
graded by its tests. Every change of an `EvalResult` is a conditional update of its status
(pending -> running -> grading -> done), so two drivers never start one instance twice and a
driver that died leaves rows a new one picks up (`eval_results_recover`).

How an instance becomes a task: the instance's repository is copied, up to `base_commit` and no
further, into a bare repository of TAC-X's own under ``var/eval/repos/`` (a fix that came later
is not in it, so an agent cannot find the answer in the history), registered as a *disabled*
local repository (the coordinator never dispatches its tasks; the driver does) whose default
branch is ``tacx-eval`` at `base_commit`. The task gets the workflow with `pr_creation` removed
and ``publish: none``: the stages push to that copy only, nothing reaches the user's repository
or a forge, and no pull request is opened. When the task has finished, the branch's diff against
`base_commit` is recorded and graded in a testbed (`evaluation.testbed`): the agent's head, the
test files put back to `base_commit`, the instance's test_patch applied, the workflow's setup
hook, then FAIL_TO_PASS and PASS_TO_PASS. Resolved means every one of them passes.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from pipeline import git, repos, services
from pipeline.models import Repository, StageResult, Task
from pipeline.workflow import Workflow, WorkflowError, default_workflow, load_workflow_text

from . import forge_mining, testlog
from .instances import Instance, LineError, instance_from_json
from .models import EvalResult, EvalRun
from .testbed import Testbed, TestbedError

BASE_BRANCH = "tacx-eval"
DIFF_MAX_CHARS = 2_000_000
Outcome = EvalResult.Outcome


class InstanceProblem(Exception):
    """The instance cannot be evaluated (no agent runs): the message says what and where."""


# -- the workflow ------------------------------------------------------------------------------


def eval_workflow_text(text: str, *, source: str) -> tuple[str, Workflow]:
    """The workflow as an evaluation runs it: `text` (validated as TAC-X would) with the
    pr_creation stage removed and ``publish: none`` (nothing pushed anywhere but TAC-X's copy, no
    pull request). Raises WorkflowError naming `source`."""
    load_workflow_text(text, source=source)  # every problem of the file itself, named as usual
    data = yaml.safe_load(text) or {}
    stages = data.get("stages")
    if stages is None:
        stages = [{"name": s.name} for s in default_workflow().stages]
    stages = [s for s in stages if not (isinstance(s, dict) and s.get("name") == "pr_creation")]
    if not stages:
        raise WorkflowError(f"{source}: stages: has nothing to run once pr_creation is left out (an evaluation records the diff instead)")
    data["stages"] = stages
    data["publish"] = "none"
    out = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return out, load_workflow_text(out, source=f"{source} (evaluation)")


def workflow_fingerprint(workflow: Workflow) -> str:
    return workflow.fingerprint()


def instances_digest(instances: Iterable[Instance]) -> str:
    return hashlib.sha256("\n".join(sorted(i.instance_id for i in instances)).encode()).hexdigest()


# -- creating runs -----------------------------------------------------------------------------


def eval_run_create(
    *,
    workflow_text: str,
    workflow_source: str,
    instances: list[Instance],
    input_errors: Iterable[LineError] = (),
    instances_source: str = "",
    test_runner: Iterable[str],
    test_timeout: float,
    concurrency: int = 1,
    name: str = "",
    batch: str = "",
) -> EvalRun:
    """A run of one workflow over `instances`, every instance a pending result (WorkflowError
    when the workflow is invalid)."""
    text, workflow = eval_workflow_text(workflow_text, source=workflow_source or "workflow")
    with transaction.atomic():
        run = EvalRun.objects.create(
            name=name[:200],
            batch=batch,
            workflow_source=workflow_source[:500],
            workflow_text=text,
            workflow_fingerprint=workflow_fingerprint(workflow),
            instances_source=instances_source[:500],
            instances_digest=instances_digest(instances),
            input_errors=[e.to_json() for e in input_errors],
            test_runner=list(test_runner),
            test_timeout=test_timeout,
            concurrency=concurrency,
        )
        EvalResult.objects.bulk_create(
            EvalResult(run=run, position=i, instance_id=inst.instance_id, instance=inst.to_json()) for i, inst in enumerate(instances)
        )
    return run


# -- the instance's repository -----------------------------------------------------------------


def source_path(instance: Instance, *, repo_override: str | Path = "") -> Path:
    """Where the instance's commits are on this machine: `repo_override` (``eval_run --repo``),
    else TAC-X's mirror of the GitHub repository when `repo` is owner/name, else the instance's
    `repo` when it is a path of a git repository here."""
    if not repo_override and forge_mining.is_full_name(instance.repo):
        # A GitHub repository: TAC-X's mirror of it (the registered repository's clone URL
        # and credentials), fetched when the base_commit is not there yet.
        repository = forge_mining.github_repository(instance.repo)
        try:
            mirror = repos.source_dir(repository, fetch=False)
            if not git.succeeds(["cat-file", "-e", f"{instance.base_commit}^{{commit}}"], cwd=mirror):
                mirror = repos.source_dir(repository, fetch=True)
        except git.GitError as exc:
            raise InstanceProblem(f"repo {instance.repo}: cannot fetch it ({exc}); pass --repo PATH with a local clone") from None
        return mirror
    candidate = Path(repo_override or instance.repo).expanduser()
    if not candidate.is_absolute():
        raise InstanceProblem(
            f"repo {instance.repo!r} is not a repository on this machine; pass --repo PATH with a local clone of it"
        )
    if not ((candidate / ".git").exists() or (candidate / "HEAD").is_file()):
        raise InstanceProblem(f"repo {str(candidate)!r} is not a git repository")
    return candidate


def instance_repository(instance: Instance, *, source: Path) -> Repository:
    """TAC-X's copy of the instance's repository up to its base_commit, as a disabled local
    repository whose default branch `tacx-eval` is the base_commit. Made once per instance and
    base; later runs reuse it."""
    slug = git.slugify(instance.instance_id, max_length=120) or "instance"
    name = f"eval/{slug}-{instance.base_commit[:12]}"
    path = Path(settings.VAR_DIR) / "eval" / "repos" / f"{slug}-{instance.base_commit[:12]}.git"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = path.exists() and git.succeeds(["rev-parse", "--verify", "--quiet", f"refs/heads/{BASE_BRANCH}^{{commit}}"], cwd=path)
        if not made:
            try:
                commit = git.resolve(source, instance.base_commit)
            except git.GitError:
                raise InstanceProblem(f"base_commit {instance.base_commit} does not exist in {source}") from None
            path.mkdir(exist_ok=True)
            git.run(["init", "--quiet", "--bare", str(path)], cwd=path.parent)
            # The base commit and its history only: nothing the fix or later work added.
            git.run(["fetch", "--quiet", "--no-tags", str(source.resolve()), commit], cwd=path, timeout=1800)
            git.run(["update-ref", f"refs/heads/{BASE_BRANCH}", commit], cwd=path)
            git.run(["symbolic-ref", "HEAD", f"refs/heads/{BASE_BRANCH}"], cwd=path)
            # TAC-X pushes a local repository's task branch there and then to its `origin`:
            # the copy is its own origin, so that second push stays here.
            if not git.succeeds(["remote", "get-url", "origin"], cwd=path):
                git.run(["remote", "add", "origin", str(path)], cwd=path)
    repository, _ = Repository.objects.get_or_create(
        kind=Repository.Kind.LOCAL,
        full_name=name[:200],
        defaults={"local_path": str(path), "default_branch": BASE_BRANCH, "enabled": False, "max_concurrent_tasks": 1000},
    )
    return repository


def eval_repos_cleanup(*, runs: Iterable[EvalRun]) -> list[Path]:
    """Remove the copies of the instances' repositories that `runs` used (under
    ``var/eval/repos/``), TAC-X's mirrors of them (under ``var/repos/``) and their tasks'
    worktrees and task stores (the diffs are recorded on the results), except those an
    unfinished result of any run still needs. Each copy is removed under its lock, the lock
    `instance_repository` takes, so a run that starts the instance again at that moment either
    finds it whole or makes it anew; the Repository rows and the empty lock files stay (their
    tasks refer to the rows; a lock file is never removed while another process may wait on it).
    Returns the paths removed."""
    removed: list[Path] = []
    results = EvalResult.objects.filter(run__in=list(runs), task__isnull=False).select_related("task__repository")
    repositories = {r.task.repository_id: (r.task.repository, r.instance_id) for r in results}
    for repository_id, (repository, instance_id) in repositories.items():
        path = Path(repository.local_path)
        if path.parent != Path(settings.VAR_DIR) / "eval" / "repos":
            continue  # not a copy of ours
        with open(path.parent / f"{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if EvalResult.objects.filter(instance_id=instance_id).exclude(status=EvalResult.Status.DONE).exists():
                continue  # another run still works on this instance
            # The tasks' worktrees and task stores first (they borrow the copy's objects).
            for task in Task.objects.filter(repository_id=repository_id, worktree_removed_at__isnull=True):
                services.task_worktree_remove(task=task)
            for target in (path, repos.mirror_path(repository)):
                if target.exists():
                    shutil.rmtree(target, ignore_errors=True)
                    removed.append(target)
    return removed


def full_base(repository: Repository) -> str:
    return git.resolve(Path(repository.local_path), f"refs/heads/{BASE_BRANCH}")


def check_test_patch(repository: Repository, instance: Instance, base: str) -> None:
    """The test_patch applies at base_commit (checked in a private index, no files written)."""
    repo = Path(repository.local_path)
    index = repo / f"eval-check-{time.monotonic_ns()}.index"
    try:
        env = {"GIT_INDEX_FILE": str(index)}
        git.run(["read-tree", base], cwd=repo, env=env)
        patch = instance.test_patch if instance.test_patch.endswith("\n") else instance.test_patch + "\n"
        git.run(["apply", "--cached", "--check", "-"], cwd=repo, env=env, input=patch)
    except git.GitError as exc:
        raise InstanceProblem(f"test_patch does not apply at base_commit {base[:12]}: {str(exc).split(': ', 2)[-1]}") from None
    finally:
        index.unlink(missing_ok=True)


# -- one instance ------------------------------------------------------------------------------


def eval_result_start(*, result: EvalResult, repo_override: str | Path = "", enqueue: bool = True) -> bool:
    """pending -> running: the instance's task created (at base_commit) and dispatched. An
    instance that cannot be evaluated ends at once as `error` with the reason. False when
    another driver claimed it first."""
    claimed = EvalResult.objects.filter(pk=result.pk, status=EvalResult.Status.PENDING).update(
        status=EvalResult.Status.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return False
    result.refresh_from_db()
    instance = instance_from_json(result.instance)
    try:
        repository = instance_repository(instance, source=source_path(instance, repo_override=repo_override))
        base = full_base(repository)
        check_test_patch(repository, instance, base)
    except (InstanceProblem, git.GitError) as exc:
        _finish(result, outcome=Outcome.ERROR, reason=str(exc))
        return True
    with transaction.atomic():
        # The result's own id as the issue number: unique, so two runs starting the same
        # instance at once (two workflows) never meet on one issue's active task.
        task, created = services.task_create(
            repository=repository,
            issue_number=result.pk,
            title=instance.title,
            body=instance.problem_statement,
            trigger_source="eval",
            triggered_by=f"eval run {result.run_id}",
            workflow_override=result.run.workflow_text,
        )
        if not created:
            raise RuntimeError(f"eval result {result.pk}: issue #{result.pk} of {repository} already has a task ({task.pk})")
        # The branch starts at the instance's base, not at the copy's default branch.
        Task.objects.filter(pk=task.pk).update(base_commit=base)
        EvalResult.objects.filter(pk=result.pk).update(task=task)
    result.task = task
    services.task_dispatch(task=task, enqueue=enqueue)
    return True


def eval_result_finish(*, result: EvalResult) -> bool:
    """running -> grading -> done once the task has finished: the figures, the diff, the
    outcome (grading the diff when the task succeeded). False while the task still runs or
    when another driver is on it."""
    if result.task_id is None:
        return False
    claimed = EvalResult.objects.filter(
        pk=result.pk, status=EvalResult.Status.RUNNING, task__status__in=Task.FINISHED
    ).update(status=EvalResult.Status.GRADING)
    if not claimed:
        return False
    eval_result_grade(result=EvalResult.objects.select_related("run", "task").get(pk=result.pk))
    return True


@dataclass
class Verdict:
    outcome: str
    reason: str = ""
    tests: dict | None = None
    grading_seconds: float | None = None


def eval_result_grade(*, result: EvalResult) -> None:
    """The figures and the outcome of a result whose task finished (status grading -> done)."""
    task = result.task
    assert task is not None
    instance = instance_from_json(result.instance)
    repo = Path(task.repository.local_path)
    head = ""
    if task.branch and git.succeeds(["rev-parse", "--verify", "--quiet", f"refs/heads/{task.branch}^{{commit}}"], cwd=repo):
        head = git.resolve(repo, f"refs/heads/{task.branch}")
    diff = _diff(repo, task.base_commit, head) if head else ""
    verdict = _outcome(task, diff)
    if verdict is None:
        verdict = _grade(result, instance, repo=repo, base=task.base_commit, head=head)
    results = StageResult.objects.filter(task=task)
    wall = (task.finished_at - task.started_at).total_seconds() if task.finished_at and task.started_at else None
    EvalResult.objects.filter(pk=result.pk, status=EvalResult.Status.GRADING).update(
        status=EvalResult.Status.DONE,
        outcome=verdict.outcome,
        reason=verdict.reason[:4000],
        tests=verdict.tests or {},
        grading_seconds=verdict.grading_seconds,
        diff=diff[:DIFF_MAX_CHARS],
        input_tokens=task.input_tokens,
        output_tokens=task.output_tokens,
        cache_read_tokens=task.cache_read_tokens,
        cache_write_tokens=task.cache_write_tokens,
        cost_usd=task.cost_usd,
        wall_seconds=wall,
        attempts=results.count(),
        rounds=results.filter(stage__name="building").aggregate(n=Max("round"))["n"] or 0,
        finished_at=timezone.now(),
    )


def _diff(repo: Path, base: str, head: str) -> str:
    """The branch against its base as a patch (binary files included), decoded leniently: it
    is text the agent wrote, stored and shown, never run."""
    proc = subprocess.run(
        ["git", *git.safe_args(), "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--binary", "--full-index", base, head],
        cwd=repo, env=git.git_env(), capture_output=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise git.GitError(f"git diff failed in {repo}: {proc.stderr.decode('utf-8', 'replace').strip()[-300:]}")
    return proc.stdout.decode("utf-8", errors="replace")


def _outcome(task: Task, diff: str) -> Verdict | None:
    """The outcome the task itself decides, or None when its diff must be graded. Only a task
    that succeeded is graded: its workflow accepted the change (a review still requesting
    changes, or tests failing past max_test_rounds, fail the task and so the instance)."""
    if task.status == Task.Status.BUDGET_EXCEEDED:
        return Verdict(Outcome.BUDGET_EXCEEDED, task.status_reason)
    if task.status == Task.Status.SUCCEEDED:
        return None if diff.strip() else Verdict(Outcome.EMPTY_PATCH, "the task succeeded without changing anything")
    failed = StageResult.objects.filter(task=task).exclude(outcome=StageResult.Outcome.SUCCEEDED).order_by("-id").first()
    if failed is not None and failed.outcome in (StageResult.Outcome.TIMED_OUT, StageResult.Outcome.STALLED):
        return Verdict(Outcome.TIMEOUT, failed.error or task.status_reason)
    if failed is not None and failed.outcome == StageResult.Outcome.BUDGET_EXCEEDED:
        return Verdict(Outcome.BUDGET_EXCEEDED, failed.error or task.status_reason)
    if not diff.strip() and failed is not None and failed.error.startswith("building left no changes"):
        return Verdict(Outcome.EMPTY_PATCH, failed.error)
    return Verdict(Outcome.AGENT_ERROR, task.status_reason or (failed.error if failed else task.status))


def _grade(result: EvalResult, instance: Instance, *, repo: Path, base: str, head: str) -> Verdict:
    run = result.run
    started = time.monotonic()
    workflow = load_workflow_text(run.workflow_text, source="evaluation workflow")
    ids = [*instance.FAIL_TO_PASS, *instance.PASS_TO_PASS]
    try:
        with Testbed(repo=repo, commit=head, workflow=workflow, runner=run.test_runner, test_timeout=run.test_timeout, label=instance.instance_id) as bed:
            # SWE-bench's order: the test files as they were at the base, then the test_patch,
            # so an agent that edited the tests does not grade itself.
            bed.restore(bed.patch_paths(instance.test_patch), commit=base)
            bed.apply(instance.test_patch, what="the test_patch")
            bed.setup()
            tests = bed.run_tests(ids)
    except TestbedError as exc:
        return Verdict(Outcome.UNRESOLVED, f"grading: {exc}", grading_seconds=time.monotonic() - started)
    statuses = tests.statuses
    report = {
        "FAIL_TO_PASS": {t: statuses.get(t, "MISSING") for t in instance.FAIL_TO_PASS},
        "PASS_TO_PASS": {t: statuses.get(t, "MISSING") for t in instance.PASS_TO_PASS},
    }
    failing = [t for t in ids if not testlog.passed(statuses, t)]
    seconds = time.monotonic() - started
    if not failing:
        return Verdict(Outcome.RESOLVED, "", report, seconds)
    shown = ", ".join(f"{t} ({statuses.get(t, 'MISSING')})" for t in failing[:3]) + (f" and {len(failing) - 3} more" if len(failing) > 3 else "")
    why = f"{len(failing)} of {len(ids)} test(s) do not pass: {shown}"
    if tests.timed_out:
        why += f"; timed out after {run.test_timeout:.0f} s each: {', '.join(tests.timed_out[:3])}"
    return Verdict(Outcome.UNRESOLVED, why, report, seconds)


def _finish(result: EvalResult, *, outcome: str, reason: str) -> None:
    EvalResult.objects.filter(pk=result.pk).exclude(status=EvalResult.Status.DONE).update(
        status=EvalResult.Status.DONE, outcome=outcome, reason=reason[:4000], finished_at=timezone.now()
    )


# -- a driver that died ------------------------------------------------------------------------


def eval_results_recover(*, runs: Iterable[EvalRun]) -> int:
    """Put back what a dead driver left: a result claimed but without a task (it died before
    creating it) is pending again; one it was grading is graded again (grading changes nothing
    but its own row). A result whose task still runs stays as it is: its stage jobs go on (or
    the reaper re-queues a stage whose worker died). Returns how many rows changed."""
    ids = [r.pk for r in runs]
    changed = EvalResult.objects.filter(run_id__in=ids, status=EvalResult.Status.RUNNING, task__isnull=True).update(
        status=EvalResult.Status.PENDING, started_at=None
    )
    changed += EvalResult.objects.filter(run_id__in=ids, status=EvalResult.Status.GRADING).update(status=EvalResult.Status.RUNNING)
    return changed


def eval_run_finish_if_done(*, run: EvalRun) -> bool:
    """running -> finished once every result is done."""
    if run.results.exclude(status=EvalResult.Status.DONE).exists():
        return False
    return bool(EvalRun.objects.filter(pk=run.pk, status=EvalRun.Status.RUNNING).update(status=EvalRun.Status.FINISHED, finished_at=timezone.now()))

