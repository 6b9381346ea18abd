"""The conversation on a task's pull request and issue: reviews, `@tacx` comments, `/tacx`
commands and failing checks become rounds (`pipeline.services.rounds`), from webhooks and the poller.

Both paths end in `review_handle`, `comment_handle` or `checks_handle`, and each records at
most one `Round` per trigger (`comment:<id>`, `review:<id>`, `ci:<sha>`, unique per task), so a
redelivery, a duplicate delivery and the poller seeing the same comment start one round.

Safety rules:
- only people with write access (as for labels) trigger; bots are ignored unless listed in
  TACX_ALLOWED_BOTS; TAC-X's own comments (its login, TACX_GITHUB_LOGIN, or its marker) are
  never read as triggers;
- the text used is the text at trigger time: the webhook's payload (an `edited` delivery is
  ignored), or, for the poller and for a review's inline comments fetched later, the text only
  when it was not edited after the trigger (the original text of an inline comment from its own
  `pull_request_review_comment` delivery when we have it);
- bounds and budgets are checked by `pipeline.services.rounds`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from pipeline import budgets, services
from pipeline.github import GitHubClient
from pipeline.models import Repository, Round, Task
from pipeline.services import rounds
from pipeline.trackers import Tracker
from pipeline.workflow import Workflow, default_workflow

from .authorization import is_bot, write_access_refusal
from .lookups import repository_for, task_for_branch, task_for_issue, task_for_pull
from .models import WebhookDelivery

log = logging.getLogger(__name__)

EVENTS = ("issue_comment", "pull_request_review", "pull_request_review_comment", "check_suite", "check_run", "workflow_run", "status")
FAILED_CONCLUSIONS = ("failure", "timed_out", "startup_failure")
COMMANDS = ("retry", "cancel", "status", "approve", "budget")
# `/tacx <command> [arguments]`: the arguments are the rest of that line (`/tacx budget +2.00`).
COMMAND_LINE = re.compile(r"^[ \t]*/tacx[ \t]+(\w+)[ \t]*([^\r\n]*)", re.M | re.I)
BUDGET_USAGE = "`/tacx budget +2.00` (US dollars) or `/tacx budget +50000 tokens` raises the limit; `/tacx budget stop` ends the task"
TACX_MARKER = "<!-- tacx:"
OWN_CHECK_PREFIX = "TAC-X /"
# Rounds only for tasks whose PR is this recent (the poller's window).
POLL_WINDOW = timedelta(days=14)


def own_login() -> str:
    return settings.TACX.get("GITHUB_LOGIN", "")


def is_own(login: str, body: str = "") -> bool:
    """TAC-X's own comment or review (never a trigger)."""
    mine = own_login()
    return bool(mine and login.casefold() == mine.casefold()) or TACX_MARKER in (body or "")


def own_check(name: str) -> bool:
    """A check run or commit status TAC-X posts itself (`TAC-X / <stage>`, coordinator.checks)."""
    return name.startswith(OWN_CHECK_PREFIX)


def actor_refusal(client: GitHubClient | Tracker, *, repository: Repository, login: str, user_type: str = "") -> str:
    """Why `login` may not start a round (as for labels: write, maintain or admin), or ""."""
    if not login:
        return "the author is unknown"
    return write_access_refusal(client, repository=repository, login=login, user_type=user_type)


def github_time(value: object) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None


# --- handling (in the coordinator: may call GitHub) -------------------------------------------


