"""What an issue trigger becomes: a task, a skipped task with the reason, or a cancellation.

Shared by the webhook deliveries and the poller, so both paths decide alike. Duplicates (a
redelivery, the poller seeing what a webhook already started, two coordinators) end in
`task_create`, whose partial unique constraint keeps one active task per issue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from pipeline import services
from pipeline.github import GitHubClient
from pipeline.models import Repository, Task
from pipeline.trackers import Tracker

from .authorization import labeler_refusal, write_access_refusal

log = logging.getLogger(__name__)

# trigger_source of a task started by assigning the issue to TAC-X's login (webhook or poll):
# the label reconcile of the poller leaves these alone, and only they are cancelled by an
# unassignment.
ASSIGNMENT_SOURCE = "assignment"


def own_login() -> str:
    """The GitHub login that issues are assigned to for TAC-X (TACX_GITHUB_LOGIN), or ""."""
    return str(settings.TACX.get("GITHUB_LOGIN", "") or "")


def is_own_login(login: str) -> bool:
    mine = own_login()
    return bool(mine and login and login.casefold() == mine.casefold())


@dataclass(frozen=True)
class IssueTrigger:
    """The trigger label is on an open issue, applied by `labeler`."""

    repository: Repository
    number: int
    title: str
    body: str
    url: str
    labeler: str
    labeler_type: str
    source: str  # webhook | poll
    triggered_at: datetime
    labels: tuple[str, ...] = ()  # the issue's labels (plan approval's skip label)
    via: str = "label"  # label | assignment (then `labeler` is who assigned the issue)
    key: str = ""  # the tracker's issue key (Linear, Jira); "" where the number names the issue

    @classmethod
    def of_issue(cls, repository: Repository, issue: dict, *, actor: dict, **fields) -> IssueTrigger:
        """Title, body and URL from GitHub's issue object, the labeler from its user object
        `actor` (who applied the label or assigned the issue), the other `fields` as given."""
        return cls(
            repository=repository,
            title=str(issue.get("title") or ""),
            body=str(issue.get("body") or ""),
            url=str(issue.get("html_url") or ""),
            labeler=str(actor.get("login") or ""),
            labeler_type=str(actor.get("type") or ""),
            **fields,
        )


def active_task(repository: Repository, number: int, key: str = "") -> Task | None:
    same = {"tracker_issue_key": key} if key else {"issue_number": number, "tracker_issue_key": ""}
    return Task.objects.filter(repository=repository, status__in=Task.ACTIVE, **same).first()


def trigger_handle(client: GitHubClient | Tracker, trigger: IssueTrigger) -> tuple[Task, str]:
    """Start work on the issue, or record why not. Returns (task, what happened).

    The task is the new one, the active one already there, or a skipped one whose
    `status_reason` says why. `client`: GitHub's client, or the repository's `Tracker` for
    another tracker (its `permission` decides). Raises GitHubError / TrackerError when the
    labeler's permission cannot be checked now (the caller retries later; nobody is refused
    for a tracker's hiccup).
    """
    existing = active_task(trigger.repository, trigger.number, trigger.key)
    if existing is not None:
        return existing, f"task {existing.pk} is already {existing.status}"
    if trigger.via == "assignment":
        refusal = (
            write_access_refusal(
                client,
                repository=trigger.repository,
                login=trigger.labeler,
                user_type=trigger.labeler_type,
                did=f" assigned the issue to {client.own_user() if isinstance(client, Tracker) else own_login()} but",
            )
            if trigger.labeler
            else "the assigner is unknown (no assigned event found for TAC-X's login)"
        )
    else:
        refusal = labeler_refusal(client, repository=trigger.repository, login=trigger.labeler, user_type=trigger.labeler_type)
    if refusal:
        task = services.task_skip(
            repository=trigger.repository,
            issue_number=trigger.number,
            title=trigger.title,
            reason=refusal,
            triggered_by=trigger.labeler,
            trigger_source=trigger.source,
            tracker_issue_key=trigger.key,
            # Other trackers' pollers compare with the trigger's own time (GitHub's: unchanged).
            triggered_at=trigger.triggered_at if isinstance(client, Tracker) else None,
        )
        log.info("%s#%s skipped: %s", trigger.repository, trigger.number, refusal)
        return task, f"skipped: {refusal}"
    task, created = services.task_create(
        repository=trigger.repository,
        issue_number=trigger.number,
        title=trigger.title,
        body=trigger.body,
        triggered_by=trigger.labeler,
        trigger_source=trigger.source,
        issue_url=trigger.url,
        triggered_at=trigger.triggered_at,
        labels=trigger.labels,
        tracker_issue_key=trigger.key,
    )
    if created:
        log.info("%s#%s: task %s created from %s by %s", trigger.repository, trigger.number, task.pk, trigger.source, trigger.labeler)
        return task, f"task {task.pk} created"
    return task, f"task {task.pk} is already {task.status}"


def untrigger_handle(*, repository: Repository, number: int, reason: str, label_only: bool = False, key: str = "") -> tuple[Task | None, str]:
    """Cancel the issue's unfinished task, if there is one (with `label_only`, only when the
    label started it: removing the label leaves a task started by an assignment alone)."""
    task = active_task(repository, number, key)
    if task is None:
        return None, "no unfinished task to cancel"
    if label_only and task.trigger_source == ASSIGNMENT_SOURCE:
        return task, f"task {task.pk} was started by an assignment, not the label: it goes on"
    if services.task_cancel(task=task, reason=reason):
        log.info("%s#%s: task %s cancelled: %s", repository, number, task.pk, reason)
        return task, f"task {task.pk} cancelled"
    return task, f"task {task.pk} had already finished"


def unassign_handle(*, repository: Repository, number: int, by: str, key: str = "", login: str = "") -> tuple[Task | None, str]:
    """The issue was unassigned from TAC-X's login (`login`, default TACX_GITHUB_LOGIN): cancel
    its task if an assignment started it and it has not started yet (still queued); otherwise
    change nothing and say so."""
    task = active_task(repository, number, key)
    mine = login or own_login()
    if task is None:
        return None, "no unfinished task"
    if task.trigger_source != ASSIGNMENT_SOURCE:
        return task, f"task {task.pk} was not started by an assignment; unassigning changes nothing"
    reason = f"the issue was unassigned from {mine} by {by or 'someone'} before the task started"
    if task.status == Task.Status.QUEUED and services.task_cancel(task=task, reason=reason):
        log.info("%s#%s: task %s cancelled: %s", repository, number, task.pk, reason)
        return task, f"task {task.pk} cancelled"
    task.refresh_from_db()
    message = f"the issue was unassigned from {mine} by {by or 'someone'}, but task {task.pk} had already started ({task.status}); it goes on"
    services.event_status(task, message, unassigned_by=by)
    log.info("%s#%s: %s", repository, number, message)
    return task, f"task {task.pk} already started ({task.status}): unassigning changes nothing"
