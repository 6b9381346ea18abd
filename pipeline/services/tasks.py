"""A task's birth and restarts: creating, submitting, skipping, starting, dispatching, retrying,
holding and releasing a task, and reading the workflow it starts with."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from .. import git, repos
from ..lib.untrusted import sanitize_issue_text, sanitize_issue_title
from ..models import Repository, Stage, Task
from ..sandbox import toolchains
from ..workflow import Workflow, WorkflowError, load_workflow_text
from .candidates import candidates_retire
from .events import event_status
from .progress import stage_queue, task_fail

log = logging.getLogger(__name__)


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
    tracker_issue_key: str = "",
) -> tuple[Task, bool]:
    """Create a queued task for an issue, or return the active one. Returns (task, created).

    `tracker_issue_key` names an issue of a tracker with keys (Linear "ENG-123", Jira "PROJ-7");
    then "one active task per issue" is per key, and `issue_number` is only the key's number."""
    fields = {
        "tracker_issue_key": tracker_issue_key[:100],
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
            same = {"tracker_issue_key": tracker_issue_key} if tracker_issue_key else {"issue_number": issue_number, "tracker_issue_key": ""}
            existing = Task.objects.filter(repository=repository, status__in=Task.ACTIVE, **same).first()
            if existing is not None:
                return existing, False
    raise IntegrityError(f"cannot create a task for issue {tracker_issue_key or f'#{issue_number}'} of {repository}: another one keeps appearing and finishing")


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
        workflow_machine_check(load_workflow_text(workflow_text, source="workflow override"))  # raises WorkflowError
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


def task_skip(
    *,
    repository: Repository,
    issue_number: int,
    title: str,
    reason: str,
    triggered_by: str = "",
    trigger_source: str = "",
    tracker_issue_key: str = "",
    triggered_at=None,
) -> Task:
    """Record a refused trigger so people can see why nothing happened. `triggered_at`: when
    the refused trigger happened (default now), which a poller compares its triggers with."""
    task = Task.objects.create(
        triggered_at=triggered_at or timezone.now(),
        repository=repository,
        issue_number=issue_number,
        tracker_issue_key=tracker_issue_key[:100],
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


def task_retry(*, task: Task, enqueue: bool = True) -> Task:
    """Run a finished (failed/cancelled/budget) task again from the stage that did not succeed.

    Returns the same task re-queued; refuses while the issue has another active task.
    """
    if task.status == Task.Status.PAUSED:
        raise ValueError(f"task {task.pk} is paused at a budget: raise the limit or end it (`/tacx budget`, the dashboard or the API)")
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
        # A candidate shares its parent's position: the parent is the stage that runs again.
        stage = task.stages.filter(parent__isnull=True).exclude(status=Stage.Status.SUCCEEDED).order_by("position").first()
        event_status(task, "task retried")
        retired = candidates_retire(parent=stage) if stage is not None else []
        if retired:
            aside = ", ".join(f"c{k}" for k in retired)
            event_status(task, f"stage {stage.name}: candidates {aside} set aside; new candidates run")
        if stage is not None:
            task.stages.filter(position__gt=stage.position).update(status=Stage.Status.PENDING)
            Stage.objects.filter(pk=stage.pk).update(failed_attempts=0, error="")
            stage.refresh_from_db()
            stage_queue(stage=stage, enqueue=enqueue, force=True)
    return task


def workflow_error_fail(*, task: Task, error: WorkflowError) -> None:
    task_fail(task=task, reason=f"invalid workflow: {error}")


def workflow_machine_check(workflow: Workflow) -> Workflow:
    """What the schema cannot know: that this machine has the workflow's `toolchains`. Raises
    WorkflowError naming each missing one (the attempt checks again on the machine it runs on)."""
    try:
        toolchains.resolve(workflow.toolchains)
    except toolchains.ToolchainError as exc:
        errors = [f"{workflow.source}: {problem}" for problem in exc.problems]
        raise WorkflowError(errors[0], errors=errors) from None
    return workflow


# Where a task's workflow came from when it is the one set on the repository's dashboard page.
REPOSITORY_WORKFLOW_SOURCE = "the repository's workflow in TAC-X"


def task_workflow_read(*, task: Task) -> Workflow | None:
    """The workflow `task` would start with, read from its repository.

    An invalid file (or any other error while loading it) fails the task at once with the
    reason, before any agent starts; a repository that cannot be read just now (transient) only
    returns None. Call it outside any lock: parsing a hostile file takes what it takes."""
    try:
        if task.workflow_override:
            return workflow_machine_check(load_workflow_text(task.workflow_override, source="workflow override"))
        if task.repository.workflow_text.strip():
            return workflow_machine_check(load_workflow_text(task.repository.workflow_text, source=REPOSITORY_WORKFLOW_SOURCE))
        return workflow_machine_check(repos.read_workflow(task.repository))
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
