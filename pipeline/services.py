"""Every change of pipeline state goes through these functions (coordinator, dashboard, admin,
management commands and q2 jobs call them; none writes the tables itself).

Rules kept here:
- a task is created idempotently: the partial unique constraint refuses a second active task for
  one issue, and `task_create` returns the existing one instead;
- stages are claimed by conditional UPDATE (see `runner`), never by trusting the queue;
- the next stage is enqueued after commit, and only from our own state (no q2 chains).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from . import alerts, live
from .lib.redaction import redact_data
from .lib.untrusted import sanitize_issue_text, sanitize_issue_title
from .models import AgentEvent, Repository, Stage, StageResult, Task
from .workflow import Workflow, WorkflowError, load_workflow_text

log = logging.getLogger(__name__)

# --- tasks ------------------------------------------------------------------------------------


def task_create(
    *,
    repository: Repository,
    issue_number: int,
    title: str,
    body: str = "",
    triggered_by: str = "",
    trigger_source: str = "api",
    issue_url: str = "",
    triggered_at=None,
    labels: list[str] | tuple[str, ...] = (),
    workflow_override: str = "",
) -> tuple[Task, bool]:
    """Create a queued task for an issue, or return the active one. Returns (task, created)."""
    fields = {
        "workflow_override": workflow_override,
        "repository": repository,
        "issue_number": issue_number,
        "title": sanitize_issue_title(title)[:500] or f"Issue {issue_number}",
        "body": sanitize_issue_text(body),
        "triggered_by": triggered_by,
        "trigger_source": trigger_source,
        "issue_url": issue_url,
        "triggered_at": triggered_at or timezone.now(),
        "trigger_labels": [str(label)[:100] for label in labels][:50],
    }
    # Twice at most: if the active task that refused ours finished in between, the second
    # insert goes through.
    for _ in range(2):
        try:
            with transaction.atomic():
                task = Task.objects.create(**fields)
                event_status(task, f"task created from {trigger_source}" + (f" by {triggered_by}" if triggered_by else ""))
            return task, True
        except IntegrityError:
            existing = Task.objects.filter(repository=repository, issue_number=issue_number, status__in=Task.ACTIVE).first()
            if existing is not None:
                return existing, False
    raise IntegrityError(f"cannot create a task for issue #{issue_number} of {repository}: another one keeps appearing and finishing")



def task_submit(
    *,
    repository: Repository,
    title: str,
    body: str = "",
    issue_number: int | None = None,
    workflow_text: str = "",
    triggered_by: str = "",
    trigger_source: str = "api",
    start: bool = True,
) -> tuple[Task, bool]:
    """A task asked for by a person (dashboard form, API) rather than by an issue tracker.

    A local repository has no issue tracker: without `issue_number` the task gets the next free
    number of that repository. A GitHub repository's tasks start from its issues, so one is
    refused here. `workflow_text` (YAML) replaces the repository's workflow for this task; it is
    validated first and every problem raised at once (`WorkflowError`). With `start` the task is
    dispatched at once (an invalid repository workflow fails it with the reason). Returns
    (task, created) like `task_create`.
    """
    if repository.kind != Repository.Kind.LOCAL:
        raise ValueError("tasks of GitHub repositories start from their issues: label an issue instead")
    if not sanitize_issue_text(title):
        raise ValueError("a title is required")
    workflow_text = (workflow_text or "").strip()
    if workflow_text:
        load_workflow_text(workflow_text, source="workflow override")  # raises WorkflowError
    numbered = issue_number is not None
    # Without a number: the next free one. Two people submitting at once may pick the same; the
    # one refused by the active-task constraint takes the next number (a few times at most).
    for _ in range(1 if numbered else 5):
        task, created = task_create(
            repository=repository,
            issue_number=issue_number if numbered else _next_issue_number(repository),
            title=title,
            body=body,
            triggered_by=triggered_by,
            trigger_source=trigger_source,
            workflow_override=workflow_text,  # with the row: a dispatcher never sees it without
        )
        if created or numbered:
            break
    if created and start:
        task_dispatch(task=task)
        task.refresh_from_db()
    return task, created


def _next_issue_number(repository: Repository) -> int:
    top = Task.objects.filter(repository=repository).aggregate(n=models.Max("issue_number"))["n"]
    return (top or 0) + 1


def task_skip(*, repository: Repository, issue_number: int, title: str, reason: str, triggered_by: str = "", trigger_source: str = "") -> Task:
    """Record a refused trigger so people can see why nothing happened."""
    task = Task.objects.create(
        repository=repository,
        issue_number=issue_number,
        title=sanitize_issue_title(title)[:500] or f"Issue {issue_number}",
        status=Task.Status.SKIPPED,
        status_reason=reason,
        triggered_by=triggered_by,
        trigger_source=trigger_source,
        finished_at=timezone.now(),
    )
    event_status(task, f"skipped: {reason}")
    return task


def task_start(*, task: Task, workflow: Workflow, enqueue: bool = True) -> bool:
    """queued/waiting -> running: snapshot the workflow, create the stages, queue the first one.

    Conditional on the status, so two dispatchers cannot start one task twice.
    """
    with transaction.atomic():
        started = Task.objects.filter(pk=task.pk, status__in=[Task.Status.QUEUED, Task.Status.WAITING]).update(
            status=Task.Status.RUNNING,
            status_reason="",
            started_at=timezone.now(),
            workflow=workflow.to_json(),
            workflow_source=workflow.source,
        )
        if not started:
            return False
        task.refresh_from_db()
        max_attempts = settings.TACX["MAX_ATTEMPTS"]
        stages = [
            Stage(
                task=task,
                name=cfg.name,
                position=i,
                provider=cfg.provider,
                model=cfg.model,
                max_attempts=cfg.max_attempts or max_attempts,
            )
            for i, cfg in enumerate(workflow.stages)
        ]
        Stage.objects.bulk_create(stages)
        first = task.stages.order_by("position").first()
        event_status(task, "task started")
        stage_queue(stage=first, enqueue=enqueue)
    return True


def task_fail(*, task: Task, reason: str, status: str = Task.Status.FAILED) -> bool:
    """Finish an active task with an explanation (conditional: a finished task stays finished)."""
    with transaction.atomic():
        done = Task.objects.filter(pk=task.pk, status__in=Task.ACTIVE).update(
            status=status, status_reason=reason[:4000], finished_at=timezone.now()
        )
        if done:
            task.stages.filter(status__in=[Stage.Status.PENDING, Stage.Status.QUEUED]).update(status=Stage.Status.CANCELLED)
            task.refresh_from_db()
            event_status(task, f"task {status}: {reason}")
            alerts.task_finished(task=task)
    return bool(done)


def task_cancel(*, task: Task, reason: str = "cancelled") -> bool:
    """Cancel a task that has not finished. A running agent notices at its next heartbeat and is
    killed; its attempt is recorded as cancelled."""
    return task_fail(task=task, reason=reason, status=Task.Status.CANCELLED)


def task_retry(*, task: Task, enqueue: bool = True) -> Task:
    """Run a finished (failed/cancelled/budget) task again from the stage that did not succeed.

    Returns the same task re-queued; refuses while the issue has another active task.
    """
    if task.is_active:
        raise ValueError(f"task {task.pk} is still {task.status}; cancel it first")
    if task.status == Task.Status.SUCCEEDED:
        raise ValueError(f"task {task.pk} already succeeded")
    if task.status == Task.Status.SKIPPED:
        # A skip is a refused trigger (e.g. the labeler lacks write access): running it now
        # would bypass that check. A new trigger by someone allowed creates a new task.
        raise ValueError(f"task {task.pk} was skipped ({task.status_reason or 'trigger refused'}); it cannot be retried")
    with transaction.atomic():
        stopping = task.stages.filter(status=Stage.Status.RUNNING).first()
        if stopping is not None:
            # The attempt of a cancelled task is still being stopped (the agent may ignore
            # SIGTERM for the kill grace). Retrying now would either undo the cancel (the runner
            # has not noticed it yet) or leave the task running with no stage queued (the runner
            # ends the stage as cancelled afterwards). The runner frees the stage within
            # seconds; a dead worker's stage is reaped when its lease expires.
            raise ValueError(
                f"task {task.pk}: the agent of stage {stopping.name} is still being stopped; retry in a few seconds"
            )
        try:
            with transaction.atomic():
                updated = Task.objects.filter(pk=task.pk, status=task.status).update(
                    status=Task.Status.RUNNING if task.stages.exists() else Task.Status.QUEUED,
                    status_reason="",
                    finished_at=None,
                )
        except IntegrityError:
            raise ValueError(f"issue #{task.issue_number} already has an active task") from None
        if not updated:
            raise ValueError(f"task {task.pk} changed meanwhile; reload and try again")
        task.refresh_from_db()
        stage = task.stages.exclude(status=Stage.Status.SUCCEEDED).order_by("position").first()
        event_status(task, "task retried")
        if stage is not None:
            task.stages.filter(position__gt=stage.position).update(status=Stage.Status.PENDING)
            Stage.objects.filter(pk=stage.pk).update(failed_attempts=0, error="")
            stage.refresh_from_db()
            stage_queue(stage=stage, enqueue=enqueue, force=True)
    return task


# --- stages -----------------------------------------------------------------------------------


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


def stage_hand_back(*, stage_id: int) -> bool:
    """A stage job taken by a cluster that is stopping: enqueue the (still queued) stage again
    at once for another worker. The claim keeps it exactly once whatever happens to the old job."""
    with transaction.atomic():
        changed = Stage.objects.filter(pk=stage_id, status=Stage.Status.QUEUED).update(queued_at=Now())
        if not changed:
            return False
        stage = Stage.objects.select_related("task").get(pk=stage_id)
        event_status(stage.task, f"stage {stage.name}: handed back by a stopping worker cluster", stage=stage.name, stage_status="queued")
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
        from . import rounds

        if rounds.approval_required(task, Workflow.from_json(task.workflow)):
            rounds.task_await_approval(task=task)  # `/tacx approve` queues the next stage
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
    from . import rounds

    task = stage.task
    workflow = Workflow.from_json(task.workflow)
    # Counted per pass: a follow-up round on the PR gets its own review rounds.
    if rounds.review_rounds_used(task) >= workflow.review_rounds:
        return False
    building = task.stages.filter(name="building").first()
    if building is None:
        return False
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(review_round=F("review_round") + 1)
        task.refresh_from_db()
        task.stages.filter(position__gt=building.position).update(status=Stage.Status.PENDING)
        Stage.objects.filter(pk=building.pk).update(failed_attempts=0)
        event_status(task, f"review requested changes: back to building (round {task.review_round})")
        stage_queue(stage=building, enqueue=enqueue, force=True)
    return True


def tests_failed_back_to_building(*, stage: Stage, summary: str, enqueue: bool = True) -> bool:
    """The test command failed after building: run building again (another round, with the
    test output in its prompt). False when the rounds are used up."""
    task = stage.task
    workflow = Workflow.from_json(task.workflow)
    if task.review_round >= workflow.review_rounds:
        return False
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(review_round=F("review_round") + 1)
        task.refresh_from_db()
        task.stages.filter(position__gt=stage.position).update(status=Stage.Status.PENDING)
        Stage.objects.filter(pk=stage.pk).update(failed_attempts=0)
        event_status(task, f"{summary}: back to building (round {task.review_round})")
        stage_queue(stage=stage, enqueue=enqueue, force=True)
    return True


def result_add_to_totals(*, result: StageResult) -> None:
    Task.objects.filter(pk=result.task_id).update(
        input_tokens=F("input_tokens") + result.input_tokens,
        output_tokens=F("output_tokens") + result.output_tokens,
        cache_read_tokens=F("cache_read_tokens") + result.cache_read_tokens,
        cache_write_tokens=F("cache_write_tokens") + result.cache_write_tokens,
        cost_usd=F("cost_usd") + (result.cost_usd or Decimal("0")),
    )


def stage_reap_expired(*, now=None, enqueue: bool = True, limit: int = 20) -> list[StageResult]:
    """Stages whose lease expired (worker killed, machine lost): record the open attempt as
    "worker lost" and re-queue the stage until its attempt limit. Returns the reaped attempts."""
    # Leases are set with the database clock (runner.lease_expiry); compare with it too, so
    # hosts with skewed clocks agree on what expired. Tests pin `now`.
    expired_before = now or Now()
    now = now or timezone.now()
    reaped: list[StageResult] = []
    candidates = list(
        Stage.objects.filter(status=Stage.Status.RUNNING, lease_expires_at__lt=expired_before).select_related("task")[:limit]
    )
    for stage in candidates:
        with transaction.atomic():
            # Conditional on the lease we saw: a worker that renewed meanwhile keeps its stage.
            owner, expires = stage.lease_owner, stage.lease_expires_at
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
            open_results = list(stage.results.filter(outcome=StageResult.Outcome.RUNNING))
            for result in open_results:
                result.outcome = StageResult.Outcome.WORKER_LOST
                result.success = False
                result.completed_at = now
                result.error = f"worker lost (lease held by {owner} expired at {expires:%H:%M:%S})"
                result.save(update_fields=["outcome", "success", "completed_at", "error"])
                result_add_to_totals(result=result)
                reaped.append(result)
            stage.workers.filter(exited_at__isnull=True).update(exited_at=now)
            event_status(stage.task, f"stage {stage.name}: worker lost", stage=stage.name, stage_status="failed" if exhausted else "queued")
            if exhausted:
                task_fail(task=stage.task, reason=f"stage {stage.name} failed: worker lost (attempt limit {stage.max_attempts} reached)")
            elif enqueue:
                transaction.on_commit(lambda stage_id=stage.pk: enqueue_stage_job(stage_id))
    return reaped


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


# --- the live stream --------------------------------------------------------------------------


def event_status(task: Task, message: str, **data) -> AgentEvent:
    event = AgentEvent.objects.create(
        task=task,
        kind=AgentEvent.Kind.STATUS,
        data={"message": message, "task_status": task.status, **data},
    )
    live.notify_after_commit(task.pk, event.pk)
    return event


def workflow_error_fail(*, task: Task, error: WorkflowError) -> None:
    task_fail(task=task, reason=f"invalid workflow: {error}")


def task_workflow_read(*, task: Task) -> Workflow | None:
    """The workflow `task` would start with, read from its repository.

    An invalid file (or any other error while loading it) fails the task at once with the
    reason, before any agent starts; a repository that cannot be read just now (transient) only
    returns None. Call it outside any lock: parsing a hostile file takes what it takes."""
    from . import git, repos

    try:
        if task.workflow_override:
            return load_workflow_text(task.workflow_override, source="workflow override")
        return repos.read_workflow(task.repository)
    except WorkflowError as exc:
        workflow_error_fail(task=task, error=exc)
    except git.GitError as exc:
        if exc.permanent:
            task_fail(task=task, reason=f"cannot read the repository: {exc}")
        else:
            log.warning("task %s: repository not readable yet: %s", task.pk, exc)
    except Exception as exc:  # a case the loader does not name: retrying the same file won't help
        log.exception("task %s: loading the workflow crashed", task.pk)
        task_fail(task=task, reason=f"invalid workflow: cannot be loaded: {type(exc).__name__}: {str(exc)[:200]}")
    return None


def task_dispatch(*, task: Task, enqueue: bool = True, workflow: Workflow | None = None) -> bool:
    """Start the task with `workflow` (read from the repository when not given, see
    `task_workflow_read`). False when it did not start (failed, or the repository cannot be
    read just now)."""
    if workflow is None:
        workflow = task_workflow_read(task=task)
        if workflow is None:
            return False
    return task_start(task=task, workflow=workflow, enqueue=enqueue)


def task_run_inline(*, task: Task) -> Task:
    """Run every queued stage of a started task in this process (run_task, tests, demo)."""
    from . import runner

    while True:
        stage = task.stages.filter(status=Stage.Status.QUEUED).order_by("position").first()
        if stage is None:
            break
        runner.run_stage(stage.pk, enqueue_next=False)
    task.refresh_from_db()
    return task


# --- repositories and the coordinator's bookkeeping ---------------------------------------------


def repository_add(
    *,
    full_name: str,
    kind: str = Repository.Kind.GITHUB,
    local_path: str = "",
    clone_url: str = "",
    default_branch: str | None = None,
    trigger_label: str | None = None,
    max_concurrent_tasks: int | None = None,
) -> tuple[Repository, bool]:
    """Register a repository, or update the given fields of the one with that kind and name.

    Returns (repository, created). Fields passed as None (or "") keep their current value, so
    running `add_repo` twice is harmless.
    """
    fields = {
        "local_path": local_path,
        "clone_url": clone_url,
        "default_branch": default_branch,
        "trigger_label": trigger_label,
        "max_concurrent_tasks": max_concurrent_tasks,
    }
    given = {k: v for k, v in fields.items() if v not in (None, "")}
    repository, created = Repository.objects.get_or_create(kind=kind, full_name=full_name, defaults=given)
    if not created and given:
        for name, value in given.items():
            setattr(repository, name, value)
        repository.save(update_fields=list(given))
    return repository, created


def repository_poll_claim(*, repository: Repository, interval: float, now=None) -> bool:
    """Claim this repository's next poll: True for exactly one caller per `interval` seconds,
    however many coordinators ask (conditional UPDATE of `polled_at`, the time the poll began)."""
    now = now or timezone.now()
    due = now - timedelta(seconds=interval)
    claimed = (
        Repository.objects.filter(pk=repository.pk)
        .filter(models.Q(polled_at__isnull=True) | models.Q(polled_at__lte=due))
        .update(polled_at=now)
    )
    if claimed:
        repository.polled_at = now
    return claimed == 1


def repository_poll_etag_set(*, repository: Repository, etag: str) -> None:
    """Remember the ETag of a complete, fully handled issue listing (next poll sends it)."""
    Repository.objects.filter(pk=repository.pk).update(poll_etag=etag[:200])
    repository.poll_etag = etag[:200]


def task_hold(*, task: Task, reason: str) -> bool:
    """queued -> waiting (or a new reason for a waiting task): a budget holds it back. The
    dispatcher tries it again later; `task_start` accepts waiting tasks."""
    with transaction.atomic():
        changed = (
            Task.objects.filter(pk=task.pk, status__in=[Task.Status.QUEUED, Task.Status.WAITING])
            .exclude(status=Task.Status.WAITING, status_reason=reason)
            .update(status=Task.Status.WAITING, status_reason=reason[:4000])
        )
        if changed:
            task.refresh_from_db()
            event_status(task, f"waiting: {reason}")
    return bool(changed)


def task_release(*, task: Task) -> bool:
    """waiting -> queued once nothing holds the task back any more."""
    with transaction.atomic():
        changed = Task.objects.filter(pk=task.pk, status=Task.Status.WAITING).update(status=Task.Status.QUEUED, status_reason="")
        if changed:
            task.refresh_from_db()
            event_status(task, "no longer waiting")
    return bool(changed)


def task_progress_comment_set(*, task: Task, comment_id: int) -> None:
    """Record the id of the issue comment that shows the task's progress."""
    Task.objects.filter(pk=task.pk).update(progress_comment_id=comment_id)
    task.progress_comment_id = comment_id


