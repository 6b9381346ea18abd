"""Moving a task along: queueing stages, advancing after a success, sending it back for another
round, failing and cancelling it, and the coordinator's repairs (expired leases, lost jobs)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import models, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from .. import alerts
from ..models import BudgetPause, Stage, StageResult, Task
from ..workflow import Workflow
from . import approval
from .budget_pauses import budget_pause_wait
from .events import event_status


def task_fail(*, task: Task, reason: str, status: str = Task.Status.FAILED, alert: bool = True) -> bool:
    """Finish an active task with an explanation (conditional: a finished task stays finished).
    A stage waiting at a budget pause is cancelled with it, and the pause closed. `alert=False`
    when the caller sends its own alert about the end."""
    with transaction.atomic():
        done = Task.objects.filter(pk=task.pk, status__in=Task.ACTIVE).update(
            status=status, status_reason=reason[:4000], finished_at=timezone.now()
        )
        if done:
            task.stages.filter(status__in=[Stage.Status.PENDING, Stage.Status.QUEUED, Stage.Status.PAUSED]).update(status=Stage.Status.CANCELLED)
            BudgetPause.objects.filter(task=task, status=BudgetPause.Status.WAITING).update(
                status=BudgetPause.Status.CANCELLED, answered_at=timezone.now()
            )
            task.refresh_from_db()
            event_status(task, f"task {status}: {reason}")
            if alert:
                alerts.task_finished(task=task)
    return bool(done)


def task_cancel(*, task: Task, reason: str = "cancelled") -> bool:
    """Cancel a task that has not finished. A running agent notices at its next heartbeat and is
    killed; its attempt is recorded as cancelled."""
    return task_fail(task=task, reason=reason, status=Task.Status.CANCELLED)


def stage_queue(*, stage: Stage, enqueue: bool = True, force: bool = False) -> None:
    """Mark a stage queued and (after commit) hand its id to django-q2."""
    allowed = [Stage.Status.PENDING] + ([Stage.Status.FAILED, Stage.Status.CANCELLED, Stage.Status.SUCCEEDED, Stage.Status.QUEUED] if force else [])
    changed = Stage.objects.filter(pk=stage.pk, status__in=allowed).update(
        status=Stage.Status.QUEUED, lease_owner="", lease_expires_at=None, queued_at=Now()
    )
    if not changed:
        return
    event_status(stage.task, f"stage {stage.name} queued", stage=stage.name, stage_status="queued")
    if enqueue:
        stage_id = stage.pk
        transaction.on_commit(lambda: enqueue_stage_job(stage_id))


def enqueue_stage_job(stage_id: int) -> None:
    from django_q.tasks import async_task

    async_task("pipeline.jobs.run_stage", stage_id, task_name=f"stage-{stage_id}", q_options={"timeout": settings.Q_CLUSTER["timeout"]})


def stage_hand_back(*, stage_id: int, why: str = "handed back by a stopping worker cluster") -> bool:
    """A stage job taken by a cluster that is stopping (or by a full stage host): enqueue the
    (still queued) stage again at once for another worker. The claim keeps it exactly once
    whatever happens to the old job."""
    with transaction.atomic():
        changed = Stage.objects.filter(pk=stage_id, status=Stage.Status.QUEUED).update(queued_at=Now())
        if not changed:
            return False
        stage = Stage.objects.select_related("task").get(pk=stage_id)
        event_status(stage.task, f"stage {stage.name}: {why}", stage=stage.name, stage_status="queued")
        transaction.on_commit(lambda: enqueue_stage_job(stage_id))
    return True


def stage_succeeded_advance(*, stage: Stage, enqueue: bool = True) -> None:
    """After a successful stage: queue the next one, or finish the task."""
    task = stage.task
    task.refresh_from_db(fields=["status"])
    if task.status != Task.Status.RUNNING:
        return  # cancelled (or finished elsewhere) while the stage ran: nothing to advance
    nxt = task.stages.filter(position__gt=stage.position).order_by("position").first()
    if nxt is not None and stage.name == "planning":
        if approval.approval_required(task, Workflow.from_json(task.workflow)):
            approval.task_await_approval(task=task)  # `/tacx approve` queues the next stage
            return
    if nxt is None:
        with transaction.atomic():
            done = Task.objects.filter(pk=task.pk, status=Task.Status.RUNNING).update(
                status=Task.Status.SUCCEEDED, finished_at=timezone.now(), status_reason=""
            )
            if done:
                task.refresh_from_db()
                event_status(task, "task succeeded")
        return
    with transaction.atomic():
        stage_queue(stage=nxt, enqueue=enqueue)


def review_requests_changes(*, stage: Stage, enqueue: bool = True) -> bool:
    """Send the task back to building for another round; False when the rounds are used up."""
    task = stage.task
    workflow = Workflow.from_json(task.workflow)
    # Counted per pass (a follow-up round on the PR gets its own) and only reviews that asked
    # for changes count: a round spent on failing tests does not use up `review_rounds`.
    if approval.review_requests_used(task) > workflow.review_rounds - 1:
        return False
    building = task.stages.filter(name="building", parent__isnull=True).first()
    if building is None:
        return False
    _building_again(task=task, building=building, why="review requested changes", enqueue=enqueue)
    return True


def tests_failed_back_to_building(*, stage: Stage, summary: str, enqueue: bool = True) -> bool:
    """The test command failed after building: run building again (another round, with the
    test output in its prompt). False when `max_test_rounds` failing test rounds (this one
    included) were run in this pass; review rounds are counted apart."""
    task = stage.task
    workflow = Workflow.from_json(task.workflow)
    if approval.test_rounds_failed(task) >= workflow.max_test_rounds:
        return False
    _building_again(task=task, building=stage, why=summary, enqueue=enqueue)
    return True


def _building_again(*, task: Task, building: Stage, why: str, enqueue: bool) -> None:
    """The next round of `task` starts at `building`: the stages after it wait again and building
    gets its whole attempt budget back."""
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(review_round=F("review_round") + 1)
        task.refresh_from_db()
        task.stages.filter(position__gt=building.position).update(status=Stage.Status.PENDING)
        Stage.objects.filter(pk=building.pk).update(failed_attempts=0)
        event_status(task, f"{why}: back to building (round {task.review_round})")
        stage_queue(stage=building, enqueue=enqueue, force=True)


def result_add_to_totals(*, result: StageResult) -> None:
    Task.objects.filter(pk=result.task_id).update(
        input_tokens=F("input_tokens") + result.input_tokens,
        output_tokens=F("output_tokens") + result.output_tokens,
        cache_read_tokens=F("cache_read_tokens") + result.cache_read_tokens,
        cache_write_tokens=F("cache_write_tokens") + result.cache_write_tokens,
        cost_usd=F("cost_usd") + (result.cost_usd or Decimal("0")),
    )


def stage_reap_expired(*, now=None, enqueue: bool = True, limit: int = 20, task: Task | None = None) -> list[StageResult]:
    """Stages whose lease expired (worker killed, machine lost): record the open attempt as
    "worker lost" and re-queue the stage until its attempt limit. Returns the reaped attempts.
    `task`: only that task's stages (a driver that runs its tasks' stages itself, such as
    `eval_run`, reaps its own)."""
    # Leases are set with the database clock (attempt.context.lease_expiry); compare with it too, so
    # hosts with skewed clocks agree on what expired. Tests pin `now`.
    expired_before = now or Now()
    now = now or timezone.now()
    reaped: list[StageResult] = []
    candidates = list(
        Stage.objects.filter(status=Stage.Status.RUNNING, lease_expires_at__lt=expired_before, **({"task": task} if task is not None else {}))
        .select_related("task")[:limit]
    )
    for stage in candidates:
        with transaction.atomic():
            # Conditional on the lease we saw: a worker that renewed meanwhile keeps its stage.
            owner, expires = stage.lease_owner, stage.lease_expires_at
            pausing = BudgetPause.objects.filter(stage=stage, status=BudgetPause.Status.STOPPING).first()
            if pausing is not None:
                # A budget that pauses had stopped the agent and the worker died keeping its
                # work: the task pauses as it would have, the attempt is not retried.
                if Stage.objects.filter(pk=stage.pk, status=Stage.Status.RUNNING, lease_owner=owner, lease_expires_at=expires).update(
                    status=Stage.Status.PAUSED, lease_owner="", lease_expires_at=None, error="worker lost while pausing"
                ):
                    reaped += _close_open_attempts(
                        stage,
                        now,
                        outcome=StageResult.Outcome.BUDGET_EXCEEDED,
                        error=f"{pausing.reason}; the worker was lost while keeping the work (lease held by {owner} expired at {expires:%H:%M:%S}): what it had not pushed is not on the branch",
                    )
                    event_status(stage.task, f"stage {stage.name}: worker lost while pausing at a budget", stage=stage.name, stage_status="paused")
                    budget_pause_wait(pause=pausing, stage=stage, now=now)
                continue
            exhausted = stage.failed_attempts + 1 >= stage.max_attempts
            changed = Stage.objects.filter(
                pk=stage.pk, status=Stage.Status.RUNNING, lease_owner=owner, lease_expires_at=expires
            ).update(
                status=Stage.Status.FAILED if exhausted else Stage.Status.QUEUED,
                failed_attempts=F("failed_attempts") + 1,
                lease_owner="",
                lease_expires_at=None,
                error="worker lost",
                finished_at=now if exhausted else None,
                queued_at=Now(),
            )
            if not changed:
                continue
            reaped += _close_open_attempts(
                stage, now, outcome=StageResult.Outcome.WORKER_LOST, error=f"worker lost (lease held by {owner} expired at {expires:%H:%M:%S})"
            )
            event_status(stage.task, f"stage {stage.name}: worker lost", stage=stage.name, stage_status="failed" if exhausted else "queued")
            if exhausted and stage.parent_id:
                candidate_finished(stage=stage, enqueue=enqueue)  # one candidate lost: the others go on
            elif exhausted:
                task_fail(task=stage.task, reason=f"stage {stage.name} failed: worker lost (attempt limit {stage.max_attempts} reached)")
            elif enqueue:
                transaction.on_commit(lambda stage_id=stage.pk: enqueue_stage_job(stage_id))
    return reaped


def _close_open_attempts(stage: Stage, now, *, outcome: str, error: str) -> list[StageResult]:
    """The reaped stage's open attempts, recorded as ended (`outcome`, `error`) and counted."""
    closed = []
    for result in stage.results.filter(outcome=StageResult.Outcome.RUNNING):
        result.outcome = outcome
        result.success = False
        result.completed_at = now
        result.error = error[:4000]
        result.save(update_fields=["outcome", "success", "completed_at", "error"])
        result_add_to_totals(result=result)
        closed.append(result)
    stage.workers.filter(exited_at__isnull=True).update(exited_at=now)
    return closed


