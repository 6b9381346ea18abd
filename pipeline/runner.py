"""The stage runner: one attempt of one stage, start to finish.

`run_stage(stage_id)` claims the stage by conditional UPDATE (a second delivery of the same q2
job changes 0 rows and returns), opens a StageResult row at once (so a worker that dies leaves
an open attempt the reaper can close), runs the agent or TAC-X's own pr_creation step, and in a
`finally` saves the result and advances the task. Every write after the claim is fenced by the
lease owner, so a worker that lost its lease cannot overwrite the truth.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.db.models.functions import Now
from django.utils import timezone

from . import alerts, budgets, git, live, repos, services
from .agent_process import StopAgent, run_agent
from .models import AgentEvent, Stage, StageResult, Task, Worker
from .providers import get_provider
from .providers.base import Event, Invocation, ProviderError, agent_environment
from .redaction import redact, redact_data
from .workflow import StageConfig, Workflow

log = logging.getLogger(__name__)

PLAN_FILE = "plan.md"
REVIEW_FILE = "review.md"
VERDICT = re.compile(r"^\W*VERDICT:\s*(APPROVE|REQUEST_CHANGES)\b", re.M)


class RunResult(enum.Enum):
    NOT_CLAIMED = "not_claimed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REQUEUED = "requeued"
    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"


class StageFailure(Exception):
    """The attempt failed for a reason worth telling the user."""

    def __init__(self, message: str, *, outcome: str = StageResult.Outcome.FAILED, permanent: bool = False):
        super().__init__(message)
        self.outcome = outcome
        self.permanent = permanent


def lease_expiry():
    """Lease deadlines use the database clock, so hosts with skewed clocks agree."""
    return ExpressionWrapper(Now() + timedelta(seconds=settings.TACX["LEASE_SECONDS"]), output_field=DateTimeField())


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_stage(stage_id: int, *, enqueue_next: bool = True, owner: str | None = None) -> RunResult:
    owner = owner or worker_name()
    # The claim, the worker row and the open attempt commit together: whoever sees the stage
    # running also sees the attempt that the reaper closes if this process dies.
    with transaction.atomic():
        claimed = Stage.objects.filter(pk=stage_id, status=Stage.Status.QUEUED).update(
            status=Stage.Status.RUNNING,
            lease_owner=owner,
            lease_expires_at=lease_expiry(),
            heartbeat_at=Now(),
            attempts=F("attempts") + 1,
            started_at=Now(),
            finished_at=None,
            error="",
        )
        if claimed != 1:
            return RunResult.NOT_CLAIMED  # someone else got there first, or it is no longer queued
        stage = Stage.objects.select_related("task__repository").get(pk=stage_id)
        task = stage.task
        if task.status != Task.Status.RUNNING:
            Stage.objects.filter(pk=stage.pk, lease_owner=owner).update(
                status=Stage.Status.CANCELLED, lease_owner="", lease_expires_at=None, finished_at=Now()
            )
            return RunResult.CANCELLED
        worker = Worker.objects.create(
            kind=Worker.Kind.AGENT, name=owner, host=socket.gethostname(), pid=os.getpid(), stage=stage
        )
        workflow = Workflow.from_json(task.workflow)
        cfg = workflow.stage(stage.name)
        result = StageResult.objects.create(
            stage=stage,
            task=task,
            attempt=stage.attempts,
            round=task.review_round,
            provider=cfg.provider,
            model=cfg.model,
            worker=worker,
        )
    services.event_status(
        task, f"stage {stage.name} attempt {stage.attempts} started", stage=stage.name, stage_status="running", attempt=stage.attempts
    )
    attempt = Attempt(stage=stage, task=task, cfg=cfg, workflow=workflow, result=result, owner=owner, worker=worker)
    permanent = False
    try:
        attempt.execute()
    except StageFailure as exc:
        result.outcome, result.error, permanent = exc.outcome, redact(str(exc)), exc.permanent
    except (git.GitError, ProviderError) as exc:
        result.outcome, result.error, permanent = StageResult.Outcome.FAILED, redact(str(exc)), exc.permanent
    except Exception as exc:  # a bug must still leave a true record behind
        log.exception("stage %s attempt %s crashed", stage.pk, result.attempt)
        result.outcome, result.error = StageResult.Outcome.FAILED, redact(f"internal error: {type(exc).__name__}: {exc}")
    finally:
        attempt.flush_events()
        Worker.objects.filter(pk=worker.pk).update(exited_at=Now(), exit_code=result.exit_code)
    return finish_attempt(attempt, permanent=permanent, enqueue_next=enqueue_next)


def finish_attempt(attempt: Attempt, *, permanent: bool, enqueue_next: bool) -> RunResult:
    stage, task, result, owner = attempt.stage, attempt.task, attempt.result, attempt.owner
    result.success = result.outcome == StageResult.Outcome.SUCCEEDED
    result.completed_at = timezone.now()
    with transaction.atomic():
        # The reaper may have closed this attempt as "worker lost" while we were cut off; its
        # account stands (another attempt may already be running), ours is added as a note.
        saved = StageResult.objects.filter(pk=result.pk, outcome=StageResult.Outcome.RUNNING).update(
            **{f: getattr(result, f) for f in _RESULT_FIELDS}
        )
        if not saved:
            StageResult.objects.filter(pk=result.pk).update(
                error=f"worker lost; the agent later ended as {result.outcome}: {result.error}"[:4000]
            )
            return RunResult.LEASE_LOST
        services.result_add_to_totals(result=result)
        task.refresh_from_db()
        fence = Stage.objects.filter(pk=stage.pk, lease_owner=owner, status=Stage.Status.RUNNING)
        if result.success:
            if not fence.update(status=Stage.Status.SUCCEEDED, lease_owner="", lease_expires_at=None, finished_at=Now(), failed_attempts=0):
                return RunResult.LEASE_LOST
            services.event_status(task, f"stage {stage.name} succeeded", stage=stage.name, stage_status="succeeded")
            if attempt.verdict == "REQUEST_CHANGES":
                if not services.review_requests_changes(stage=stage, enqueue=enqueue_next):
                    services.task_fail(
                        task=task,
                        reason=f"review still requests changes after {task.review_round} round(s)",
                    )
                    return RunResult.FAILED
                return RunResult.REQUEUED
            services.stage_succeeded_advance(stage=stage, enqueue=enqueue_next)
            return RunResult.SUCCEEDED
        if result.outcome == StageResult.Outcome.CANCELLED or task.status == Task.Status.CANCELLED:
            fence.update(status=Stage.Status.CANCELLED, lease_owner="", lease_expires_at=None, finished_at=Now(), error=result.error)
            return RunResult.CANCELLED
        retry = (
            not permanent
            and result.outcome not in (StageResult.Outcome.BUDGET_EXCEEDED,)
            and stage.failed_attempts + 1 < stage.max_attempts
            and task.status == Task.Status.RUNNING
        )
        if not fence.update(
            status=Stage.Status.QUEUED if retry else Stage.Status.FAILED,
            lease_owner="",
            lease_expires_at=None,
            failed_attempts=F("failed_attempts") + 1,
            finished_at=None if retry else Now(),
            error=result.error,
        ):
            return RunResult.LEASE_LOST
        services.event_status(
            task,
            f"stage {stage.name} attempt {result.attempt} {result.outcome}: {result.error}",
            stage=stage.name,
            stage_status="queued" if retry else "failed",
        )
        alerts.attempt_failed(result=result, retrying=retry)
        if retry:
            if enqueue_next:
                stage_id = stage.pk
                transaction.on_commit(lambda: services.enqueue_stage_job(stage_id))
            return RunResult.REQUEUED
        if result.outcome == StageResult.Outcome.BUDGET_EXCEEDED:
            services.task_fail(task=task, reason=f"stage {stage.name}: {result.error}", status=Task.Status.BUDGET_EXCEEDED)
        else:
            services.task_fail(task=task, reason=f"stage {stage.name} failed: {result.error}")
        return RunResult.FAILED


_RESULT_FIELDS = [
    "outcome",
    "success",
    "completed_at",
    "exit_code",
    "error",
    "output_file",
    "output_text",
    "verdict",
    "model",
    "cli_version",
    "prompt",
    "prompt_hash",
    "base_commit",
    "head_commit",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "turns",
    "session_id",
]


@dataclass
class Attempt:
    stage: Stage
    task: Task
    cfg: StageConfig
    workflow: Workflow
    result: StageResult
    owner: str
    worker: Worker
    verdict: str = ""
    worktree: Path | None = None
    _pending: list[AgentEvent] = field(default_factory=list)
    _seq: int = 0
    _last_flush: float = 0.0
    _last_renew: float = 0.0

    # --- the attempt ----------------------------------------------------------------------

    def execute(self) -> None:
        self.worktree = self.prepare_worktree()
        self.result.base_commit = git.head(self.worktree)
        if self.stage.name == "pr_creation":
            self.create_pull_request()
        else:
            self.run_agent_stage()
            self.check_evidence()
        self.result.head_commit = git.head(self.worktree)
        if self.result.head_commit != self.result.base_commit:
            git.push(self.worktree, repos.push_remote(self.task.repository), self.task.branch, auth_header=repos.auth_header())
        self.result.outcome = StageResult.Outcome.SUCCEEDED

    def prepare_worktree(self) -> Path:
        task, repository = self.task, self.task.repository
        path = git.worktree_path(settings.TACX["WORKTREE_ROOT"], repository.full_name, task.issue_number, task.pk)
        # Another machine may have run the earlier stages: fetch, so the branch they pushed is
        # what this worktree continues from.
        repo_dir = repos.source_dir(repository, fetch=not (path / ".git").exists())
        changed = []
        if not task.branch:
            task.branch = git.branch_name(task.issue_number, task.title)
            changed.append("branch")
        if not task.base_commit:
            task.base_commit = git.resolve(repo_dir, repos.base_ref(repository))
            changed.append("base_commit")
        if task.worktree_path != str(path):
            task.worktree_path = str(path)
            changed.append("worktree_path")
        if task.worktree_host != socket.gethostname():
            # The latest stage's machine holds the worktree (and its clean-up).
            task.worktree_host = socket.gethostname()
            changed.append("worktree_host")
        if changed:
            task.save(update_fields=changed)
        git.worktree_add(repo_dir, path, task.branch, task.base_commit)
        return path

    def prompt_context(self) -> dict[str, object]:
        task = self.task
        plan = (
            StageResult.objects.filter(task=task, stage__name="planning", success=True).order_by("-id").values_list("output_text", flat=True).first()
            or "(no plan)"
        )
        feedback = ""
        if task.review_round > 1:
            feedback = (
                StageResult.objects.filter(task=task, stage__name="reviewing", verdict="REQUEST_CHANGES", round=task.review_round - 1)
                .order_by("-id")
                .values_list("output_text", flat=True)
                .first()
                or ""
            )
        return {
            "stage": self.stage.name,
            "round": task.review_round,
            "issue_number": task.issue_number,
            "issue_title": task.title,
            "issue_body": task.body,
            "repository": task.repository.full_name,
            "branch": task.branch,
            "plan": plan,
            "review_feedback": feedback or "(none)",
            "worktree": str(self.worktree),
        }

    def render_prompt(self) -> str:
        header = f"TACX-STAGE: {self.stage.name}" + (f" (round {self.task.review_round})" if self.task.review_round > 1 else "")
        # format_map substitutes values once; braces inside the issue text are never re-parsed.
        return f"{header}\n\n{self.cfg.prompt.format_map(self.prompt_context())}"

    def run_agent_stage(self) -> None:
        cfg, result = self.cfg, self.result
        provider = get_provider(cfg.provider)
        prompt = self.render_prompt()
        result.prompt = redact(prompt)
        result.prompt_hash = hashlib.sha256(prompt.encode()).hexdigest()
        invocation = Invocation(
            prompt=prompt,
            cwd=str(self.worktree),
            model=cfg.model,
            max_turns=cfg.max_turns,
            allowed_tools=tuple(cfg.allowed_tools),
            permission_mode=cfg.permission_mode,
            extra_args=tuple(cfg.extra_args),
            options=dict(cfg.options),
        )
        argv = provider.build_command(invocation)
        env = agent_environment(provider, invocation)
        # Commits the agent makes need an identity; its HOME has no git config of ours.
        env.update(git.identity_env())
        # A private HOME and TMPDIR per attempt, holding the CLI's own headless settings
        # (issue 8's sandbox replaces this with the sandbox's private HOME).
        home = tempfile.mkdtemp(prefix="tacx-home-")
        env["HOME"], env["TMPDIR"] = home, os.path.join(home, "tmp")
        os.mkdir(env["TMPDIR"])
        try:
            provider.prepare_home(home, invocation, env)
            self.run_agent_process(provider, invocation, argv, env)
        finally:
            shutil.rmtree(home, ignore_errors=True)

    def run_agent_process(self, provider, invocation: Invocation, argv: list[str], env: dict[str, str]) -> None:
        cfg, result = self.cfg, self.result
        result.cli_version = provider.version()[:100]
        self.parser = provider.parser(invocation)
        self.meter = budgets.Meter.for_attempt(task=self.task, stage_cfg=cfg, workflow=self.workflow)
        if (refusal := self.meter.refusal()) is not None:
            raise StageFailure(refusal, outcome=StageResult.Outcome.BUDGET_EXCEEDED, permanent=True)
        tacx = settings.TACX
        self._last_flush = self._last_renew = time.monotonic()
        proc = run_agent(
            argv,
            cwd=str(self.worktree),
            env=env,
            parser=self.parser,
            timeout=cfg.timeout,
            stall_timeout=cfg.stall_timeout or tacx.get("STALL_SECONDS") or None,
            grace=tacx["KILL_GRACE_SECONDS"],
            on_start=self.on_start,
            on_events=self.on_events,
            on_tick=self.on_tick,
            on_idle=self.flush_events,
            tick_seconds=min(1.0, tacx["HEARTBEAT_SECONDS"]),
        )
        outcome = proc.outcome
        usage = outcome.usage
        result.exit_code = proc.exit_code
        self.apply_usage(usage)
        result.turns = usage.turns
        result.session_id = usage.session_id[:200]
        result.model = (usage.model or cfg.model)[:100]
        if usage.cli_version:
            result.cli_version = usage.cli_version[:100]
        result.output_text = redact(outcome.final_text or "")
        if proc.stop is not None:
            if proc.stop.outcome == StageResult.Outcome.BUDGET_EXCEEDED and self.worktree is not None:
                # Keep the work done so far: it is on the branch for a human to pick up.
                if git.commit_all(self.worktree, f"tacx: work in progress of {self.stage.name} when the budget ran out (#{self.task.issue_number})"):
                    git.push(self.worktree, repos.push_remote(self.task.repository), self.task.branch, auth_header=repos.auth_header())
            raise StageFailure(proc.stop.reason, outcome=proc.stop.outcome, permanent=outcome.permanent)
        if not outcome.success:
            raise StageFailure(outcome.error or f"agent exited with code {proc.exit_code}", permanent=outcome.permanent)

    def apply_usage(self, usage) -> None:
        r = self.result
        r.input_tokens, r.output_tokens = usage.input_tokens, usage.output_tokens
        r.cache_read_tokens, r.cache_write_tokens = usage.cache_read_tokens, usage.cache_write_tokens
        r.cost_usd = usage.cost_usd if usage.cost_usd is not None else Decimal("0")

    def check_evidence(self) -> None:
        path = self.worktree
        assert path is not None
        name = self.stage.name
        if name == "planning":
            plan = path / PLAN_FILE
            text = plan.read_text(encoding="utf-8", errors="replace").strip() if plan.is_file() else ""
            if not text:
                raise StageFailure("planning left no plan: plan.md is missing or empty in the worktree")
            self.result.output_file = PLAN_FILE
            self.result.output_text = redact(text)
            # The plan lives in the database and the prompts, not in the pull request.
            if not git.run(["ls-files", PLAN_FILE], cwd=path):
                plan.unlink()
        elif name == "building":
            git.commit_all(path, f"tacx: changes left uncommitted by the builder (#{self.task.issue_number})")
            if not git.run(["diff", "--name-only", f"{self.task.base_commit}..HEAD"], cwd=path):
                raise StageFailure("building left no changes: the branch has no diff against its base")
            self.result.output_text = redact(git.diff(self.task.base_commit, path, stat=True))
        elif name == "reviewing":
            review = path / REVIEW_FILE
            text = review.read_text(encoding="utf-8", errors="replace") if review.is_file() else ""
            verdicts = VERDICT.findall(text) or VERDICT.findall(self.result.output_text or "")
            if not verdicts:
                raise StageFailure("the review has no verdict: expected a line `VERDICT: APPROVE` or `VERDICT: REQUEST_CHANGES` in review.md or the final message")
            self.verdict = verdicts[-1]
            self.result.verdict = self.verdict
            if text:
                self.result.output_file = REVIEW_FILE
                self.result.output_text = redact(text.strip())
            if review.is_file() and not git.run(["ls-files", REVIEW_FILE], cwd=path):
                review.unlink()

    # --- pr_creation (TAC-X itself, never the agent) -----------------------------------------

    def create_pull_request(self) -> None:
        from . import pulls

        assert self.worktree is not None
        git.commit_all(self.worktree, f"tacx: remaining changes for #{self.task.issue_number}")
        git.push(self.worktree, repos.push_remote(self.task.repository), self.task.branch, auth_header=repos.auth_header())
        body = pulls.pull_request_body(self.task)
        self.result.output_text = body
        self.result.output_file = "pull request body"
        url, number = pulls.pull_request_open(task=self.task, body=body)
        Task.objects.filter(pk=self.task.pk).update(pr_url=url, pr_number=number)
        self.task.pr_url, self.task.pr_number = url, number

    # --- hooks called from the agent loop ------------------------------------------------------

    def on_start(self, pgid: int) -> None:
        Worker.objects.filter(pk=self.worker.pk).update(pgid=pgid)

    def on_events(self, events: list[Event]) -> StopAgent | None:
        for event in events:
            self._seq += 1
            self._pending.append(
                AgentEvent(task=self.task, result=self.result, seq=self._seq, kind=_kind(event.kind), data=redact_data(event.data))
            )
            if event.kind == "usage" and (stop := self.meter.check(self.parser.usage)) is not None:
                return stop
        if time.monotonic() - self._last_flush >= settings.TACX["EVENT_BATCH_SECONDS"] or len(self._pending) >= 200:
            self.flush_events()
        return None

    def on_tick(self) -> StopAgent | None:
        self.flush_events()
        now = time.monotonic()
        if now - self._last_renew >= settings.TACX["HEARTBEAT_SECONDS"]:
            self._last_renew = now
            renewed = Stage.objects.filter(pk=self.stage.pk, lease_owner=self.owner, status=Stage.Status.RUNNING).update(
                lease_expires_at=lease_expiry(), heartbeat_at=Now()
            )
            Worker.objects.filter(pk=self.worker.pk).update(heartbeat_at=Now())
            if not renewed:
                return StopAgent(StageResult.Outcome.WORKER_LOST, "lease lost: another worker owns this stage now")
        status = Task.objects.filter(pk=self.task.pk).values_list("status", flat=True).first()
        if status != Task.Status.RUNNING:
            return StopAgent(StageResult.Outcome.CANCELLED, f"task {status or 'deleted'} while the agent ran")
        return None

    def flush_events(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        created = AgentEvent.objects.bulk_create(batch)
        parser = getattr(self, "parser", None)
        if parser is not None:
            self.apply_usage(parser.usage)
            StageResult.objects.filter(pk=self.result.pk, outcome=StageResult.Outcome.RUNNING).update(
                input_tokens=self.result.input_tokens,
                output_tokens=self.result.output_tokens,
                cache_read_tokens=self.result.cache_read_tokens,
                cache_write_tokens=self.result.cache_write_tokens,
                cost_usd=self.result.cost_usd,
            )
        last_id = created[-1].pk if created and created[-1].pk else None
        if last_id:
            live.notify(self.task.pk, last_id)


_KINDS = {k.value for k in AgentEvent.Kind}


def _kind(kind: str) -> str:
    return kind if kind in _KINDS else AgentEvent.Kind.RAW