def task_worktree_record(*, task: Task, host: str, path: str) -> None:
    """Note that `host` holds a worktree of `task` at `path` (before it is created: a machine
    that dies while creating it still has its clean-up recorded)."""
    from .models import TaskWorktree

    row, created = TaskWorktree.objects.get_or_create(task=task, host=host, path=path)
    if not created and row.removed_at is not None:
        TaskWorktree.objects.filter(pk=row.pk).update(removed_at=None)
    if task.worktree_removed_at is not None:
        Task.objects.filter(pk=task.pk).update(worktree_removed_at=None)
        task.worktree_removed_at = None


def task_worktree_remove(*, task: Task, worktree=None, host: str | None = None) -> bool:
    """Remove a finished task's worktree from this machine and record when.

    `worktree` is one TaskWorktree row of this machine; without it, every row of `host` (this
    machine by default), or, for a task from before such rows, its `worktree_path`. The task's
    `worktree_removed_at` is set once no machine holds a worktree of it any more. False (and
    nothing recorded) while the task is active, or when nothing was removed. A directory is
    deleted even if git no longer knows it, but only inside the worktree root.
    """
    import socket

    from .models import TaskWorktree

    if task.is_active:
        return False
    if worktree is not None:
        rows = [worktree] if worktree.removed_at is None else []
    else:
        rows = list(task.worktrees.filter(host=host or socket.gethostname(), removed_at__isnull=True))
        if not rows and not task.worktrees.exists():
            if not task.worktree_path or task.worktree_removed_at:
                return False
            if not _worktree_delete(task=task, path=task.worktree_path):
                return False
            return _worktree_removed_mark(task=task)
    removed = False
    for row in rows:
        if not _worktree_delete(task=task, path=row.path):
            continue
        removed |= bool(TaskWorktree.objects.filter(pk=row.pk, removed_at__isnull=True).update(removed_at=timezone.now()))
    if removed and not task.worktrees.filter(removed_at__isnull=True).exists():
        _worktree_removed_mark(task=task)
    return removed