def stage_jobs() -> dict[str, list] | None:
    """The django-q2 jobs in the broker, as {task name: [lock, ...]}; None when the broker
    cannot be inspected (only the ORM broker can: its rows live in our database, shared by
    every machine).

    The ORM broker keeps a job's row until the job is acknowledged; `lock` means "not before":
    the enqueue time while the job waits, now + q2's `retry` once a worker took it."""
    from django_q.brokers import get_broker
    from django_q.brokers.orm import ORM
    from django_q.conf import Conf
    from django_q.models import OrmQ

    broker = get_broker()
    if not isinstance(broker, ORM):
        return None
    jobs: dict[str, list] = {}
    for job in OrmQ.objects.using(Conf.ORM).filter(key=broker.list_key).only("id", "payload", "lock"):
        jobs.setdefault(str(job.name()), []).append(job.lock)
    return jobs


def stage_requeue_lost(*, older_than: float, limit: int = 20) -> list[int]:
    """Queued stages of running tasks whose q2 job is gone: lost before the claim (a worker
    killed between taking the job and claiming the stage; a process that died between its
    commit and the enqueue). Enqueue them again; returns their ids.

    A job counts as alive while it waits for a worker, or for `older_than` seconds after a
    worker took it: the worker claims the stage within moments, so a job taken longer ago whose
    stage is still queued belongs to a dead worker (q2 would redeliver it only after `retry`,
    hours). Exactly once across coordinators: the re-enqueue is claimed by a conditional UPDATE
    of `queued_at`, and the stage's own claim makes a late redelivery of the old job a no-op."""
    from django_q.conf import Conf
    from django_q.models import OrmQ

    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than)
    candidates = list(
        Stage.objects.filter(status=Stage.Status.QUEUED, task__status=Task.Status.RUNNING)
        .filter(models.Q(queued_at__lt=cutoff) | models.Q(queued_at__isnull=True))
        .select_related("task")
        .order_by("queued_at")[:limit]
    )
    if not candidates:
        return []
    jobs = stage_jobs()
    if jobs is None:
        return []
    taken_before = cutoff + timedelta(seconds=Conf.RETRY)  # lock of a job taken at `cutoff`
    requeued: list[int] = []
    for stage in candidates:
        name = f"stage-{stage.pk}"
        if any(lock is None or lock <= now or lock > taken_before for lock in jobs.get(name, [])):
            continue  # waiting for a worker, or taken just now
        with transaction.atomic():
            claimed = Stage.objects.filter(pk=stage.pk, status=Stage.Status.QUEUED, queued_at=stage.queued_at).update(queued_at=Now())
            if not claimed:
                continue  # a worker claimed it, or another coordinator re-enqueued it
            # The dead worker's job would come back after q2's `retry`: drop it.
            dead = [job.pk for job in OrmQ.objects.using(Conf.ORM).filter(lock__gt=now).only("id", "payload") if job.name() == name]
            if dead:
                OrmQ.objects.using(Conf.ORM).filter(pk__in=dead, lock__gt=now).delete()
            event_status(stage.task, f"stage {stage.name}: its job was lost before it started; queued again", stage=stage.name, stage_status="queued")
            transaction.on_commit(lambda stage_id=stage.pk: enqueue_stage_job(stage_id))
        requeued.append(stage.pk)
    return requeued