def delivery_act(client: GitHubClient, delivery: WebhookDelivery) -> tuple[Task | None, str, str]:
    """Act on a conversation delivery. Returns (task, what happened, final status)."""
    data = delivery.payload
    repository = repository_for(delivery.repository_full_name)
    if repository is None:
        return None, "ignored: the repository is no longer registered or is disabled", WebhookDelivery.Status.IGNORED
    event = data.get("event", delivery.event)
    if event == "issue_comment":
        issue = data.get("issue") or {}
        task = task_for_pull(repository, int(issue["number"])) if issue.get("is_pull") else task_for_issue(repository, int(issue["number"]))
        if task is None:
            return None, "ignored: no TAC-X task for this issue or pull request", WebhookDelivery.Status.IGNORED
        c = data["comment"]
        what = comment_handle(
            client, task=task, comment=c, reply_to=int(issue["number"]), source="webhook", frozen=True
        )
        return task, what, WebhookDelivery.Status.DONE
    if event in ("pull_request_review", "pull_request_review_comment"):
        pull = data.get("pull") or {}
        task = task_for_pull(repository, int(pull.get("number") or 0))
        if task is None:
            return None, "ignored: not a TAC-X pull request", WebhookDelivery.Status.IGNORED
        if event == "pull_request_review":
            what = review_handle(client, task=task, review=data["review"], source="webhook")
        else:
            comment = data["comment"]
            review = client.pull_request_review(full_name=repository.full_name, number=task.pr_number, review_id=int(comment["review_id"]))
            what = review_handle(client, task=task, review=review_summary(review), source="webhook")
        return task, what, WebhookDelivery.Status.DONE
    check = data.get("check") or {}
    task = task_for_branch(repository, check.get("head_branch", ""))
    if task is None and delivery.issue_number:
        task = task_for_pull(repository, delivery.issue_number)
    if task is None:
        return None, "ignored: not a TAC-X pull request's check", WebhookDelivery.Status.IGNORED
    what = checks_handle(client, task=task, sha=check.get("head_sha", ""), source="webhook")
    return task, what, WebhookDelivery.Status.DONE


def review_summary(review: dict) -> dict:
    """A review object from the REST API in the shape `payload_summary` stores."""
    user = review.get("user") or {}
    return {
        "id": review.get("id"),
        "state": review.get("state", ""),
        "body": review.get("body") or "",
        "user": user.get("login", ""),
        "user_type": user.get("type", ""),
        "submitted_at": review.get("submitted_at") or "",
        "commit_id": review.get("commit_id") or "",
    }


@dataclass
class Parsed:
    command: str = ""
    args: str = ""
    text: str = ""
    mentioned: bool = False
    notes: list[str] = field(default_factory=list)


def parse_comment(body: str, mention: str) -> Parsed:
    """A `/tacx <command>` line, or free text addressed to `mention` (case-insensitive, as a
    whole word: `@tacx` does not match `@tacxbot`)."""
    if m := COMMAND_LINE.search(body or ""):
        return Parsed(command=m.group(1).lower(), args=m.group(2).strip()[:100], mentioned=True)
    pattern = re.compile(rf"(?<![\w/]){re.escape(mention)}(?![\w-])", re.I)
    if not pattern.search(body or ""):
        return Parsed()
    return Parsed(text=pattern.sub("", body).strip(), mentioned=True)


def workflow_of(task: Task) -> Workflow:
    return Workflow.from_json(task.workflow) if task.workflow else default_workflow()


