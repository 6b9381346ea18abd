"""Read-side queries of the dashboard and the API (HackSoftware's selectors): views call one of
these and render what it returns. Nothing here changes state; that goes through
``pipeline.services``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.db.models import (
    BigIntegerField,
    Count,
    DecimalField,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from django.utils import timezone

from pipeline import forges, git, repos, services, slots, worktree_reads
from pipeline.models import ZERO, AgentEvent, MemoryEntry, Repository, Stage, StageResult, Task, Worker

DIFF_LIMIT = 300_000  # characters of a branch diff shown on a page


def _running_attempts() -> QuerySet[StageResult]:
    return StageResult.objects.filter(task=OuterRef("pk"), outcome=StageResult.Outcome.RUNNING).order_by().values("task")


def task_list(
    *,
    status: str | None = None,
    repository: str | None = None,
    issue: int | None = None,
    search: str | None = None,
) -> QuerySet[Task]:
    """Tasks newest first, filtered, with what a list row shows: the current stage, and the
    tokens and cost of the attempt still running (task totals only grow when an attempt ends)."""
    current = (
        Stage.objects.filter(task=OuterRef("pk"))
        .exclude(status__in=[Stage.Status.PENDING, Stage.Status.SUCCEEDED])
        .order_by("position")
        .values("name")[:1]
    )
    running_tokens = _running_attempts().annotate(
        n=Sum(F("input_tokens") + F("output_tokens") + F("cache_read_tokens") + F("cache_write_tokens"))
    )
    running_cost = _running_attempts().annotate(c=Sum("cost_usd"))
    qs = (
        Task.objects.select_related("repository")
        # The body and the workflow snapshot can be large and no list shows them.
        .defer("body", "workflow", "workflow_override", "repository__poll_etag")
        .annotate(
            current_stage_name=Subquery(current),
            running_tokens=Coalesce(Subquery(running_tokens.values("n")), Value(0), output_field=BigIntegerField()),
            running_cost=Coalesce(
                Subquery(running_cost.values("c")), Value(ZERO), output_field=DecimalField(max_digits=12, decimal_places=6)
            ),
        )
        .order_by("-created_at", "-id")
    )
    if status:
        qs = qs.filter(status=status)
    if repository:
        qs = qs.filter(_repository_q(repository, prefix="repository__"))
    if issue is not None:
        qs = qs.filter(issue_number=issue)
    if search:
        term = search.strip()
        q = Q(title__icontains=term) | Q(branch__icontains=term) | Q(triggered_by__iexact=term)
        number = term.removeprefix("#")
        # ASCII digits only: str.isdigit() is also true for "¹", which int() refuses.
        if _ASCII_DIGITS.fullmatch(number) and len(number) < 10:
            q |= Q(issue_number=int(number))
        qs = qs.filter(q)
    return qs


_ASCII_DIGITS = re.compile(r"[0-9]+")


def _repository_q(value: str, *, prefix: str = "") -> Q:
    """A repository by id or by name."""
    q = Q(**{f"{prefix}full_name": value})
    if _ASCII_DIGITS.fullmatch(value) and len(value) < 18:
        q |= Q(**{f"{prefix}id": int(value)})
    return q


def repository_find(value: str) -> Repository | None:
    return Repository.objects.filter(_repository_q(value)).order_by("id").first()


def repositories() -> QuerySet[Repository]:
    return Repository.objects.order_by("full_name").only("id", "full_name", "kind")


def task_get(task_id: int) -> Task:
    """The task with its repository (404 when there is none)."""
    return get_object_or_404(Task.objects.select_related("repository"), pk=task_id)


RETRIED = "task retried"  # the status event services.task_retry records


def task_stages(task: Task) -> list[Stage]:
    """The stages of a task in order, each with every attempt (``stage.attempt_list``). An
    attempt that is the first after a person's Retry has ``manual_retry`` set; each stage has
    ``manual_retries`` and ``counted_attempts`` (the attempts that count against
    ``max_attempts``: not cancelled, and since the last manual retry, which resets the count)."""
    stages = list(
        task.stages.order_by("position", "id").prefetch_related(
            Prefetch("results", queryset=StageResult.objects.order_by("attempt"), to_attr="attempt_list")
        )
    )
    retries = sorted(
        AgentEvent.objects.filter(task=task, kind=AgentEvent.Kind.STATUS, data__message=RETRIED).values_list("created_at", flat=True)
    )
    for stage in stages:
        previous = None
        counted = 0
        stage.manual_retries = 0
        for r in stage.attempt_list:
            r.manual_retry = bool(
                previous is not None and r.started_at and any(previous.started_at <= t <= r.started_at for t in retries if previous.started_at)
            )
            if r.manual_retry:
                stage.manual_retries += 1
                counted = 0
            if r.outcome != StageResult.Outcome.CANCELLED:
                counted += 1
            previous = r
        stage.counted_attempts = counted
    return stages


def retry_from(stages: list[Stage]) -> Stage | None:
    """The stage a Retry starts from: the first that did not succeed."""
    return next((s for s in stages if s.status != Stage.Status.SUCCEEDED), None)


def stopping_stage(stages: list[Stage]) -> Stage | None:
    """A stage whose agent is still being stopped after the task ended (a cancel): Retry waits."""
    return next((s for s in stages if s.status == Stage.Status.RUNNING), None)


def task_attempts(task: Task) -> QuerySet[StageResult]:
    return task.results.select_related("stage").order_by("stage__position", "attempt")


def task_current_stage(stages: list[Stage]) -> Stage | None:
    return next((s for s in stages if s.status not in (Stage.Status.PENDING, Stage.Status.SUCCEEDED)), None)


def task_running_usage(task: Task) -> tuple[int, object]:
    """Tokens and cost of the attempts still running (not yet in the task totals)."""
    totals = task.results.filter(outcome=StageResult.Outcome.RUNNING).aggregate(
        tokens=Sum(F("input_tokens") + F("output_tokens") + F("cache_read_tokens") + F("cache_write_tokens")),
        cost=Sum("cost_usd"),
    )
    return totals["tokens"] or 0, totals["cost"] or ZERO


@dataclass
class Documents:
    plan: StageResult | None
    review: StageResult | None
    pull_request: StageResult | None


def task_documents(task: Task) -> Documents:
    """The newest plan, review and pull-request text the stages left behind."""

    def newest(stage_name: str) -> StageResult | None:
        # Only what a stage delivered: a failed planner's last words are not a plan.
        return (
            task.results.filter(stage__name=stage_name, success=True)
            .exclude(output_text="")
            .order_by("-round", "-attempt", "-id")
            .first()
        )

    return Documents(plan=newest("planning"), review=newest("reviewing"), pull_request=newest("pr_creation"))


@dataclass
class Diff:
    text: str
    truncated: bool = False
    error: str = ""


def task_diff(task: Task) -> Diff | None:
    """The branch's changes against its base: from the worktree while it exists, else from the
    repository's copy of the branch. None when the task has no branch yet."""
    if not task.branch or not task.base_commit:
        return None
    try:
        worktree = Path(task.worktree_path) if task.worktree_path else None
        store = git.store_path(worktree) if worktree is not None else None
        # The task's own git directory is the agent's to write: read it only when it holds nothing
        # git must not open (a FIFO would hang this request), named directly (never through the
        # worktree's `.git` file, which the agent could point anywhere), with a short timeout.
        if store is not None and store.is_dir() and not git.special_files(store):
            text = git.run(
                ["--git-dir", str(store), "diff", "--no-ext-diff", "--no-textconv", "--patch", f"{task.base_commit}..refs/heads/{task.branch}"],
                cwd=store,
                timeout=10,
            )
        elif task.repository.kind == Repository.Kind.LOCAL:
            repo_dir = repos.local_dir(task.repository)
            text = git.run(["diff", "--no-ext-diff", "--no-textconv", "--patch", f"{task.base_commit}..refs/heads/{task.branch}"], cwd=repo_dir, timeout=30)
        else:
            repo_dir = repos.source_dir(task.repository, fetch=False)
            tip = f"refs/tacx/tasks/{task.branch}"
            if not git.succeeds(["rev-parse", "--verify", "--quiet", tip], cwd=repo_dir):
                tip = f"refs/remotes/origin/{task.branch}"
            text = git.run(["diff", "--no-ext-diff", "--no-textconv", "--patch", f"{task.base_commit}..{tip}"], cwd=repo_dir, timeout=30)
    except git.GitError as exc:
        return Diff(text="", error=str(exc))
    if len(text) > DIFF_LIMIT:
        return Diff(text=text[:DIFF_LIMIT], truncated=True)
    return Diff(text=text)


