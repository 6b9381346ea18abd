"""Rounds: the conversation on a task's pull request (and plan approval).

A *round* (`models.Round`) is started by a review, an `@tacx` comment, a failing check or plan
feedback, and re-runs building → reviewing → pr_creation on the task's branch (planning, for
plan feedback), so the same pull request gets the new commits. The coordinator records rounds
(`round_record`) from webhooks and the poller, starts them one at a time per task
(`round_start_next`) and closes them when the task stops running (`round_finish`); everything
that talks to GitHub (👀, replies) stays in the coordinator.

Guarantees kept here:
- a trigger is one round whatever the number of deliveries: `(task, trigger_key)` is unique;
- one running round per task: a partial unique constraint, and starting is a conditional UPDATE;
- bounds: `max_followup_rounds` rounds per PR, `max_ci_fix_attempts` CI-fix rounds in a row
  (one per head commit), checked when the round is recorded; budgets apply to the stages;
- the trigger's text is frozen (sanitised) in the row when the trigger is seen; the prompt is
  built from that row only.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from .. import git, repos, worktree_reads
from ..lib.untrusted import sanitize_issue_text
from ..models import Round, Stage, StageResult, Task
from ..sessions import session_tokens
from ..workflow import Workflow
from .candidates import candidates_approve
from .events import event_status
from .progress import stage_queue

log = logging.getLogger(__name__)

# Kinds that run agents and count against `max_followup_rounds`.
AGENT_KINDS = (Round.Kind.REVIEW, Round.Kind.COMMENT, Round.Kind.CI_FIX, Round.Kind.REPLAN)
COUNTED = (Round.Status.QUEUED, Round.Status.RUNNING, Round.Status.SUCCEEDED, Round.Status.FAILED)
# A task in one of these states may take a round (it has run, and is not running now).
RESTARTABLE = (Task.Status.SUCCEEDED, Task.Status.FAILED, Task.Status.BUDGET_EXCEEDED)


# --- recording ---------------------------------------------------------------------------------


def round_record(
    *,
    task: Task,
    kind: str,
    trigger_key: str,
    actor: str,
    source: str,
    text: str = "",
    context: dict | None = None,
    head_sha: str = "",
    triggered_at=None,
    refusal: str = "",
) -> tuple[Round, bool]:
    """Record a trigger as a round (queued, or refused with `refusal` or a limit's reason).

    Returns (round, created); the same trigger seen again returns the existing round and
    changes nothing. The text is sanitised here, once: the prompt uses exactly this.
    """
    existing = Round.objects.filter(task=task, trigger_key=trigger_key).first()
    if existing is not None:
        return existing, False
    workflow = Workflow.from_json(task.workflow) if task.workflow else None
    status, reason = Round.Status.QUEUED, refusal
    if not reason and kind in AGENT_KINDS and workflow is not None:
        reason = limit_refusal(task=task, workflow=workflow, kind=kind)
    if reason:
        status = Round.Status.REFUSED
    elif kind == Round.Kind.COMMAND:
        status = Round.Status.QUEUED
    fields = dict(
        task=task,
        kind=kind,
        trigger_key=trigger_key[:200],
        actor=actor[:100],
        source=source,
        text=sanitize_issue_text(text)[:20000],
        context=context or {},
        head_sha=head_sha[:64],
        triggered_at=triggered_at or timezone.now(),
        status=status,
        reason=reason[:4000],
        finished_at=timezone.now() if status == Round.Status.REFUSED else None,
    )
    try:
        with transaction.atomic():
            round_ = Round.objects.create(**fields)
            what = f"{kind.replace('_', '-')} round {round_.pk} ({round_.started_by()})"
            event_status(task, f"{what} refused: {reason}" if reason else f"{what} queued", round=round_.pk)
    except IntegrityError:
        return Round.objects.get(task=task, trigger_key=trigger_key[:200]), False
    if status == Round.Status.REFUSED and kind == Round.Kind.CI_FIX and "max_ci_fix_attempts" in reason:
        # The task says so (its page, the API and the progress comment show the reason).
        Task.objects.filter(pk=task.pk).exclude(status__in=Task.ACTIVE).update(status_reason=reason[:4000])
    return round_, True


def limit_refusal(*, task: Task, workflow: Workflow, kind: str) -> str:
    """Why another round of `kind` may not run on this task, or ""."""
    rounds = Round.objects.filter(task=task, kind__in=[Round.Kind.REVIEW, Round.Kind.COMMENT, Round.Kind.CI_FIX], status__in=COUNTED)
    if kind != Round.Kind.REPLAN and rounds.count() >= workflow.max_followup_rounds:
        return f"this pull request already had {workflow.max_followup_rounds} follow-up round(s) (max_followup_rounds)"
    if kind == Round.Kind.CI_FIX:
        # CI-fix rounds since the last round a person started: a loop that keeps failing stops.
        last_human = rounds.exclude(kind=Round.Kind.CI_FIX).order_by("-id").values_list("id", flat=True).first() or 0
        in_a_row = rounds.filter(kind=Round.Kind.CI_FIX, id__gt=last_human).count()
        if in_a_row >= workflow.max_ci_fix_attempts:
            return f"checks still fail after {in_a_row} CI-fix attempt(s) (max_ci_fix_attempts {workflow.max_ci_fix_attempts}); a person needs to look"
    return ""


def round_finish_command(*, round_: Round, status: str, reason: str) -> None:
    """A command was carried out (or refused): close its row with what happened."""
    Round.objects.filter(pk=round_.pk, status=Round.Status.QUEUED).update(status=status, reason=reason[:4000], finished_at=timezone.now())


def round_request(*, task: Task, actor: str, text: str, token: str, source: str = "dashboard") -> tuple[Round, bool]:
    """A person's message to a task from the dashboard (or another TAC-X front end): the round an
    `@tacx <text>` comment on its pull request would record, with the same rules: plan feedback
    while the plan awaits approval, a comment round otherwise; the follow-up limit; the text
    frozen (sanitised) here. Whoever calls it has checked the person's permission (the forge's
    write access has no equivalent for a local repository).

    `token` names this message (the form's one-time value): the same message sent twice is one
    round (returns (round, False) the second time). The reply goes to the task's pull request
    when it has one (the coordinator posts it, as for a comment there); a task without one keeps
    the round on its page only.
    """
    text = (text or "").strip()
    if not text:
        raise ValueError("the message is empty: say what to change")
    if task.status in (Task.Status.CANCELLED, Task.Status.SKIPPED):
        raise ValueError(f"the task is {task.status}: start a new task (or retry it) instead")
    if not task.branch and task.status != Task.Status.AWAITING_APPROVAL:
        raise ValueError("the task has no branch yet: wait until it has run, or retry it")
    kind = Round.Kind.REPLAN if task.status == Task.Status.AWAITING_APPROVAL else Round.Kind.COMMENT
    context: dict = {"message": True}
    if task.repository.kind == task.repository.Kind.GITHUB and task.pr_number:
        context["reply_to"] = task.pr_number
    return round_record(task=task, kind=kind, trigger_key=f"{source}:{token}"[:200], actor=actor, source=source, text=text, context=context)


# --- starting and finishing --------------------------------------------------------------------


def startable():
    """Queued agent rounds whose task has no running round, oldest first (a round whose task
    is busy stays queued: one active round per task)."""
    return (
        Round.objects.filter(status=Round.Status.QUEUED, kind__in=AGENT_KINDS)
        .exclude(task__rounds__status=Round.Status.RUNNING)
        .exclude(task__status=Task.Status.RUNNING)
        .select_related("task__repository")
        .order_by("created_at", "id")
    )


def finishable():
    """Running rounds whose task is no longer running (a task paused at a budget is still in
    its round: it goes on when the budget is raised)."""
    return Round.objects.filter(status=Round.Status.RUNNING).exclude(task__status__in=[Task.Status.RUNNING, Task.Status.PAUSED]).order_by("id")


def round_start(*, round_: Round, enqueue: bool = True) -> str:
    """Start a queued round: the task runs again from building (planning for plan feedback).

    Returns "started", "wait" (the task is busy: it stays queued) or "refused: <why>".
    Conditional on the round being queued and the task being idle, inside one transaction,
    so two coordinators cannot start it twice.
    """
    task = round_.task
    task.refresh_from_db()
    replan = round_.kind == Round.Kind.REPLAN
    allowed = [Task.Status.AWAITING_APPROVAL] if replan else list(RESTARTABLE)
    if task.status not in allowed:
        if task.status in Task.ACTIVE:
            return "wait"  # its pipeline (or another round) runs: one active round per task
        return refuse(round_, f"the task is {task.status}")
    if not replan and not task.pr_number and task.status != Task.Status.SUCCEEDED:
        again = "Retry on its page" if task.repository.kind == task.repository.Kind.LOCAL else "`/tacx retry`"
        return refuse(round_, f"the task {task.status.replace('_', ' ')} before opening its pull request; {again} runs it again")
    stage_name = "planning" if replan else "building"
    first = task.stages.filter(name=stage_name, parent__isnull=True).first()
    if first is None or not task.branch:
        return refuse(round_, f"the task has no {stage_name} stage or branch to continue")
    try:
        with transaction.atomic():
            if not Round.objects.filter(pk=round_.pk, status=Round.Status.QUEUED).update(
                status=Round.Status.RUNNING, started_at=timezone.now(), first_review_round=task.review_round + 1
            ):
                return "wait"
            if not Task.objects.filter(pk=task.pk, status=task.status).update(
                # A cleaned-up worktree is created again from the pushed branch by the stage.
                status=Task.Status.RUNNING, status_reason="", finished_at=None, review_round=F("review_round") + 1, worktree_removed_at=None
            ):
                raise _Lost
            task.refresh_from_db()
            task.stages.filter(position__gt=first.position).update(status=Stage.Status.PENDING, error="")
            Stage.objects.filter(pk=first.pk).update(failed_attempts=0, error="")
            round_.refresh_from_db()
            event_status(task, f"round {round_.pk} started ({round_.started_by()}): {stage_name} again", round=round_.pk)
            stage_queue(stage=first, enqueue=enqueue, force=True)
    except _Lost:
        return "wait"
    except IntegrityError:
        # Another task of the issue is active (a new label), or another round runs.
        return "wait"
    return "started"


class _Lost(Exception):
    pass


def refuse(round_: Round, reason: str) -> str:
    Round.objects.filter(pk=round_.pk, status=Round.Status.QUEUED).update(status=Round.Status.REFUSED, reason=reason[:4000], finished_at=timezone.now())
    event_status(round_.task, f"round {round_.pk} refused: {reason}", round=round_.pk)
    return f"refused: {reason}"


def round_finish(*, round_: Round) -> bool:
    """Close a running round whose task stopped running; totals from its attempts."""
    task = Task.objects.get(pk=round_.task_id)
    if task.status in (Task.Status.RUNNING, Task.Status.PAUSED):
        return False
    ok = task.status in (Task.Status.SUCCEEDED, Task.Status.AWAITING_APPROVAL)
    status = Round.Status.SUCCEEDED if ok else Round.Status.CANCELLED if task.status == Task.Status.CANCELLED else Round.Status.FAILED
    results = StageResult.objects.filter(followup=round_)
    sums = results.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"), usd=Sum("cost_usd"))
    resumed = results.exclude(resumed_session_id="").order_by("id").first()
    saved = 0
    if resumed is not None:
        saved = session_tokens(resumed.resumed_session_id, task=task, before=round_)
    context = {**(round_.context or {}), "changes": round_changes(round_, task)}
    done = Round.objects.filter(pk=round_.pk, status=Round.Status.RUNNING).update(
        context=context,
        status=status,
        finished_at=timezone.now(),
        reason="" if ok else task.status_reason[:4000],
        input_tokens=sums["i"] or 0,
        output_tokens=sums["o"] or 0,
        cost_usd=sums["usd"] or Decimal("0"),
        resumed_session_id=resumed.resumed_session_id if resumed else "",
        tokens_saved=saved,
    )
    if done:
        event_status(task, f"round {round_.pk} {status}", round=round_.pk)
    return bool(done)


def round_changes(round_: Round, task: Task) -> dict:
    """The commits the round added to the branch and their diff stat (for the reply)."""
    results = StageResult.objects.filter(followup=round_).exclude(base_commit="").order_by("id")
    first, last = results.first(), results.exclude(head_commit="").order_by("-id").first()
    if first is None or last is None or first.base_commit == last.head_commit:
        return {"commits": [], "stat": ""}
    span = f"{first.base_commit}..{last.head_commit}"
    try:
        # The mirror holds every commit TAC-X pushed (never the agent's own git directory).
        where = repos.source_dir(task.repository)
        commits = git.run(["log", "--format=%h %s", span], cwd=where).splitlines()
        stat = git.run(["diff", "--shortstat", span], cwd=where).strip()
    except git.GitError as exc:
        log.warning("round %s: cannot list its commits: %s", round_.pk, exc)
        return {"commits": [], "stat": "", "head": last.head_commit}
    # Commit subjects are the agent's text: one line each, capped (pipeline.worktree_reads).
    return {"commits": [worktree_reads.commit_subject(c) for c in commits[:20]], "stat": stat, "head": last.head_commit}


# --- plan approval -----------------------------------------------------------------------------


def task_approve(*, task: Task, approved_by: str, enqueue: bool = True) -> bool:
    """awaiting_approval -> running, queueing the stage after planning. False when the task
    was not awaiting approval (a second approve does nothing). A task waiting at
    `approval: candidates` has its choice approved (services.candidates)."""
    if candidates_approve(task=task, approved_by=approved_by, enqueue=enqueue):
        return True
    with transaction.atomic():
        changed = Task.objects.filter(pk=task.pk, status=Task.Status.AWAITING_APPROVAL).update(status=Task.Status.RUNNING, status_reason="")
        if not changed:
            return False
        task.refresh_from_db()
        event_status(task, f"plan approved by {approved_by}")
        planning = task.stages.filter(name="planning", parent__isnull=True).first()
        position = planning.position if planning else -1
        nxt = task.stages.filter(position__gt=position).order_by("position").first()
        if nxt is None:
            Task.objects.filter(pk=task.pk).update(status=Task.Status.SUCCEEDED, finished_at=timezone.now())
        else:
            stage_queue(stage=nxt, enqueue=enqueue, force=True)
    return True
