"""Each stage of a task as a check on the head commit of its branch.

With the GitHub App identity every stage is a check run `TAC-X / <stage>` (queued → in_progress
→ completed with a conclusion; the summary carries tokens, cost, verdict, test result and a link
to the task page). With a token, GitHub allows no check runs: each stage is a commit status with
the same context instead. Checks start once the branch has a commit of its own (before that its
head is the default branch's commit, which must not collect a task's checks); when the head
moves, every stage is posted again on the new head, so the pull request's head always shows the
whole pipeline.

Optionally (`TACX_REQUIRE_HUMAN_APPROVAL`) a commit status `TAC-X / human approval` stays
pending on the PR head until a human other than the person who triggered the task approves
that commit: branch protection can require it.

Like the progress comment, a task needs a sync when it has a status event newer than the last
one its checks reflect. Everything is rendered from the database; GitHub is asked only when a
stage's state or the head changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import F, OuterRef, Q, Subquery, Sum
from django.utils import timezone

from pipeline import hooks
from pipeline.github import GitHubClient, GitHubError
from pipeline.lib.redaction import redact
from pipeline.models import AgentEvent, Repository, Stage, StageResult, Task
from pipeline.quoting import quoted_inline
from pipeline.workflow import Workflow

from .models import TaskChecks

log = logging.getLogger(__name__)

RECENT = timedelta(days=2)
CLAIM_SECONDS = 120
RETRY_CAP_SECONDS = 3600
APPROVAL_CONTEXT = "TAC-X / human approval"

# A finished attempt's outcome as a check run conclusion.
CONCLUSIONS = {
    StageResult.Outcome.SUCCEEDED: "success",
    StageResult.Outcome.FAILED: "failure",
    StageResult.Outcome.TIMED_OUT: "timed_out",
    StageResult.Outcome.STALLED: "timed_out",
    StageResult.Outcome.BUDGET_EXCEEDED: "failure",
    StageResult.Outcome.CANCELLED: "cancelled",
    StageResult.Outcome.WORKER_LOST: "failure",
}
# Check run state as a commit status state (statuses have no "cancelled" or "neutral").
STATUS_STATES = {
    "queued": "pending",
    "in_progress": "pending",
    "success": "success",
    "neutral": "success",
    "failure": "failure",
    "timed_out": "failure",
    "action_required": "failure",
    "cancelled": "error",
    "skipped": "success",
}


def check_name(stage_name: str) -> str:
    return f"TAC-X / {stage_name}"


def task_url(task: Task) -> str:
    return f"{settings.TACX['DASHBOARD_URL'].rstrip('/')}/tasks/{task.pk}/"


def approval_required() -> bool:
    return bool(settings.TACX.get("REQUIRE_HUMAN_APPROVAL"))


def head_commit(task: Task) -> str:
    """The branch head as TAC-X last pushed it; "" while the branch has no commit of its own."""
    sha = StageResult.objects.filter(task=task).exclude(head_commit="").order_by("-id").values_list("head_commit", flat=True).first()
    return sha if sha and sha != task.base_commit else ""


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def stage_check(task: Task, stage: Stage, workflow: Workflow | None) -> dict:
    """The check run fields that describe `stage` now (no clock: same state, same fields)."""
    results = StageResult.objects.filter(stage=stage)
    last = results.order_by("-id").first()
    if stage.status in (Stage.Status.PENDING, Stage.Status.QUEUED):
        fields: dict = {"status": "queued"}
    elif stage.status in (Stage.Status.RUNNING, Stage.Status.PAUSED):
        # Paused at a budget: still in progress for GitHub (it goes on when the budget is raised).
        fields = {"status": "in_progress", "started_at": _iso(stage.started_at)}
    else:
        if stage.status == Stage.Status.SUCCEEDED:
            conclusion = "success"
            if last is not None and last.verdict == "REQUEST_CHANGES":
                conclusion = "failure"  # the last review of the rounds still asked for changes
            if last is not None and last.tests_status not in ("", "passed"):
                conclusion = "failure"  # the tests still fail after the last round
        elif stage.status == Stage.Status.CANCELLED:
            conclusion = "cancelled"
        else:
            conclusion = CONCLUSIONS.get(last.outcome, "failure") if last is not None else "failure"
        fields = {"status": "completed", "conclusion": conclusion, "started_at": _iso(stage.started_at), "completed_at": _iso(stage.finished_at)}
    totals = results.aggregate(
        i=Sum("input_tokens"), o=Sum("output_tokens"), cr=Sum("cache_read_tokens"), cw=Sum("cache_write_tokens"), usd=Sum("cost_usd")
    )
    tokens = sum(totals[k] or 0 for k in ("i", "o", "cr", "cw"))
    usd = totals["usd"] or Decimal("0")
    state = fields.get("conclusion") or ("paused at its budget" if stage.status == Stage.Status.PAUSED else fields["status"].replace("_", " "))
    title = f"{stage.name}: {state}" + (f" — {tokens:,} tokens, ${usd:.4f}" if stage.is_agent_stage else "")
    lines = [f"**{stage.name}** — {state} after {stage.attempts} attempt(s), round {task.review_round}.", ""]
    if stage.is_agent_stage:
        lines += ["| tokens | cost (USD) |", "|---|---|", f"| {tokens:,} | {usd:.4f} |", ""]
    if last is not None and last.verdict:
        lines.append(f"Verdict: **{last.verdict}**")
    if stage.name == "building":
        tested = results.filter(success=True).exclude(tests_status="").order_by("-id").first()
        configured = workflow is not None and workflow.test_command is not None
        lines.append(f"Tests: **{hooks.tests_headline(tested, configured=configured)}**")
    if stage.error and fields.get("conclusion") not in (None, "success"):
        first = redact(stage.error).strip().splitlines()[0] if stage.error.strip() else ""
        lines.append(f"Error: {quoted_inline(first, limit=300)}")
    if stage.name == "pr_creation" and task.pr_url:
        lines.append(f"Pull request: {task.pr_url}")
    lines += ["", f"[Task {task.pk} in TAC-X]({task_url(task)})"]
    fields["output"] = {"title": title[:250], "summary": "\n".join(lines)[:60000]}
    fields["details_url"] = task_url(task)
    fields["external_id"] = f"tacx-task-{task.pk}-{stage.name}"
    return {k: v for k, v in fields.items() if v is not None}


def _sig(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def tasks_needing_sync(now):
    last_status = AgentEvent.objects.filter(task=OuterRef("pk"), kind=AgentEvent.Kind.STATUS).order_by("-id").values("id")[:1]
    stale = Q(checks__isnull=True) | Q(last_status__gt=F("checks__last_event_id"))
    if approval_required():
        due = now - timedelta(seconds=max(settings.TACX["POLL_INTERVAL"], 1.0))
        stale |= Q(checks__approval="pending") & (Q(checks__approval_checked_at__isnull=True) | Q(checks__approval_checked_at__lte=due))
    return (
        Task.objects.filter(repository__kind=Repository.Kind.GITHUB, started_at__isnull=False)
        .filter(Q(status__in=Task.ACTIVE) | Q(finished_at__gte=now - RECENT))
        .annotate(last_status=Subquery(last_status))
        .filter(stale)
        .filter(Q(checks__isnull=True) | Q(checks__retry_at__isnull=True) | Q(checks__retry_at__lte=now))
        .filter(Q(checks__isnull=True) | Q(checks__claimed_at__isnull=True) | Q(checks__claimed_at__lte=now - timedelta(seconds=CLAIM_SECONDS)))
        .select_related("repository")
        .order_by("last_status")
    )


class CheckSyncer:
    def __init__(self, client: GitHubClient):
        self.client = client

    def sync_one_check(self) -> bool:
        """Bring one task's checks up to date. True when one was looked at."""
        now = timezone.now()
        task = tasks_needing_sync(now).first()
        if task is None:
            return False
        checks, _ = TaskChecks.objects.get_or_create(task=task)
        claimed = (
            TaskChecks.objects.filter(pk=checks.pk)
            .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lte=now - timedelta(seconds=CLAIM_SECONDS)))
            .update(claimed_at=now)
        )
        if not claimed:
            return True  # another coordinator is at it
        try:
            self.sync(task, checks, now)
        except GitHubError as exc:
            delay = min(RETRY_CAP_SECONDS, max(exc.retry_after or 0, 2 ** min(checks.failures, 12)))
            TaskChecks.objects.filter(pk=checks.pk).update(
                failures=F("failures") + 1, retry_at=now + timedelta(seconds=delay), last_error=str(exc)[:2000], claimed_at=None
            )
            log.warning("task %s: checks not posted (retry in %.0f s): %s", task.pk, delay, exc)
        return True

    def sync(self, task: Task, checks: TaskChecks, now) -> None:
        full_name = task.repository.full_name
        head = head_commit(task)
        posted = dict(checks.posted or {})
        workflow = Workflow.from_json(task.workflow) if task.workflow else None
        if head:
            for stage in task.stages.filter(parent__isnull=True).order_by("position"):  # candidates report through their stage
                fields = stage_check(task, stage, workflow)
                sig = _sig(fields)
                before = posted.get(stage.name) or {}
                if before.get("sha") == head and before.get("sig") == sig:
                    continue
                posted[stage.name] = self.post_stage(full_name, head, stage.name, fields, before)
                # Saved after each post: a crash never makes a second check run for one stage.
                TaskChecks.objects.filter(pk=checks.pk).update(posted=posted, head_sha=head)
        approval = checks.approval
        approval_checked_at = checks.approval_checked_at
        if approval_required() and head and task.pr_number:
            approval_checked_at = now
            approver = self.human_approver(task, head)
            wanted = "success" if approver else "pending"
            if wanted != approval or checks.head_sha != head:
                requester = f" other than @{task.triggered_by}" if task.triggered_by else ""
                description = f"Approved by @{approver}" if approver else f"Waiting for approval by a human{requester}"
                self.client.commit_status_create(
                    full_name=full_name, sha=head, state=wanted, context=APPROVAL_CONTEXT, description=description, target_url=task_url(task)
                )
            approval = wanted
        TaskChecks.objects.filter(pk=checks.pk).update(
            last_event_id=task.last_status or 0,
            head_sha=head,
            posted=posted,
            approval=approval,
            approval_checked_at=approval_checked_at,
            synced_at=now,
            failures=0,
            last_error="",
            retry_at=None,
            claimed_at=None,
        )

    def post_stage(self, full_name: str, head: str, stage_name: str, fields: dict, before: dict) -> dict:
        sig = _sig(fields)
        if self.client.is_app:
            if before.get("sha") == head and before.get("id"):
                self.client.check_run_update(full_name=full_name, check_run_id=before["id"], fields=fields)
                return {"sha": head, "id": before["id"], "sig": sig}
            run = self.client.check_run_create(full_name=full_name, head_sha=head, name=check_name(stage_name), fields=fields)
            return {"sha": head, "id": int(run["id"]), "sig": sig}
        state = STATUS_STATES[fields.get("conclusion") or fields["status"]]
        self.client.commit_status_create(
            full_name=full_name,
            sha=head,
            state=state,
            context=check_name(stage_name),
            description=fields["output"]["title"][:140],
            target_url=fields["details_url"],
        )
        return {"sha": head, "id": None, "sig": sig}

    def human_approver(self, task: Task, head: str) -> str:
        """The login of a human (not a bot, not the task's requester) whose latest review of the
        pull request approves `head`; "" when there is none."""
        latest: dict[str, dict] = {}
        for review in self.client.pull_request_reviews(full_name=task.repository.full_name, number=task.pr_number):
            login = str((review.get("user") or {}).get("login") or "")
            if login and review.get("state") in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
                latest[login] = review
        requester = task.triggered_by.casefold()
        for login, review in latest.items():
            kind = (review.get("user") or {}).get("type")
            if review.get("state") == "APPROVED" and review.get("commit_id") == head and kind == "User" and login.casefold() != requester:
                return login
        return ""