def _worktree_delete(*, task: Task, path: str) -> bool:
    """Delete one worktree directory of this machine (its cleanup hook first); True when gone."""
    import shutil
    from pathlib import Path

    from . import git, repos

    path = Path(path)
    if path.exists():
        _cleanup_hook(task=task, path=path)
        try:
            git.worktree_remove(repos.source_dir(task.repository, fetch=False), path)
        except git.GitError as exc:
            log.warning("task %s: git could not remove worktree %s: %s", task.pk, path, exc)
        root = Path(settings.TACX["WORKTREE_ROOT"]).resolve()
        if path.exists() and path.resolve().parent == root:
            shutil.rmtree(path, ignore_errors=True)
    return not path.exists()


def _worktree_removed_mark(*, task: Task) -> bool:
    now = timezone.now()
    done = Task.objects.filter(pk=task.pk, status__in=Task.FINISHED, worktree_removed_at__isnull=True).update(worktree_removed_at=now)
    if done:
        task.worktree_removed_at = now
    return bool(done)


def events_prune(*, older_than_days: float, limit: int = 5000) -> int:
    """Delete up to `limit` transcript events (everything but status events) of tasks finished
    more than `older_than_days` ago; returns how many. The tasks, attempts and their totals
    stay; a finished task's page then shows its timeline without the transcript."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    ids = list(
        AgentEvent.objects.filter(task__status__in=Task.FINISHED, task__finished_at__lt=cutoff)
        .exclude(kind=AgentEvent.Kind.STATUS)
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    if not ids:
        return 0
    deleted, _ = AgentEvent.objects.filter(pk__in=ids).delete()
    return deleted


def _cleanup_hook(*, task: Task, path) -> None:
    """The workflow's `cleanup` hook, before the worktree goes; a failure is logged only."""
    from . import hooks

    try:
        workflow = Workflow.from_json(task.workflow) if task.workflow else None
    except WorkflowError:
        workflow = None
    hook = workflow.hook("cleanup") if workflow is not None else None
    if hook is None:
        return
    context = {"task_id": task.pk, "issue_number": task.issue_number, "repository": task.repository.full_name, "branch": task.branch}
    env = hooks.hook_environment("cleanup", workflow=workflow, worktree=path, context=context)
    run = hooks.run_hook(hook, cwd=path, env=env, grace=settings.TACX["KILL_GRACE_SECONDS"])
    kind = AgentEvent.Kind.SYSTEM if run.ok else AgentEvent.Kind.ERROR
    event = AgentEvent.objects.create(task=task, kind=kind, data=redact_data(run.event_data()))
    live.notify_after_commit(task.pk, event.pk)
    if not run.ok:
        log.warning("task %s: cleanup hook %s", task.pk, run.summary())