def comment_handle(
    client: GitHubClient | Tracker, *, task: Task, comment: dict, reply_to: int, source: str, frozen: bool, extra_context: dict | None = None
) -> str:
    """An issue or PR conversation comment: a command, a round, or nothing.

    `frozen`: the body is the text at trigger time (the webhook's `created` payload). The
    poller's copy is current text: when it was edited after it was posted it is not used.
    `client`: GitHub's client, or another tracker (`coordinator.tracker_flow`), whose
    `permission` decides; `extra_context` goes into the round (e.g. a GitLab thread's
    position as `inline_comments`, its discussion, what to react on).
    """
    key = f"comment:{comment['id']}"
    if Round.objects.filter(task=task, trigger_key=key).exists():
        return "duplicate: this comment was already handled"
    login, body = str(comment.get("user") or ""), str(comment.get("body") or "")
    if is_own(login, body):
        return "ignored: TAC-X's own comment"
    created = github_time(comment.get("created_at"))
    if created is not None and created < task.created_at - timedelta(seconds=5):
        return "ignored: the comment is older than the task"
    workflow = workflow_of(task)
    parsed = parse_comment(body, workflow.mention)
    if not parsed.mentioned:
        return "ignored: not addressed to TAC-X"
    if is_bot(login, str(comment.get("user_type") or "")) and login not in settings.TACX["ALLOWED_BOTS"]:
        return f"ignored: {login} is a bot"
    react = {"comment_id": comment["id"], "review_comment": False}
    context = {"reply_to": reply_to, "react": react, "comment_url": comment.get("html_url", ""), **(extra_context or {})}
    if not frozen and comment.get("updated_at") and comment.get("updated_at") != comment.get("created_at"):
        refusal = "the comment was edited after it was posted; its original text is unknown, so it is not used (post a new comment)"
    else:
        refusal = actor_refusal(client, repository=task.repository, login=login, user_type=str(comment.get("user_type") or ""))
    triggered_at = created or timezone.now()
    if parsed.command:
        if refusal:
            refusal = f"`/tacx {parsed.command}` is refused: {refusal}"
        round_, created_now = rounds.round_record(
            task=task, kind=Round.Kind.COMMAND, trigger_key=key, actor=login, source=source, text=f"/tacx {parsed.command} {parsed.args}".strip(),
            context={**context, "command": parsed.command, "args": parsed.args}, triggered_at=triggered_at, refusal=refusal,
        )
        if not created_now:
            return "duplicate: this comment was already handled"
        if round_.status == Round.Status.REFUSED:
            return f"refused: {round_.reason}"
        return command_run(round_, task=task, command=parsed.command, actor=login, args=parsed.args)
    if not parsed.text:
        refusal = refusal or f"{workflow.mention} without any request: say what to change"
    kind = Round.Kind.REPLAN if task.status == Task.Status.AWAITING_APPROVAL else Round.Kind.COMMENT
    round_, created_now = rounds.round_record(
        task=task, kind=kind, trigger_key=key, actor=login, source=source, text=parsed.text, context=context,
        triggered_at=triggered_at, refusal=refusal,
    )
    if not created_now:
        return "duplicate: this comment was already handled"
    return f"round {round_.pk} {round_.status}" + (f": {round_.reason}" if round_.reason else "")


def command_run(round_: Round, *, task: Task, command: str, actor: str, args: str = "") -> str:
    """Carry out a `/tacx` command (its author was authorised); the answer is the reply."""
    task.refresh_from_db()
    if command == "budget":
        answer, status = budget_command(task, args=args, actor=actor)
    elif command == "approve":
        if rounds.task_approve(task=task, approved_by=actor):
            answer, status = "Plan approved: building starts.", Round.Status.DONE
        else:
            answer, status = f"Nothing to approve: the task is {task.status}.", Round.Status.REFUSED
    elif command == "cancel":
        open_rounds = Round.objects.filter(task=task, status=Round.Status.QUEUED).exclude(pk=round_.pk)
        dropped = open_rounds.update(status=Round.Status.CANCELLED, reason=f"cancelled by {actor}", finished_at=timezone.now())
        if services.task_cancel(task=task, reason=f"cancelled by {actor} with /tacx cancel"):
            answer, status = "Cancelled." + (f" ({dropped} queued round(s) dropped)" if dropped else ""), Round.Status.DONE
        elif dropped:
            answer, status = f"Dropped {dropped} queued round(s).", Round.Status.DONE
        else:
            answer, status = f"Nothing to cancel: the task is {task.status}.", Round.Status.REFUSED
    elif command == "retry":
        try:
            services.task_retry(task=task)
            answer, status = "Retrying from the stage that did not succeed.", Round.Status.DONE
        except ValueError as exc:
            answer, status = f"Cannot retry: {exc}.", Round.Status.REFUSED
    elif command == "status":
        answer, status = status_text(task), Round.Status.DONE
    else:
        answer, status = f"Unknown command `/tacx {command}` (known: {', '.join(COMMANDS)}).", Round.Status.REFUSED
    rounds.round_finish_command(round_=round_, status=status, reason=answer)
    return f"/tacx {command}: {answer}"


