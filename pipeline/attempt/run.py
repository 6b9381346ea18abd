"""The stage runner: one attempt of one stage, start to finish.

`run_stage(stage_id)` claims the stage by conditional UPDATE (a second delivery of the same q2
job changes 0 rows and returns), opens a StageResult row at once (so a worker that dies leaves
an open attempt the reaper can close), runs the agent or TAC-X's own pr_creation step, and in a
`finally` saves the result and advances the task. Every write after the claim is fenced by the
lease owner, so a worker that lost its lease cannot overwrite the truth."""

from __future__ import annotations

import logging
import os
import socket

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from .. import alerts, git, publish_guard, services
from ..accounting import TOKEN_FIELDS
from ..lib import dbretry, redaction
from ..lib.redaction import redact
from ..models import Stage, StageResult, Task, Worker
from ..providers.base import ProviderError
from ..workflow import Workflow
from . import selection
from .context import RunResult, StageFailure, worker_name
from .recorder import lease_expiry
from .steps import Attempt

log = logging.getLogger(__name__)


def run_stage(stage_id: int, *, enqueue_next: bool = True, owner: str | None = None) -> RunResult:
    owner = owner or worker_name()
    if selection.fan_out_if_due(stage_id, enqueue=enqueue_next):
        return RunResult.FANNED_OUT  # its candidates run as stage jobs of their own
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
        selecting = services.candidate_step(stage=stage, workflow=workflow, followup=followup) == "select"
        if stage.parent_id:
            cfg = selection.candidate_config(cfg, stage.candidate_info["spec"])
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
    continues = services.pause_continued(stage=stage, result=result)
    attempt = Attempt(
        stage=stage, task=task, cfg=cfg, workflow=workflow, result=result, owner=owner, worker=worker, followup=followup, continues=continues, selecting=selecting
    )
    permanent = False
    # The secrets this attempt is given (its MCP servers') are redacted from all it records.
    with redaction.attempt_secrets():
        try:
            attempt.execute()
        except StageFailure as exc:
            result.outcome, result.error, permanent = exc.outcome, redact(str(exc)), exc.permanent
        except (git.GitError, ProviderError, publish_guard.PublishBlocked) as exc:
            result.outcome, result.error, permanent = StageResult.Outcome.FAILED, redact(str(exc)), exc.permanent
        except Exception as exc:  # a bug must still leave a true record behind
            log.exception("stage %s attempt %s crashed", stage.pk, result.attempt)
            result.outcome, result.error = StageResult.Outcome.FAILED, redact(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            attempt.close_box()
            # The agent has ended; these writes wait out a short database outage (pipeline.lib.dbretry).
            dbretry.retry(attempt.recorder.flush_remaining, what=f"stage {stage.pk}: storing the last events")
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
            services.budget_pause_drop(pause=attempt.pause)  # the reaper's account stands
            return RunResult.LEASE_LOST
        services.result_add_to_totals(result=result)
        fence = Stage.objects.filter(pk=stage.pk, lease_owner=owner, status=Stage.Status.RUNNING)
        if attempt.pause is not None:
            if result.outcome == StageResult.Outcome.BUDGET_EXCEEDED and task.status == Task.Status.RUNNING:
                return pause_attempt(attempt, fence)
            services.budget_pause_drop(pause=attempt.pause)  # it ended otherwise (a cancel, a refusal of the gate)
        if result.success:
            if not fence.update(status=Stage.Status.SUCCEEDED, lease_owner="", lease_expires_at=None, finished_at=Now(), failed_attempts=0):
                return RunResult.LEASE_LOST
            if stage.parent_id:
                # A candidate: its branch is its own; the selection decides what the task keeps.
                tests = f", tests {attempt.tests.status}" if attempt.tests is not None else ""
                services.event_status(
                    task,
                    f"stage {stage.name} candidate c{stage.candidate} succeeded{tests}",
                    stage=stage.name,
                    stage_status="succeeded",
                )
                services.candidate_finished(stage=stage, enqueue=enqueue_next)
                return RunResult.SUCCEEDED
            if result.head_commit:
                # The next stage, on whichever machine, starts from this head (and checks it).
                Task.objects.filter(pk=task.pk).update(head_commit=result.head_commit)
                task.head_commit = result.head_commit
            services.event_status(task, f"stage {stage.name} succeeded", stage=stage.name, stage_status="succeeded")
            if attempt.selecting and services.choice_approval_required(task, attempt.workflow):
                record = stage.candidate_info["passes"][services.pass_key(attempt.followup)]
                if not record.get("approved"):
                    services.candidates_await_approval(task=task, chosen=record["chosen"])  # a person may choose another
                    return RunResult.SUCCEEDED
            if attempt.tests is not None and not attempt.tests.ok:
                if not services.tests_failed_back_to_building(stage=stage, summary=attempt.tests.summary(), enqueue=enqueue_next):
                    services.task_fail(
                        task=task,
                        reason=(
                            f"tests still failing after {services.test_rounds_failed(task)} failing test round(s) "
                            f"(max_test_rounds: {attempt.workflow.max_test_rounds}; {services.review_requests_used(task)} review(s) requested changes): "
                            f"{attempt.tests.summary()}"
                        ),
                    )
                    return RunResult.FAILED
                return RunResult.REQUEUED
            if attempt.verdict == "REQUEST_CHANGES":
                if not services.review_requests_changes(stage=stage, enqueue=enqueue_next):
                    services.task_fail(
                        task=task,
                        reason=(
                            f"review still requests changes after {services.review_requests_used(task)} review(s) requesting changes "
                            f"(review_rounds: {attempt.workflow.review_rounds}; {services.test_rounds_failed(task)} failing test round(s) counted apart)"
                        ),
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
        if stage.parent_id and result.outcome != StageResult.Outcome.BUDGET_EXCEEDED:
            services.candidate_finished(stage=stage, enqueue=enqueue_next)  # one candidate failed: the others go on
            return RunResult.FAILED
        if result.outcome == StageResult.Outcome.BUDGET_EXCEEDED:
            services.task_fail(task=task, reason=f"stage {stage.name}: {result.error}", status=Task.Status.BUDGET_EXCEEDED)
        else:
            services.task_fail(task=task, reason=f"stage {stage.name} failed: {result.error}")
        return RunResult.FAILED


def pause_attempt(attempt: Attempt, fence) -> RunResult:
    """A budget that pauses stopped the attempt (recorded as budget_exceeded): the stage waits
    `paused` (no failed attempt counted), the branch head is where its kept work is, and the
    task pauses (services.budget_pauses). Inside finish_attempt's transaction."""
    stage, task, result = attempt.stage, attempt.task, attempt.result
    if not fence.update(status=Stage.Status.PAUSED, lease_owner="", lease_expires_at=None, finished_at=None, error=result.error):
        services.budget_pause_drop(pause=attempt.pause)
        return RunResult.LEASE_LOST
    if result.head_commit:
        # The stage goes on from its kept work, on whichever machine (attempt.worktree).
        Task.objects.filter(pk=task.pk).update(head_commit=result.head_commit)
    if services.budget_pause_wait(pause=attempt.pause, stage=stage):
        return RunResult.PAUSED
    return RunResult.CANCELLED


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
    *TOKEN_FIELDS,
    "cost_usd",
    "turns",
    "session_id",
    "resumed_session_id",
    "tests_status",
    "tests_exit_code",
    "tests_duration",
    "tests_output",
    "memory_entries",
]