def workers_live() -> QuerySet[Worker]:
    # A stage slot of a killed cluster never records its exit: it is gone once its heartbeat is.
    stale = timezone.now() - timedelta(seconds=3 * slots.heartbeat_seconds())
    return (
        Worker.objects.filter(exited_at__isnull=True)
        .exclude(kind=Worker.Kind.SLOT, heartbeat_at__lt=stale)
        .select_related("stage__task")
        .order_by("kind", "-heartbeat_at")
    )


def workers_recent(*, limit: int = 20) -> QuerySet[Worker]:
    return Worker.objects.filter(exited_at__isnull=False).select_related("stage__task").order_by("-exited_at")[:limit]


@dataclass
class Commit:
    sha: str
    subject: str


@dataclass
class TaskResult:
    """What a finished task delivered, for the result panel and the task list.

    kind "pull_request": `url` (and `draft` when it was opened as a draft; GitHub may have
    changed that since). kind "branch" (local repository): the branch pushed to `origin`, its
    commits and files, and `command`, the git command that shows it from any clone.
    """

    kind: str
    branch: str = ""
    url: str = ""
    number: int | None = None
    draft: bool = False
    origin: str = ""
    base_commit: str = ""
    commits: list[Commit] | None = None
    files: list[str] | None = None
    command: str = ""
    error: str = ""


