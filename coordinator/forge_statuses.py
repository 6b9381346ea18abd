"""Each stage of a task as a commit status on forges without check runs (GitLab): the degrade
of `coordinator.checks`, documented in the README ("GitLab").

A status named `TAC-X / <stage>` on the branch head: pending (queued), running, success, failed
or canceled, its description the stage's one-line summary (tokens, cost) and its target the task
page. The same bookkeeping as check runs (`TaskChecks`: posted only when a stage's state or the
head changes, claimed so two coordinators never post twice, retried with back-off).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from pipeline.forges import forge_named
from pipeline.models import AgentEvent, Repository, Task
from pipeline.trackers import TrackerError
from pipeline.workflow import Workflow

from .checks import CLAIM_SECONDS, RECENT, RETRY_CAP_SECONDS, _sig, check_name, head_commit, stage_check
from .models import TaskChecks

log = logging.getLogger(__name__)

KINDS = (Repository.Kind.GITLAB,)


def configured_kinds() -> list[str]:
    """The forge kinds here with credentials: none means no query at all (an idle coordinator)."""
    return [kind for kind in KINDS if forge_named(kind).configured()]


# A check run's status or conclusion (stage_check) as a GitLab commit status state.
GITLAB_STATES = {
    "queued": "pending",
    "in_progress": "running",
    "success": "success",
    "neutral": "success",
    "skipped": "success",
    "cancelled": "canceled",
}


def tasks_needing_sync(now, kinds: list[str]):
    last_status = AgentEvent.objects.filter(task=OuterRef("pk"), kind=AgentEvent.Kind.STATUS).order_by("-id").values("id")[:1]
    return (
        Task.objects.filter(repository__kind__in=kinds, started_at__isnull=False)
        .filter(Q(status__in=Task.ACTIVE) | Q(finished_at__gte=now - RECENT))
        .annotate(last_status=Subquery(last_status))
        .filter(Q(checks__isnull=True) | Q(last_status__gt=F("checks__last_event_id")))
        .filter(Q(checks__isnull=True) | Q(checks__retry_at__isnull=True) | Q(checks__retry_at__lte=now))
        .filter(
            Q(checks__isnull=True)
            | Q(checks__claimed_at__isnull=True)
            | Q(checks__claimed_at__lte=now - timedelta(seconds=CLAIM_SECONDS))
        )
        .select_related("repository")
        .order_by("last_status")
    )


def sync_one_status() -> bool:
    """Bring one task's stage statuses up to date. True when one was looked at."""
    kinds = configured_kinds()
    if not kinds:
        return False
    now = timezone.now()
    task = tasks_needing_sync(now, kinds).first()
    if task is None or not forge_named(task.repository.kind).configured():
        return False
    checks, _ = TaskChecks.objects.get_or_create(task=task)
    stale = Q(claimed_at__isnull=True) | Q(claimed_at__lte=now - timedelta(seconds=CLAIM_SECONDS))
    if not TaskChecks.objects.filter(pk=checks.pk).filter(stale).update(claimed_at=now):
        return True
    try:
        sync(task, checks, now)
    except TrackerError as exc:
        delay = min(RETRY_CAP_SECONDS, max(exc.retry_after or 0, 2 ** min(checks.failures, 12)))
        TaskChecks.objects.filter(pk=checks.pk).update(
            failures=F("failures") + 1, retry_at=now + timedelta(seconds=delay), last_error=str(exc)[:2000], claimed_at=None
        )
        log.warning("task %s: commit statuses not posted (retry in %.0f s): %s", task.pk, delay, exc)
    return True


def sync(task: Task, checks: TaskChecks, now) -> None:
    forge = forge_named(task.repository.kind)
    head = head_commit(task)
    posted = dict(checks.posted or {})
    workflow = Workflow.from_json(task.workflow) if task.workflow else None
    if head:
        for stage in task.stages.order_by("position"):
            fields = stage_check(task, stage, workflow)
            sig = _sig(fields)
            before = posted.get(stage.name) or {}
            if before.get("sha") == head and before.get("sig") == sig:
                continue
            state = GITLAB_STATES.get(fields.get("conclusion") or fields["status"], "failed")
            forge.commit_status_set(
                task.repository,
                sha=head,
                state=state,
                context=check_name(stage.name),
                description=fields["output"]["title"],
                target_url=fields["details_url"],
            )
            posted[stage.name] = {"sha": head, "id": None, "sig": sig}
            TaskChecks.objects.filter(pk=checks.pk).update(posted=posted, head_sha=head)
    TaskChecks.objects.filter(pk=checks.pk).update(
        last_event_id=task.last_status or 0,
        head_sha=head,
        posted=posted,
        synced_at=now,
        failures=0,
        last_error="",
        retry_at=None,
        claimed_at=None,
    )