def budget_command(task: Task, *, args: str, actor: str) -> tuple[str, str]:
    """`/tacx budget +2.00 | +50000 tokens | stop` (and `/tacx budget` alone: where it stands),
    answering the task's budget pause (services.budget_raise / budget_stop)."""
    words = args.strip()
    if not words:
        pause = services.open_pause(task)
        if pause is None:
            return f"Task {task.pk} is {task.get_status_display()}: no budget pause to answer. ({BUDGET_USAGE} while it is paused.)", Round.Status.DONE
        return f"{task.status_reason}", Round.Status.DONE
    if words.lower() in ("stop", "end"):
        try:
            pause = services.budget_stop(task=task, by=actor, source="github")
        except services.NotPaused as exc:
            return f"Nothing to stop: {exc}.", Round.Status.REFUSED
        return f"Ended at the budget pause ({pause.scope} budget). The work so far stays on the branch `{task.branch}`.", Round.Status.DONE
    try:
        usd, tokens = budgets.parse_raise(words)
        pause = services.budget_raise(task=task, by=actor, source="github", usd=usd, tokens=tokens)
    except services.NotPaused as exc:
        return f"Not raised: {exc}.", Round.Status.REFUSED
    except ValueError as exc:
        return f"Not raised: {exc}. ({BUDGET_USAGE}.)", Round.Status.REFUSED
    if usd is not None:
        limit = f"{budgets.money(usd)} (now {budgets.money(pause.limit_usd + usd)})"
    else:
        limit = f"{tokens:,} tokens (now {pause.limit_tokens + tokens:,})"
    where = f" of stage {pause.stage_name}" if pause.stage_name else ""
    return f"Raised the {pause.scope} budget{where} by {limit}: stage {pause.stage.name} goes on where it stopped.", Round.Status.DONE


def status_text(task: Task) -> str:
    stage = task.current_stage()
    parts = [f"Task {task.pk} is **{task.status.replace('_', ' ')}**"]
    if stage is not None:
        parts.append(f"stage {stage.name} is {stage.status}")
    parts.append(f"cost so far ${task.cost_usd:.4f} ({task.total_tokens:,} tokens)")
    n = task.rounds.filter(kind__in=rounds.AGENT_KINDS).exclude(status=Round.Status.REFUSED).count()
    if n:
        parts.append(f"{n} follow-up round(s)")
    return "; ".join(parts) + "."