def branch_pushed(task: Task) -> bool:
    """Did a stage push commits to the task's branch? (`head_commit` is the head the last
    successful stage pushed; it starts at the base.)"""
    return bool(task.branch and task.head_commit and task.head_commit != task.base_commit)


def task_result(task: Task, *, details: bool = True) -> TaskResult | None:
    """The pull request or pushed branch of a task that delivered one (None otherwise).

    With `details` the branch's commits and changed files are read with git from the local
    repository (the list page passes False: no git per row)."""
    from django.conf import settings

    if task.pr_url:
        draft = task.repository.draft_prs and settings.TACX["DRAFT_PRS"]
        return TaskResult(kind="pull_request", branch=task.branch, url=task.pr_url, number=task.pr_number, draft=draft)
    # A branch is a result once it was pushed: by pr_creation, or by any stage that committed
    # (a `publish: none` workflow, or a task that failed after pushing its work).
    pushed = branch_pushed(task)
    if details:
        delivered = pushed or task.results.filter(stage__name="pr_creation", success=True).exists()
    else:
        delivered = pushed or task.status == Task.Status.SUCCEEDED
    if not task.branch or not delivered:
        return None
    if task.repository.kind != Repository.Kind.LOCAL:
        if not pushed:
            return None
        # A forge's branch pushed without a pull request (`publish: none`): where it is, no git read.
        origin = forges.forge_for(task.repository).clone_url(task.repository)
        command = f"git fetch {_shell_quote(origin)} {_shell_quote(task.branch)} && git diff {task.base_commit[:12]}...FETCH_HEAD"
        return TaskResult(kind="branch", branch=task.branch, base_commit=task.base_commit, origin=origin, command=command)
    result = TaskResult(kind="branch", branch=task.branch, base_commit=task.base_commit)
    if not details:
        return result
    try:
        repo_dir = repos.local_dir(task.repository)
        result.origin = git.run(["remote", "get-url", repos.push_remote(task.repository)], cwd=repo_dir, timeout=10)
        tip = f"refs/remotes/origin/{task.branch}"
        if not git.succeeds(["rev-parse", "--verify", "--quiet", tip], cwd=repo_dir):
            tip = f"refs/heads/{task.branch}"
        span = f"{task.base_commit}..{tip}"
        log = git.run(["log", "--format=%h%x09%s", span], cwd=repo_dir, timeout=30)
        result.commits = [Commit(sha, worktree_reads.commit_subject(subject)) for sha, subject in (line.split("\t", 1) for line in log.splitlines() if "\t" in line)]
        result.files = git.run(["diff", "--name-only", span], cwd=repo_dir, timeout=30).splitlines()
    except git.GitError as exc:
        result.error = str(exc)
    origin = result.origin or task.repository.local_path or "origin"
    result.command = f"git fetch {_shell_quote(origin)} {_shell_quote(task.branch)} && git diff {task.base_commit[:12]}...FETCH_HEAD"
    return result


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def task_now_doing(task: Task) -> AgentEvent | None:
    """The last tool call, message or program output of the attempt running now (the "now doing" line)."""
    return (
        AgentEvent.objects.filter(
            task=task,
            result__outcome=StageResult.Outcome.RUNNING,
            kind__in=[AgentEvent.Kind.TOOL_CALL, AgentEvent.Kind.MESSAGE, AgentEvent.Kind.OUTPUT],
        )
        .order_by("-id")
        .first()
    )


