"""The progress comment: one comment per task on its GitHub issue, edited in place.

A task needs a sync when it has a status event (`AgentEvent` of kind status: every task and
stage change makes one) newer than the one its comment reflects. The body is rendered from the
database only (no clock, no random), so the same state gives the same text and GitHub is asked
to PATCH only when the text changes. Creating the comment is claimed by a conditional UPDATE
(two coordinators never post two), and a coordinator that died between posting and recording
the id is covered by looking for the task's marker on the issue before posting again.

The comment never triggers anything: the webhook ignores `issue_comment` events and the poller
never reads comments.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import F, OuterRef, Q, Subquery, Sum
from django.utils import timezone

from pipeline import accounting, services
from pipeline.github import GitHubClient, GitHubError
from pipeline.lib.redaction import redact
from pipeline.models import AgentEvent, Repository, StageResult, Task
from pipeline.quoting import quoted_inline

from .models import ProgressComment

log = logging.getLogger(__name__)

# Finished tasks still get their final edit for this long (e.g. after a GitHub outage).
RECENT = timedelta(days=2)
# Someone else is posting the first comment right now; after this long we assume they died.
CREATE_CLAIM_SECONDS = 60
MIN_EDIT_SECONDS = 1.0
RETRY_CAP_SECONDS = 3600

ICONS = {
    "pending": "⏳",
    "queued": "⏳",
    "waiting": "⏸️",
    "paused": "⏸️",
    "running": "🔄",
    "succeeded": "✅",
    "failed": "❌",
    "cancelled": "🚫",
    "budget_exceeded": "💸",
    "skipped": "🚫",
}


def marker(task: Task) -> str:
    return f"<!-- tacx:task:{task.pk} -->"


def short(text: str, limit: int = 300) -> str:
    line = redact(text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def progress_body(task: Task) -> str:
    """The comment text for the task as the database has it now."""
    dashboard = settings.TACX["DASHBOARD_URL"].rstrip("/")
    link = f"{dashboard}/tasks/{task.pk}/"
    status = task.status
    lines = [
        marker(task),
        f"**TAC-X** task [{task.pk}]({link}) for this issue: {ICONS.get(status, '')} **{status.replace('_', ' ')}**",
    ]
    if task.status_reason and status != Task.Status.SUCCEEDED:
        lines.append(f"Reason: {quoted_inline(short(task.status_reason))}")
    stages = list(task.stages.order_by("position"))
    if stages:
        usage = {
            row["stage_id"]: row
            for row in StageResult.objects.filter(task=task)
            .order_by()
            .values("stage_id")
            .annotate(
                i=Sum("input_tokens"), o=Sum("output_tokens"), cr=Sum("cache_read_tokens"), cw=Sum("cache_write_tokens"), usd=Sum("cost_usd")
            )
        }
        lines += ["", "| Stage | Status | Attempts | Tokens | Cost (USD) |", "|---|---|---|---|---|"]
        for stage in stages:
            row = usage.get(stage.pk) or {}
            tokens = sum(row.get(k) or 0 for k in ("i", "o", "cr", "cw"))
            usd = row.get("usd") or Decimal(0)
            state = stage.status
            lines.append(f"| {stage.name} | {ICONS.get(state, '')} {state} | {stage.attempts} | {tokens:,} | {usd:.4f} |")
    lines += ["", f"**Tokens:** {task.total_tokens:,} · **Cost:** ${task.cost_usd:.4f}"]
    if task.review_round > 1:
        lines[-1] += f" · **Review round:** {task.review_round}"
    shown = [r for r in task.rounds.order_by("id") if r.kind != "command"]
    if shown:
        lines += ["", "| Round | Started by | Status | Cost (USD) |", "|---|---|---|---|"]
        for i, r in enumerate(shown, 1):
            state = r.status + (f": {quoted_inline(short(r.reason, 120), table=True)}" if r.reason and r.status in ("refused", "failed") else "")
            lines.append(f"| {i} | {short(r.started_by(), 120).replace('|', '/')} | {ICONS.get(r.status, '')} {state} | {r.cost_usd:.4f} |")
    if budget_table := accounting.budget_markdown(task):
        lines += ["", *budget_table]
    if task.pr_url:
        lines += ["", f"Pull request: {task.pr_url}"]
    lines += ["", f"[Open the task in the TAC-X dashboard]({link})"]
    return "\n".join(lines)


def tasks_needing_sync(now):
    last_status = AgentEvent.objects.filter(task=OuterRef("pk"), kind=AgentEvent.Kind.STATUS).order_by("-id").values("id")[:1]
    return (
        Task.objects.filter(repository__kind=Repository.Kind.GITHUB, repository__tracker_kind__in=["", Repository.Kind.GITHUB])
        .exclude(status=Task.Status.SKIPPED)
        .filter(Q(status__in=Task.ACTIVE) | Q(finished_at__gte=now - RECENT))
        .annotate(last_status=Subquery(last_status))
        .filter(Q(progress_comment__isnull=True) | Q(last_status__gt=F("progress_comment__last_event_id")))
        .filter(Q(progress_comment__isnull=True) | Q(progress_comment__retry_at__isnull=True) | Q(progress_comment__retry_at__lte=now))
        .select_related("repository")
        .order_by("last_status")
    )


class CommentSyncer:
    def __init__(self, client: GitHubClient, *, min_edit_seconds: float = MIN_EDIT_SECONDS):
        self.client = client
        self.min_edit_seconds = min_edit_seconds

    def sync_one_comment(self) -> bool:
        """Bring one task's progress comment up to date. True when one was looked at."""
        now = timezone.now()
        task = tasks_needing_sync(now).first()
        if task is None:
            return False
        progress, _ = ProgressComment.objects.get_or_create(task=task)
        try:
            self.sync(task, progress, now)
        except GitHubError as exc:
            delay = min(RETRY_CAP_SECONDS, max(exc.retry_after or 0, 2 ** min(progress.failures, 12)))
            ProgressComment.objects.filter(pk=progress.pk).update(
                failures=F("failures") + 1, retry_at=now + timedelta(seconds=delay), last_error=str(exc)[:2000]
            )
            log.warning("task %s: progress comment not written (retry in %.0f s): %s", task.pk, delay, exc)
        return True

    def sync(self, task: Task, progress: ProgressComment, now) -> None:
        body = progress_body(task)
        done = {"last_event_id": task.last_status or 0, "synced_at": now, "failures": 0, "last_error": "", "retry_at": None}
        if progress.comment_id and body == progress.body:
            ProgressComment.objects.filter(pk=progress.pk).update(**done)
            return
        full_name = task.repository.full_name
        comment_id = progress.comment_id
        if comment_id is None:
            comment_id = self.create(task, progress, body, now)
            if comment_id is None:
                # Another coordinator is posting it: look again in a few seconds, not at once.
                ProgressComment.objects.filter(pk=progress.pk).update(retry_at=now + timedelta(seconds=5))
                return
        else:
            try:
                self.client.issue_comment_update(full_name=full_name, comment_id=comment_id, body=body)
            except GitHubError as exc:
                if exc.status != 404:
                    raise
                # Deleted on GitHub: post it again on the next sync rather than lose progress.
                ProgressComment.objects.filter(pk=progress.pk).update(comment_id=None, create_attempted_at=None, body="")
                return
        ProgressComment.objects.filter(pk=progress.pk).update(
            comment_id=comment_id,
            body=body,
            writes=F("writes") + 1,
            **{**done, "retry_at": now + timedelta(seconds=self.min_edit_seconds) if self.min_edit_seconds else None},
        )

    def create(self, task: Task, progress: ProgressComment, body: str, now) -> int | None:
        """Post the comment once; returns its id (None when another coordinator is at it)."""
        full_name, number = task.repository.full_name, task.issue_number
        attempted = progress.create_attempted_at
        if attempted is not None:
            if attempted > now - timedelta(seconds=CREATE_CLAIM_SECONDS):
                return None
            # An earlier try may have posted it and died before recording the id.
            for comment in self.client.issue_comments(full_name=full_name, number=number):
                if marker(task) in str(comment.get("body") or ""):
                    comment_id = int(comment["id"])
                    self.client.issue_comment_update(full_name=full_name, comment_id=comment_id, body=body)
                    services.task_progress_comment_set(task=task, comment_id=comment_id)
                    return comment_id
        claimed = ProgressComment.objects.filter(pk=progress.pk, comment_id__isnull=True, create_attempted_at=attempted).update(
            create_attempted_at=now
        )
        if not claimed:
            return None
        comment = self.client.issue_comment_create(full_name=full_name, number=number, body=body)
        comment_id = int(comment["id"])
        services.task_progress_comment_set(task=task, comment_id=comment_id)
        return comment_id