def review_handle(client: GitHubClient, *, task: Task, review: dict, source: str) -> str:
    """A submitted review: one round with its body and every inline comment (path, line)."""
    key = f"review:{review['id']}"
    if Round.objects.filter(task=task, trigger_key=key).exists():
        return "duplicate: this review was already handled"
    login, body, state = str(review.get("user") or ""), str(review.get("body") or ""), str(review.get("state") or "").lower()
    if is_own(login, body):
        return "ignored: TAC-X's own review"
    if is_bot(login, str(review.get("user_type") or "")) and login not in settings.TACX["ALLOWED_BOTS"]:
        return f"ignored: {login} is a bot"
    if state not in ("changes_requested", "commented"):
        return f"ignored: a review that is {state}"
    submitted = github_time(review.get("submitted_at")) or timezone.now()
    repository = task.repository
    inline, ignored = [], []
    frozen = {
        int(d.payload["comment"]["id"]): d.payload["comment"]
        for d in WebhookDelivery.objects.filter(
            repository_full_name=repository.full_name, event="pull_request_review_comment", issue_number=task.pr_number
        )
        if (d.payload.get("comment") or {}).get("review_id") == review["id"]
    }
    for c in client.review_comments(full_name=repository.full_name, number=task.pr_number, review_id=int(review["id"])):
        cid = int(c["id"])
        created, updated = github_time(c.get("created_at")), github_time(c.get("updated_at"))
        author = (c.get("user") or {}).get("login", "")
        line = c.get("line") or c.get("original_line")
        if cid in frozen:
            text = frozen[cid]["body"]  # as delivered when it was created
        elif created and created > submitted:
            ignored.append(f"inline comment {cid} on {c.get('path')} was added after the review")
            continue
        elif updated and updated > submitted:
            ignored.append(f"inline comment {cid} on {c.get('path')} was edited after the review was submitted")
            continue
        else:
            text = c.get("body") or ""
        inline.append({"id": cid, "path": c.get("path", ""), "line": line, "body": text, "author": author})
    if state == "commented" and not body.strip() and not inline:
        return "ignored: a comment-only review without text"
    refusal = actor_refusal(client, repository=repository, login=login, user_type=str(review.get("user_type") or ""))
    context = {
        "reply_to": task.pr_number,
        "review_state": state,
        "inline_comments": inline,
        "ignored": ignored,
        "react": {"comment_id": inline[0]["id"], "review_comment": True} if inline else None,
    }
    round_, created_now = rounds.round_record(
        task=task, kind=Round.Kind.REVIEW, trigger_key=key, actor=login, source=source, text=body, context=context,
        head_sha=str(review.get("commit_id") or ""), triggered_at=submitted, refusal=refusal,
    )
    if not created_now:
        return "duplicate: this review was already handled"
    return f"round {round_.pk} {round_.status}" + (f": {round_.reason}" if round_.reason else "")


def checks_handle(client: GitHubClient, *, task: Task, sha: str, source: str) -> str:
    """Failing checks on the PR's current head: one CI-fix round per head commit."""
    if not sha or task.pr_number is None:
        return "ignored: no head commit or no pull request"
    key = f"ci:{sha}"
    if Round.objects.filter(task=task, trigger_key=key).exists():
        return "duplicate: a CI-fix round for this commit exists"
    full_name = task.repository.full_name
    head = str(((client.pull_request(full_name=full_name, number=task.pr_number) or {}).get("head") or {}).get("sha") or "")
    if head and head != sha:
        return f"ignored: {sha[:7]} is no longer the head of the pull request ({head[:7]})"
    if task.status in Task.ACTIVE:
        return "ignored: the task is running; its next push gets new checks"
    failing = []
    for run in client.check_runs(full_name=full_name, sha=sha):
        if run.get("status") != "completed" or run.get("conclusion") not in FAILED_CONCLUSIONS:
            continue
        if own_check(str(run.get("name") or "")):
            continue  # TAC-X's own stage checks: a failed stage is not CI to fix
        app = (run.get("app") or {}).get("slug", "")
        output = run.get("output") or {}
        tail = ""
        if app == "github-actions":
            tail = client.job_log_tail(full_name=full_name, job_id=int(run["id"]))  # a check run's id is its job's id
        failing.append(
            {
                "name": run.get("name", ""),
                "conclusion": run.get("conclusion", ""),
                "url": run.get("html_url", ""),
                "summary": "\n".join(x for x in (output.get("title"), output.get("summary"), output.get("text")) if x)[-6000:],
                "log_tail": tail,
            }
        )
    status = client.combined_status(full_name=full_name, sha=sha)
    for st in status.get("statuses") or []:
        if st.get("state") in ("failure", "error") and not own_check(str(st.get("context") or "")):
            failing.append({"name": st.get("context", "status"), "conclusion": st.get("state", ""), "url": st.get("target_url") or "", "summary": st.get("description") or "", "log_tail": ""})
    if not failing:
        return "ignored: no failing check on the head commit"
    round_, created_now = rounds.round_record(
        task=task, kind=Round.Kind.CI_FIX, trigger_key=key, actor="ci", source=source,
        context={"reply_to": task.pr_number, "checks": failing}, head_sha=sha,
    )
    if not created_now:
        return "duplicate: a CI-fix round for this commit exists"
    return f"round {round_.pk} {round_.status}" + (f": {round_.reason}" if round_.reason else "")