def task_running_attempt(task: Task) -> StageResult | None:
    return task.results.filter(outcome=StageResult.Outcome.RUNNING).select_related("stage").order_by("-id").first()


# --- a repository's memory -------------------------------------------------------------------------


def memory_list(*, repository: Repository | None = None, status: str | None = None) -> QuerySet[MemoryEntry]:
    """Memory entries (of one repository, in one status), proposals first, then oldest first,
    with where each came from."""
    rows = MemoryEntry.objects.select_related("repository", "source_task", "source_result__stage")
    if repository is not None:
        rows = rows.filter(repository=repository)
    if status:
        rows = rows.filter(status=status)
    return rows.order_by("repository__full_name", "repository_id", "id")


def memory_get(entry_id: int) -> MemoryEntry:
    """The entry with its repository and source (404 when there is none)."""
    return get_object_or_404(MemoryEntry.objects.select_related("repository", "source_task", "source_result__stage"), pk=entry_id)


def memory_given_ids(repository_ids: set[int] | list[int]) -> set[int]:
    """Ids of the entries later prompts of these repositories carry (accepted, within the cap)."""
    ids: set[int] = set()
    for repository in Repository.objects.filter(pk__in=set(repository_ids)):
        ids.update(entry.pk for entry in services.memory_in_prompts(repository=repository)[0])
    return ids


def memory_repositories() -> QuerySet[Repository]:
    """Every repository with the number of its memory entries in each status."""
    def count(status: str) -> Count:
        return Count("memory", filter=Q(memory__status=status))

    return Repository.objects.annotate(
        proposed=count(MemoryEntry.Status.PROPOSED), accepted=count(MemoryEntry.Status.ACCEPTED), rejected=count(MemoryEntry.Status.REJECTED)
    ).order_by("full_name", "id")


def task_candidates(stages: list[Stage]) -> list[dict]:
    """Best of N, side by side: per stage that ran candidates, one row per candidate with its
    live status, attempts' cost, last test result and transcript (its last attempt), and what
    the selection recorded (diff size, chosen, the rule and the judge's reasons or error)."""
    panels = []
    for parent in stages:
        children = [s for s in stages if s.parent_id == parent.pk]
        if not children:
            continue
        passes = (parent.candidate_info or {}).get("passes") or {}
        recorded = {}
        for record in passes.values():
            for row in record.get("candidates") or []:
                recorded[row["k"]] = {**row, "chosen": record.get("chosen") == row["k"], "passing": row["k"] in (record.get("passing") or [])}
        rows = []
        for child in children:
            last = child.attempt_list[-1] if child.attempt_list else None
            seen = recorded.get(child.candidate, {})
            rows.append(
                {
                    "k": child.candidate,
                    "stage": child,
                    "label": f"{child.provider}/{child.model}" if child.model else child.provider,
                    "status": child.status,
                    "cost": sum((r.cost_usd or 0 for r in child.attempt_list), 0),
                    "tests": seen.get("tests") or (last.tests_status if last else "") or "-",
                    "diff": f"{seen['files']} files, +{seen['insertions']} -{seen['deletions']}" if "files" in seen else "-",
                    "result": last,
                    "chosen": seen.get("chosen", False),
                    "passing": seen.get("passing", False),
                }
            )
        chosen = [r for r in passes.values() if r.get("chosen")]
        panels.append({"stage": parent, "rows": rows, "selections": chosen, "judge_errors": [r["judge"]["error"] for r in passes.values() if (r.get("judge") or {}).get("error")]})
    return panels