def lease_deadline(seconds: float | None = None):
    return timezone.now() + timedelta(seconds=seconds or settings.TACX["LEASE_SECONDS"])


# Best of N (pipeline.services.candidates): here because the reaper ends candidates too.
FINAL = (Stage.Status.SUCCEEDED, Stage.Status.FAILED, Stage.Status.CANCELLED)


def candidate_finished(*, stage: Stage, enqueue: bool = True) -> bool:
    """A candidate ended for good (succeeded, failed, cancelled): when it was the last of its pass
    still going, queue the parent for the selection. True when this call queued it. Call inside
    the transaction that recorded the candidate's end."""
    with transaction.atomic():
        parent = Stage.objects.select_for_update(of=("self",)).select_related("task").get(pk=stage.parent_id)
        key = (stage.candidate_info or {}).get("pass", "first")
        going = parent.candidates.filter(candidate_info__pass=key).exclude(status__in=FINAL).exclude(pk=stage.pk).count()
        if going or parent.status != Stage.Status.PENDING:
            return False
        if parent.task.status != Task.Status.RUNNING:
            return False
        event_status(
            parent.task, f"stage {parent.name}: every candidate ended; choosing one", stage=parent.name, stage_status="queued"
        )
        stage_queue(stage=parent, enqueue=enqueue)
        return True
