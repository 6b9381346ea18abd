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
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.db.models.functions import Now
from django.utils import timezone

from . import alerts, budgets, git, hooks, live, repos, sandbox, services, sessions
from .agent_process import StopAgent, run_agent
from .lib import dbretry
from .lib.redaction import redact, redact_data
from .lib.untrusted import untrusted_text
from .models import AgentEvent, Round, Stage, StageResult, Task, Worker
from .providers import get_provider
from .providers.base import Event, Invocation, ProviderError, agent_environment
from .services import rounds
from .workflow import HookConfig, StageConfig, Workflow

log = logging.getLogger(__name__)

PLAN_FILE = "plan.md"
REVIEW_FILE = "review.md"
# Above this many events per second a stage's stream is busy: its events are stored every
# EVENT_BATCH_BUSY_SECONDS instead of every EVENT_BATCH_SECONDS.
BUSY_LINES_PER_SECOND = 20
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
        followup = services.running_round(task)
        result = StageResult.objects.create(
            followup=followup,
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
    attempt = Attempt(stage=stage, task=task, cfg=cfg, workflow=workflow, result=result, owner=owner, worker=worker, followup=followup)
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
        attempt.close_box()
        # The agent has ended; these writes wait out a short database outage (pipeline.lib.dbretry).
        dbretry.retry(attempt.flush_remaining, what=f"stage {stage.pk}: storing the last events")
        dbretry.retry(
            lambda: Worker.objects.filter(pk=worker.pk).update(exited_at=Now(), exit_code=result.exit_code),
            what=f"stage {stage.pk}: recording the worker's exit",
        )
    return dbretry.retry(
        lambda: finish_attempt(attempt, permanent=permanent, enqueue_next=enqueue_next), what=f"stage {stage.pk}: recording the attempt"
    )


def finish_attempt(attempt: Attempt, *, permanent: bool, enqueue_next: bool) -> RunResult:
    stage, task, result, owner = attempt.stage, attempt.task, attempt.result, attempt.owner
    result.success = result.outcome == StageResult.Outcome.SUCCEEDED
    result.completed_at = timezone.now()
    with transaction.atomic():
        task.refresh_from_db()
        if not result.success and task.status == Task.Status.CANCELLED and result.outcome != StageResult.Outcome.CANCELLED:
            # The user's cancel ended this attempt (whatever the killed agent or git said last):
            # it is a cancel, not a failure of the stage, in the record and in the stats.
            result.error = f"cancelled ({result.outcome}: {result.error})" if result.error else "cancelled"
            result.outcome = StageResult.Outcome.CANCELLED
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
        fence = Stage.objects.filter(pk=stage.pk, lease_owner=owner, status=Stage.Status.RUNNING)
        if result.success:
            if not fence.update(status=Stage.Status.SUCCEEDED, lease_owner="", lease_expires_at=None, finished_at=Now(), failed_attempts=0):
                return RunResult.LEASE_LOST
            if result.head_commit:
                # The next stage, on whichever machine, starts from this head (and checks it).
                Task.objects.filter(pk=task.pk).update(head_commit=result.head_commit)
                task.head_commit = result.head_commit
            services.event_status(task, f"stage {stage.name} succeeded", stage=stage.name, stage_status="succeeded")
            if attempt.tests is not None and not attempt.tests.ok:
                if not services.tests_failed_back_to_building(stage=stage, summary=attempt.tests.summary(), enqueue=enqueue_next):
                    services.task_fail(
                        task=task,
                        reason=f"tests still failing after {task.review_round} round(s): {attempt.tests.summary()}",
                    )
                    return RunResult.FAILED
                return RunResult.REQUEUED
            if attempt.verdict == "REQUEST_CHANGES":
                if not services.review_requests_changes(stage=stage, enqueue=enqueue_next):
                    services.task_fail(
                        task=task,
                        reason=f"review still requests changes after {services.review_rounds_used(task)} round(s)",
                    )
                    return RunResult.FAILED
                return RunResult.REQUEUED
            services.stage_succeeded_advance(stage=stage, enqueue=enqueue_next)
            return RunResult.SUCCEEDED
        if result.outcome == StageResult.Outcome.CANCELLED and task.status == Task.Status.RUNNING:
            # Cancelled, then made running again before this attempt ended (services.task_retry
            # refuses that; this covers any other path): the stage must run again, not end as
            # cancelled under a running task with nobody working on it.
            if not fence.update(status=Stage.Status.QUEUED, lease_owner="", lease_expires_at=None, error=result.error, queued_at=Now()):
                return RunResult.LEASE_LOST
            services.event_status(task, f"stage {stage.name} queued again: the task was retried", stage=stage.name, stage_status="queued")
            if enqueue_next:
                stage_id = stage.pk
                transaction.on_commit(lambda: services.enqueue_stage_job(stage_id))
            return RunResult.REQUEUED
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
            queued_at=Now() if retry else F("queued_at"),
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
    "resumed_session_id",
    "tests_status",
    "tests_exit_code",
    "tests_duration",
    "tests_output",
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
    followup: Round | None = None
    verdict: str = ""
    tests: hooks.HookRun | None = None
    worktree: Path | None = None
    repo_dir: Path | None = None
    box: sandbox.Box | None = None
    box_root: Path | None = None
    _pending: list[AgentEvent] = field(default_factory=list)
    _seq: int = 0
    _last_flush: float = 0.0
    _last_renew: float = 0.0
    _last_write: float = 0.0
    _totals_written: tuple = ()
    _outage: dbretry.Outage | None = None
    _busy: bool = False
    _rate_since: float = 0.0
    _rate_lines: int = 0

    # --- the attempt ----------------------------------------------------------------------

    def execute(self) -> None:
        self.worktree = self.prepare_worktree()
        self.result.base_commit = git.head(self.worktree)
        if self.stage.name == "pr_creation":
            self.create_pull_request()
        else:
            before = self.run_repository_command(self.workflow.hook("before_stage"))
            if before is not None and not before.ok:
                raise StageFailure(f"before_stage hook {before.status}: {_tail(before.output)}")
            try:
                self.run_agent_stage()
                self.check_evidence()
            finally:
                # Logged only: a failing after_stage hook does not undo the agent's work.
                self.run_repository_command(self.workflow.hook("after_stage"))
            if self.stage.name == "building":
                self.run_tests()
        self.result.head_commit = git.head(self.worktree)
        if self.result.head_commit != self.result.base_commit:
            git.push(self.worktree, repos.push_remote(self.task.repository), self.task.branch, auth_header=repos.auth_header(self.task.repository))
        self.result.outcome = StageResult.Outcome.SUCCEEDED

    def prepare_worktree(self) -> Path:
        task, repository = self.task, self.task.repository
        path = git.worktree_path(settings.TACX["WORKTREE_ROOT"], repository.full_name, task.issue_number, task.pk)
        # Another machine may have run the earlier stages: fetch before every stage (not only
        # when this machine has no worktree yet), so the head they pushed is here.
        repo_dir = repos.source_dir(repository, fetch=True)
        changed = []
        if not task.branch:
            task.branch = git.branch_name(task.issue_number, task.title)
            changed.append("branch")
        if not task.base_commit:
            task.base_commit = git.resolve(repo_dir, repos.base_ref(repository))
            changed.append("base_commit")
        if not task.head_commit and not task.stages.filter(status=Stage.Status.SUCCEEDED).exists():
            task.head_commit = task.base_commit  # a new branch starts at its base
            changed.append("head_commit")
        if task.worktree_path != str(path):
            task.worktree_path = str(path)
            changed.append("worktree_path")
        if task.worktree_host != socket.gethostname():
            # The latest stage's machine (every machine's worktree is in TaskWorktree).
            task.worktree_host = socket.gethostname()
            changed.append("worktree_host")
        if changed:
            task.save(update_fields=changed)
        created = not (path / ".git").exists()
        services.task_worktree_record(task=task, host=socket.gethostname(), path=str(path))
        if task.head_commit:
            # Start exactly where the previous stage left the branch (whichever machine ran it),
            # or at a fast-forward of it on the origin; never on this machine's own stale copy.
            start = task.head_commit
            pushed = repos.pushed_head(repository, repo_dir, task.branch)
            if pushed and pushed != start and git.is_ancestor(repo_dir, start, pushed):
                start = pushed
            git.worktree_at(repo_dir, path, task.branch, start)
        else:
            # A task that was already running before head commits were recorded.
            git.worktree_add(repo_dir, path, task.branch, task.base_commit)
        self.repo_dir = repo_dir
        self.worktree = path
        setup = self.workflow.hook("setup")
        host = socket.gethostname()
        # Once per worktree: when it was just (re-)created, or when the last successful setup
        # happened on another machine (this one's copy never ran it).
        if setup is not None and (created or task.setup_host != host):
            if task.setup_host:
                Task.objects.filter(pk=task.pk).update(setup_host="")
                task.setup_host = ""
            run = self.run_repository_command(setup)
            assert run is not None
            if not run.ok:
                raise StageFailure(f"setup hook {run.status}: {_tail(run.output)}", permanent=True)
            Task.objects.filter(pk=task.pk).update(setup_host=host)
            task.setup_host = host
        return path

    def git_access(self) -> sandbox.GitAccess | None:
        """What of the repository's git directory the agent may use (TAC-X's pinned view)."""
        assert self.worktree is not None
        pinned = git.pinned_dirs(self.worktree)
        if not pinned:
            return None
        return sandbox.GitAccess(common=Path(pinned["GIT_COMMON_DIR"]), admin=Path(pinned["GIT_DIR"]), branch=self.task.branch)

    # --- the repository's own commands (hooks, tests) ---------------------------------------

    def run_repository_command(self, hook: HookConfig | None) -> hooks.HookRun | None:
        """Run a hook or the test command in the worktree and record it as an event of this
        attempt. None when the workflow has no such hook."""
        if hook is None:
            return None
        assert self.worktree is not None
        context = {
            "task_id": self.task.pk,
            "issue_number": self.task.issue_number,
            "repository": self.task.repository.full_name,
            "branch": self.task.branch,
            "stage": self.stage.name,
            "round": self.task.review_round,
        }
        env = hooks.hook_environment(hook.name, workflow=self.workflow, worktree=self.worktree, context=context)
        self._append_event(AgentEvent.Kind.SYSTEM, {"hook": hook.name, "status": "running", "message": f"{hook.name} started"})
        self.flush_events()

        stops: list[StopAgent] = []

        def should_stop() -> str | None:
            stop = self.on_tick()
            if stop is None:
                return None
            stops.append(stop)
            return stop.reason

        box_root, boxes, wrap = self.hook_sandbox(hook)
        try:
            run = hooks.run_hook(
                hook,
                cwd=self.worktree,
                env=env,
            grace=settings.TACX["KILL_GRACE_SECONDS"],
            should_stop=should_stop,
            # The reaper kills a dead worker's process group by Worker.pgid: the hook's, now.
            on_start=self.on_start,
                poll_seconds=min(1.0, settings.TACX["HEARTBEAT_SECONDS"]),
                secret_values=hooks.secret_values(hook.name, workflow=self.workflow, env=env),
                wrap=wrap,
            )
        finally:
            for box in boxes:
                box.finish()
                for entry in box.new_violations():
                    self._append_event(AgentEvent.Kind.SANDBOX, {**entry, "hook": hook.name})
            if box_root is not None:
                shutil.rmtree(box_root, ignore_errors=True)
        self._append_event(AgentEvent.Kind.SYSTEM if run.ok else AgentEvent.Kind.ERROR, run.event_data())
        self.flush_events()
        if stops:
            raise StageFailure(f"{hook.name} stopped: {stops[0].reason}", outcome=stops[0].outcome)
        return run

    def hook_sandbox(self, hook: HookConfig):
        """``(root, boxes, wrap)`` for running `hook` in the agent sandbox: the worktree, a
        private HOME of its own (never the agent's: what setup writes there, e.g. a token in
        ~/.npmrc, stays out of the agent's reach) and the hook's own network allow-list.
        ``(None, [], None)`` with the sandbox off."""
        if not sandbox.enabled():
            return None, [], None
        assert self.worktree is not None
        root = sandbox.new_root()
        home = root / "home"
        (home / "tmp").mkdir(parents=True)
        boxes: list[sandbox.Box] = []
        access = self.git_access()

        def wrap(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
            box = sandbox.prepare(
                argv=argv,
                env={**env, "HOME": str(home), "TMPDIR": str(home / "tmp")},
                worktree=self.worktree,
                git_access=access,
                allow_hosts=list(hook.network_allow),
                home=home,
                root=root,
                extra_write=settings.TACX.get("SANDBOX_HOOK_WRITE", []),
            )
            boxes.append(box)
            return box.argv, box.env, box.cwd

        return root, boxes, wrap

    def run_tests(self) -> None:
        """The workflow's test_command, run by TAC-X after building: its result is evidence for
        the reviewer and the PR; a failure sends the task back to building (finish_attempt)."""
        run = self.run_repository_command(self.workflow.test_command)
        if run is None:
            return
        self.tests = run
        r = self.result
        r.tests_status, r.tests_exit_code, r.tests_duration, r.tests_output = run.status, run.exit_code, run.duration, run.output
        # Everything the builder made is committed; what the tests left behind (caches, reports)
        # must not reach the branch through a later "remaining changes" commit.
        assert self.worktree is not None
        git.run(["reset", "--hard", "--quiet", "HEAD"], cwd=self.worktree)
        git.run(["clean", "-fdq"], cwd=self.worktree)

    def prompt_context(self) -> dict[str, object]:
        task = self.task
        tests = self.tests_for_prompt()
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
            if not feedback and tests is not None and tests.tests_status != "passed":
                feedback = "The test command failed after your last changes; make it pass (its output is in <test_result>)."
        # Untrusted text (the issue, and what agents wrote from it) is escaped so it cannot
        # close the markup around it in a prompt (`</issue><system>...`, `title="..." ...>`).
        return {
            "stage": self.stage.name,
            "round": task.review_round,
            "issue_number": task.issue_number,
            "issue_title": untrusted_text(services.sanitize_issue_title(task.title)),
            "issue_body": untrusted_text(task.body),
            "repository": task.repository.full_name,
            "branch": task.branch,
            "plan": untrusted_text(plan),
            "review_feedback": untrusted_text(feedback or "(none)"),
            "worktree": str(self.worktree),
            "test_result": hooks.tests_report(tests, configured=self.workflow.test_command is not None),
            "followup": self.followup_text() or "(none)",
        }

    def followup_text(self) -> str:
        """The round's trigger (fenced) for the stage it restarts: building, or planning for
        plan feedback; "" otherwise."""
        round_ = self.followup
        if round_ is None:
            return ""
        target = "planning" if round_.kind == Round.Kind.REPLAN else "building"
        return rounds.round_prompt_section(round_) if self.stage.name == target else ""

    def tests_for_prompt(self) -> StageResult | None:
        """The test result a prompt shows: for a builder the previous round's (what failed), for
        a reviewer the current round's."""
        if self.workflow.test_command is None:
            return None
        runs = StageResult.objects.filter(task=self.task, stage__name="building", success=True).exclude(tests_status="")
        if self.stage.name == "building":
            if self.task.review_round <= 1:
                return None
            runs = runs.filter(round=self.task.review_round - 1)
        else:
            runs = runs.filter(round=self.task.review_round)
        return runs.order_by("-id").first()

    def render_prompt(self) -> str:
        header = f"TACX-STAGE: {self.stage.name}" + (f" (round {self.task.review_round})" if self.task.review_round > 1 else "")
        if self.followup is not None:
            header += f" (follow-up {self.followup.kind})"
        # format_map substitutes values once; braces inside the issue text are never re-parsed.
        context = self.prompt_context()
        prompt = f"{header}\n\n{self.cfg.prompt.format_map(context)}"
        # The test evidence reaches the agent even when a repository's own prompt forgets it.
        if self.workflow.test_command is not None and "{test_result}" not in self.cfg.prompt:
            if self.stage.name == "reviewing" or (self.stage.name == "building" and self.task.review_round > 1):
                prompt += f"\n\n<test_result>\n{context['test_result']}\n</test_result>\n"
        extra = self.followup_text()
        if extra and "{followup" not in self.cfg.prompt:
            prompt = f"{prompt.rstrip()}\n\n{extra}\n"  # a workflow prompt without {followup} still gets it
        return prompt

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
            resume_session=self.session_to_resume(provider),
            sandboxed=sandbox.enabled(),
        )
        result.resumed_session_id = invocation.resume_session[:200]
        argv = provider.build_command(invocation)
        env = agent_environment(provider, invocation)
        # Commits the agent makes need an identity; its HOME has no git config of ours.
        env.update(git.identity_env())
        result.cli_version = provider.version()[:100]
        # A private HOME per attempt, in both modes: the CLI's settings are TAC-X's, and nothing
        # of the operator's HOME (~/.ssh, ~/.config, other CLIs' tokens) is on the agent's path.
        self.box_root = sandbox.new_root()
        home = self.box_root / "home"
        (home / "tmp").mkdir(parents=True)
        env["HOME"], env["TMPDIR"] = str(home), str(home / "tmp")
        provider.prepare_home(str(home), invocation, env)
        if invocation.resume_session:
            sessions.session_restore(provider=provider, home=home, session_id=invocation.resume_session, task_id=self.task.pk, cwd=str(self.worktree))
        access = self.git_access()
        if sandbox.enabled():
            self.box = sandbox.prepare(
                argv=argv,
                env=env,
                worktree=self.worktree,
                git_access=access,
                allow_hosts=[provider.api_url(env), str(cfg.options.get("base_url") or ""), *self.workflow.allowed_hosts(cfg)],
                home=home,
                root=self.box_root,
            )
            argv, env = self.box.argv, self.box.env
            self._append_event(AgentEvent.Kind.SYSTEM, {"subtype": "sandbox", "mode": sandbox.mode(), "allowed_hosts": self.box.allowed_hosts})
        else:
            self._append_event(AgentEvent.Kind.SYSTEM, {"subtype": "sandbox", "mode": "off", "allowed_hosts": []})
        guarded = git.guard_snapshot(access.common, access.admin) if access else None
        self.parser = provider.parser(invocation)
        self.meter = budgets.Meter.for_attempt(task=self.task, stage_cfg=cfg, workflow=self.workflow)
        if (refusal := self.meter.refusal()) is not None:
            raise StageFailure(refusal, outcome=StageResult.Outcome.BUDGET_EXCEEDED, permanent=True)
        tacx = settings.TACX
        self._last_renew = time.monotonic()
        r = self.result
        self._totals_written = (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.cost_usd)
        proc = run_agent(
            argv,
            cwd=str(self.box.cwd if self.box is not None else self.worktree),
            env=env,
            parser=self.parser,
            timeout=cfg.timeout,
            stall_timeout=cfg.stall_timeout or tacx.get("STALL_SECONDS") or None,
            grace=tacx["KILL_GRACE_SECONDS"],
            on_start=self.on_start,
            on_events=self.on_events,
            on_tick=self.on_tick,
            on_idle=self.on_idle,
            tick_seconds=min(1.0, tacx["HEARTBEAT_SECONDS"]),
            stdin_data=provider.stdin_data(invocation),
        )
        if self.box is not None:
            self.box.finish()
        self.collect_blocked()
        if access is not None and guarded is not None:
            # Before any other git command of TAC-X's: the agent's hands off git's programs.
            tampered = git.guard_check(access.common, access.admin, guarded)
            git.pin_worktree(self.repo_dir, self.worktree)
            if tampered:
                raise StageFailure(
                    "the agent changed the repository's git configuration or hooks ("
                    + ", ".join(Path(p).name for p in tampered[:5])
                    + "); TAC-X put them back and will not use this attempt",
                    permanent=True,
                )
        else:
            git.pin_worktree(self.repo_dir, self.worktree)
        outcome = proc.outcome
        usage = outcome.usage
        result.exit_code = proc.exit_code
        self.apply_usage(usage)
        result.turns = usage.turns
        result.session_id = usage.session_id[:200]
        if result.session_id and self.stage.name == "building":
            # Its private HOME goes away: keep the session for a round to resume.
            sessions.session_keep(provider=provider, home=home, session_id=result.session_id, task_id=self.task.pk)
        result.model = (usage.model or cfg.model)[:100]
        if usage.cli_version:
            result.cli_version = usage.cli_version[:100]
        result.output_text = redact(outcome.final_text or "")
        if proc.stop is not None:
            if proc.stop.outcome == StageResult.Outcome.BUDGET_EXCEEDED and self.worktree is not None:
                # Keep the work done so far: it is on the branch for a human to pick up.
                if git.commit_all(self.worktree, f"tacx: work in progress of {self.stage.name} when the budget ran out (#{self.task.issue_number})"):
                    git.push(self.worktree, repos.push_remote(self.task.repository), self.task.branch, auth_header=repos.auth_header(self.task.repository))
            raise StageFailure(proc.stop.reason, outcome=proc.stop.outcome, permanent=outcome.permanent)
        if not outcome.success:
            raise StageFailure(outcome.error or f"agent exited with code {proc.exit_code}", permanent=outcome.permanent)

    def session_to_resume(self, provider) -> str:
        """In a follow-up round's building stage, the previous building session when the
        workflow allows it and the CLI can resume it here; "" for a cold start."""
        if self.followup is None or self.stage.name != "building" or not self.workflow.resume_session:
            return ""
        if StageResult.objects.filter(followup=self.followup, stage=self.stage).exclude(pk=self.result.pk).exists():
            return ""  # a retry inside the round: start cold rather than resume what failed
        session = sessions.resumable_session(task=self.task, stage_name="building", provider=self.cfg.provider)
        available = session and sessions.session_available(provider=provider, session_id=session, task_id=self.task.pk, cwd=str(self.worktree))
        return session if available else ""

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
        git.push(self.worktree, repos.push_remote(self.task.repository), self.task.branch, auth_header=repos.auth_header(self.task.repository))
        body = pulls.pull_request_body(self.task)
        self.result.output_text = body
        self.result.output_file = "pull request body"
        url, number = pulls.pull_request_open(task=self.task, body=body)
        Task.objects.filter(pk=self.task.pk).update(pr_url=url, pr_number=number)
        self.task.pr_url, self.task.pr_number = url, number

    # --- hooks called from the agent loop ------------------------------------------------------

    def collect_blocked(self) -> None:
        """Connections the sandbox refused since the last look, as ``sandbox`` events."""
        if self.box is None:
            return
        for entry in self.box.new_violations():
            self._append_event(AgentEvent.Kind.SANDBOX, entry)

    def close_box(self) -> None:
        if self.box is not None:
            self.box.finish()
        if self.box_root is not None:
            self.collect_blocked()
            shutil.rmtree(self.box_root, ignore_errors=True)
            self.box_root = None

    def on_start(self, pgid: int) -> None:
        Worker.objects.filter(pk=self.worker.pk).update(pgid=pgid)

    def _append_event(self, kind: str, data: dict) -> None:
        """One event of TAC-X's own about this attempt, stored with the agent's next batch."""
        self._seq += 1
        self._pending.append(AgentEvent(task=self.task, result=self.result, seq=self._seq, kind=kind, data=redact_data(data)))

    def on_events(self, events: list[Event]) -> StopAgent | None:
        # How busy the stream is, per second: a busy one is batched longer (fewer writes per
        # line), a quiet one shortly (live clients see each line within tens of ms).
        now = time.monotonic()
        self._rate_lines += len(events)
        if now - self._rate_since >= 1.0:
            self._busy = self._rate_lines / (now - self._rate_since) >= BUSY_LINES_PER_SECOND
            self._rate_since, self._rate_lines = now, 0
        for event in events:
            self._seq += 1
            self._pending.append(
                AgentEvent(task=self.task, result=self.result, seq=self._seq, kind=_kind(event.kind), data=redact_data(event.data))
            )
            if event.kind == "usage" and (stop := self.meter.check(self.parser.usage)) is not None:
                return stop
        self.flush_events(due_only=True)
        return self.database_stop()

    def on_idle(self) -> float | None:
        """The agent went quiet: store what is due; returns when the rest will be due."""
        return self.flush_events(due_only=True)

    def on_tick(self) -> StopAgent | None:
        self.collect_blocked()
        self.flush_events()
        now = time.monotonic()
        if now - self._last_renew >= settings.TACX["HEARTBEAT_SECONDS"]:
            # Lease, heartbeat and the task's status, once per heartbeat (a cancel is noticed
            # within one): two statements when all is well.
            try:
                renewed = Stage.objects.filter(
                    pk=self.stage.pk, lease_owner=self.owner, status=Stage.Status.RUNNING, task__status=Task.Status.RUNNING
                ).update(lease_expires_at=lease_expiry(), heartbeat_at=Now())
                Worker.objects.filter(pk=self.worker.pk).update(heartbeat_at=Now())
                if not renewed:
                    if Stage.objects.filter(pk=self.stage.pk, lease_owner=self.owner, status=Stage.Status.RUNNING).exists():
                        status = Task.objects.filter(pk=self.task.pk).values_list("status", flat=True).first()
                        return StopAgent(StageResult.Outcome.CANCELLED, f"task {status or 'deleted'} while the agent ran")
                    return StopAgent(StageResult.Outcome.WORKER_LOST, "lease lost: another worker owns this stage now")
            except dbretry.DB_ERRORS as exc:
                # The lease outlives a short outage; the next tick tries again.
                self._db_failed(exc)
                return self.database_stop()
            self._db_ok(wrote_events=False)
            self._last_renew = now
        self.release_connection()
        return self.database_stop()

    def flush_events(self, *, due_only: bool = False) -> float | None:
        """Store the pending events in one batch and wake live clients. With `due_only`, only
        when the batch is due: EVENT_BATCH_SECONDS after the previous one (EVENT_BATCH_BUSY_SECONDS
        while the stream is busy; the first line after a quiet spell goes at once), or
        EVENT_BATCH_MAX events. Returns the seconds until
        the held-back events are due (None when none are held back). The token totals are
        written only when they changed. A database error keeps the events for the next try."""
        if not self._pending:
            return None
        tacx = settings.TACX
        now = time.monotonic()
        if due_only and len(self._pending) < tacx.get("EVENT_BATCH_MAX", 500):
            window = tacx.get("EVENT_BATCH_BUSY_SECONDS", 0.25) if self._busy else tacx["EVENT_BATCH_SECONDS"]
            wait = self._last_flush + window - now
            if wait > 0:
                return wait
        if self._outage is not None and self._outage.since is not None and due_only and now - self._last_flush < 1.0:
            return 1.0  # the database is down: try again in a second, not at every line
        batch, self._pending = self._pending, []
        self._last_flush = now
        try:
            created = self._store(batch)
        except dbretry.DB_ERRORS as exc:
            self._pending = batch + self._pending
            self._db_failed(exc)
            return 1.0
        self._db_ok()
        last_id = created[-1].pk if created and created[-1].pk else None
        if last_id:
            live.notify(self.task.pk, last_id)
        return None

    def flush_remaining(self) -> None:
        """Store every pending event (the agent has ended); raises while the database is away,
        so `dbretry.retry` tries again."""
        self.flush_events()
        if self._pending:
            raise OperationalError(f"{len(self._pending)} events not stored yet: the database is unavailable")

    def _store(self, batch: list[AgentEvent]) -> list[AgentEvent]:
        # One INSERT is atomic on PostgreSQL; where bulk_create splits a batch into several
        # statements (SQLite), a transaction keeps a retried batch from being stored twice.
        atomic = connection.vendor != "postgresql" and len(batch) > 1
        with transaction.atomic() if atomic else nullcontext():
            created = AgentEvent.objects.bulk_create(batch)
            parser = getattr(self, "parser", None)
            if parser is not None:
                self.apply_usage(parser.usage)
                r = self.result
                totals = (r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.cost_usd)
                if totals != self._totals_written:
                    StageResult.objects.filter(pk=r.pk, outcome=StageResult.Outcome.RUNNING).update(
                        input_tokens=r.input_tokens,
                        output_tokens=r.output_tokens,
                        cache_read_tokens=r.cache_read_tokens,
                        cache_write_tokens=r.cache_write_tokens,
                        cost_usd=r.cost_usd,
                    )
                    self._totals_written = totals
        return created

    def _db_failed(self, exc: Exception) -> None:
        if self._outage is None:
            self._outage = dbretry.Outage()
        self._outage.failed(exc)

    def _db_ok(self, *, wrote_events: bool = True) -> None:
        if wrote_events:
            # A heartbeat does not count: between heartbeats a quiet agent needs no connection.
            self._last_write = time.monotonic()
        if self._outage is not None:
            self._outage.succeeded()

    def database_stop(self) -> StopAgent | None:
        """Stop the agent once the database has been unreachable for longer than the limit."""
        if self._outage is None or self._outage.since is None or self._outage.seconds < self._outage.limit:
            return None
        return StopAgent(StageResult.Outcome.FAILED, f"database unavailable for {self._outage.seconds:.0f} s")

    def release_connection(self) -> None:
        """Close the database connection after DB_RELEASE_SECONDS without a write: an agent that
        waits for its model holds no connection (the next write opens one)."""
        release = settings.TACX.get("DB_RELEASE_SECONDS", 2.0)
        if connection.connection is None or connection.in_atomic_block or self._pending:
            return
        if time.monotonic() - self._last_write >= release:
            dbretry.drop_connection()


_KINDS = {k.value for k in AgentEvent.Kind}


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:]) or "(no output)"


def _kind(kind: str) -> str:
    return kind if kind in _KINDS else AgentEvent.Kind.RAW
