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
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from pipeline import services
from pipeline.github import GitHubClient, GitHubError
from pipeline.models import Repository, Round, Task
from pipeline.services import rounds
from pipeline.workflow import Workflow, default_workflow

from .authorization import is_bot, write_access_refusal
from .lookups import repository_for, task_for_branch, task_for_issue, task_for_pull
from .models import WebhookDelivery

log = logging.getLogger(__name__)

EVENTS = ("issue_comment", "pull_request_review", "pull_request_review_comment", "check_suite", "check_run", "workflow_run", "status")
FAILED_CONCLUSIONS = ("failure", "timed_out", "startup_failure")
COMMANDS = ("retry", "cancel", "status", "approve")
COMMAND_LINE = re.compile(r"^\s*/tacx\s+(\w+)", re.M | re.I)
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


def actor_refusal(client: GitHubClient, *, repository: Repository, login: str, user_type: str = "") -> str:
    """Why `login` may not start a round (as for labels: write, maintain or admin), or ""."""
    if not login:
        return "the author is unknown"
    return write_access_refusal(client, repository=repository, login=login, user_type=user_type)


def github_time(value: object) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None


# --- what the webhook keeps (in the request: no GitHub calls) ---------------------------------


def relevance(event: str, payload: dict) -> tuple[Repository | None, int | None, str]:
    """(repository, issue or PR number, "") for a delivery that may start a round, else
    (None, None, why it is ignored)."""
    action = str(payload.get("action", ""))
    full_name = str((payload.get("repository") or {}).get("full_name", ""))
    sender = payload.get("sender") or {}
    if event == "issue_comment":
        if action != "created":
            return None, None, f"ignored: issue_comment.{action} (the text at trigger time counts; edits never trigger)"
        comment = payload.get("comment") or {}
        body = str(comment.get("body") or "")
        if "/tacx" not in body.lower() and "@" not in body:
            return None, None, "ignored: no mention and no /tacx command"
        number = (payload.get("issue") or {}).get("number")
    elif event == "pull_request_review":
        if action != "submitted":
            return None, None, f"ignored: pull_request_review.{action}"
        state = str((payload.get("review") or {}).get("state", "")).lower()
        if state not in ("changes_requested", "commented"):
            return None, None, f"ignored: a review that is {state or 'empty'}"
        number = (payload.get("pull_request") or {}).get("number")
    elif event == "pull_request_review_comment":
        if action != "created":
            return None, None, f"ignored: pull_request_review_comment.{action} (edits never trigger)"
        number = (payload.get("pull_request") or {}).get("number")
    elif event in ("check_suite", "check_run", "workflow_run"):
        item = payload.get(event) or {}
        if action != "completed" or item.get("conclusion") not in FAILED_CONCLUSIONS:
            return None, None, f"ignored: {event}.{action} {item.get('conclusion') or ''}".rstrip()
        if event == "check_run" and own_check(str(item.get("name") or "")):
            return None, None, "ignored: TAC-X's own activity"
        pulls = item.get("pull_requests") or (item.get("check_suite") or {}).get("pull_requests") or []
        number = pulls[0].get("number") if pulls and isinstance(pulls[0], dict) else None
    elif event == "status":
        if payload.get("state") not in ("failure", "error"):
            return None, None, f"ignored: status {payload.get('state')}"
        if own_check(str(payload.get("context") or "")):
            return None, None, "ignored: TAC-X's own activity"
        number = None
    else:
        return None, None, f"ignored: {event} events start nothing"
    if is_own(str(sender.get("login", "")), str(((payload.get("comment") or payload.get("review") or {}).get("body")) or "")):
        return None, None, "ignored: TAC-X's own activity"
    repository = repository_for(full_name)
    if repository is None:
        return None, None, f"ignored: {full_name or 'the repository'} is not registered (or disabled)"
    return repository, int(number) if isinstance(number, int) else None, ""


def payload_summary(event: str, payload: dict) -> dict:
    """What handling needs later — including the trigger's text as delivered (frozen)."""
    sender = payload.get("sender") or {}
    summary: dict = {
        "event": event,
        "action": payload.get("action", ""),
        "repository": (payload.get("repository") or {}).get("full_name", ""),
        "sender": {"login": sender.get("login", ""), "type": sender.get("type", "")},
    }
    if event == "issue_comment":
        issue, comment = payload.get("issue") or {}, payload.get("comment") or {}
        summary["issue"] = {"number": issue.get("number"), "is_pull": "pull_request" in issue, "state": issue.get("state", "")}
        summary["comment"] = _comment(comment)
    elif event in ("pull_request_review", "pull_request_review_comment"):
        pull = payload.get("pull_request") or {}
        summary["pull"] = {"number": pull.get("number"), "head_sha": (pull.get("head") or {}).get("sha", ""), "head_ref": (pull.get("head") or {}).get("ref", "")}
        if event == "pull_request_review":
            review = payload.get("review") or {}
            summary["review"] = {
                "id": review.get("id"),
                "state": review.get("state", ""),
                "body": review.get("body") or "",
                "user": (review.get("user") or {}).get("login", ""),
                "user_type": (review.get("user") or {}).get("type", ""),
                "submitted_at": review.get("submitted_at") or "",
                "commit_id": review.get("commit_id") or "",
            }
        else:
            comment = payload.get("comment") or {}
            summary["comment"] = {**_comment(comment), "review_id": comment.get("pull_request_review_id"), "path": comment.get("path", ""), "line": comment.get("line") or comment.get("original_line")}
    elif event in ("check_suite", "check_run", "workflow_run"):
        item = payload.get(event) or {}
        suite = item.get("check_suite") or {}
        summary["check"] = {
            "name": item.get("name") or (item.get("app") or {}).get("name", event),
            "head_sha": item.get("head_sha") or suite.get("head_sha", ""),
            "head_branch": item.get("head_branch") or suite.get("head_branch", ""),
            "conclusion": item.get("conclusion", ""),
        }
    elif event == "status":
        summary["check"] = {
            "name": payload.get("context", "status"),
            "head_sha": payload.get("sha", ""),
            "head_branch": ((payload.get("branches") or [{}])[0] or {}).get("name", ""),
            "conclusion": payload.get("state", ""),
        }
    return summary


def _comment(comment: dict) -> dict:
    user = comment.get("user") or {}
    return {
        "id": comment.get("id"),
        "body": comment.get("body") or "",
        "user": user.get("login", ""),
        "user_type": user.get("type", ""),
        "created_at": comment.get("created_at") or "",
        "updated_at": comment.get("updated_at") or "",
        "html_url": comment.get("html_url") or "",
    }


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
    text: str = ""
    mentioned: bool = False
    notes: list[str] = field(default_factory=list)


def parse_comment(body: str, mention: str) -> Parsed:
    """A `/tacx <command>` line, or free text addressed to `mention` (case-insensitive, as a
    whole word: `@tacx` does not match `@tacxbot`)."""
    if m := COMMAND_LINE.search(body or ""):
        return Parsed(command=m.group(1).lower(), mentioned=True)
    pattern = re.compile(rf"(?<![\w/]){re.escape(mention)}(?![\w-])", re.I)
    if not pattern.search(body or ""):
        return Parsed()
    return Parsed(text=pattern.sub("", body).strip(), mentioned=True)


def workflow_of(task: Task) -> Workflow:
    return Workflow.from_json(task.workflow) if task.workflow else default_workflow()


def comment_handle(client: GitHubClient, *, task: Task, comment: dict, reply_to: int, source: str, frozen: bool) -> str:
    """An issue or PR conversation comment: a command, a round, or nothing.

    `frozen`: the body is the text at trigger time (the webhook's `created` payload). The
    poller's copy is current text: when it was edited after it was posted it is not used.
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
    context = {"reply_to": reply_to, "react": react, "comment_url": comment.get("html_url", "")}
    if not frozen and comment.get("updated_at") and comment.get("updated_at") != comment.get("created_at"):
        refusal = "the comment was edited after it was posted; its original text is unknown, so it is not used (post a new comment)"
    else:
        refusal = actor_refusal(client, repository=task.repository, login=login, user_type=str(comment.get("user_type") or ""))
    triggered_at = created or timezone.now()
    if parsed.command:
        round_, created_now = rounds.round_record(
            task=task, kind=Round.Kind.COMMAND, trigger_key=key, actor=login, source=source, text=f"/tacx {parsed.command}",
            context={**context, "command": parsed.command}, triggered_at=triggered_at, refusal=refusal,
        )
        if not created_now:
            return "duplicate: this comment was already handled"
        if round_.status == Round.Status.REFUSED:
            return f"refused: {round_.reason}"
        return command_run(round_, task=task, command=parsed.command, actor=login)
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


def command_run(round_: Round, *, task: Task, command: str, actor: str) -> str:
    """Carry out a `/tacx` command (its author was authorised); the answer is the reply."""
    task.refresh_from_db()
    if command == "approve":
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


# --- the poller (repositories without webhooks, missed deliveries) ----------------------------


def tasks_to_poll(now):
    return (
        Task.objects.filter(repository__kind=Repository.Kind.GITHUB, repository__enabled=True)
        .filter(Q(pr_number__isnull=False) | Q(status=Task.Status.AWAITING_APPROVAL))
        .filter(Q(status__in=Task.ACTIVE) | Q(finished_at__gte=now - POLL_WINDOW))
        .select_related("repository")
        .order_by("id")
    )


def poll_task(client: GitHubClient, task: Task) -> list[str]:
    """Look at one task's issue and PR for comments, reviews and failing checks the webhook
    did not bring (or that arrived while no webhook was configured)."""
    full_name = task.repository.full_name
    since = task.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    outcomes = []
    threads = [task.issue_number] + ([task.pr_number] if task.pr_number and task.pr_number != task.issue_number else [])
    for number in threads:
        for c in client.issue_comments_since(full_name=full_name, number=number, since=since):
            if Round.objects.filter(task=task, trigger_key=f"comment:{c['id']}").exists():
                continue
            outcomes.append(comment_handle(client, task=task, comment=_comment(c), reply_to=number, source="poll", frozen=False))
    if task.pr_number:
        for review in client.pull_request_reviews(full_name=full_name, number=task.pr_number):
            summary = review_summary(review)
            submitted = github_time(summary["submitted_at"])
            if submitted is None or submitted < task.created_at or Round.objects.filter(task=task, trigger_key=f"review:{summary['id']}").exists():
                continue
            if str(summary["state"]).lower() not in ("changes_requested", "commented"):
                continue
            outcomes.append(review_handle(client, task=task, review=summary, source="poll"))
        if task.status not in Task.ACTIVE:
            pull = client.pull_request(full_name=full_name, number=task.pr_number)
            sha = str((pull.get("head") or {}).get("sha") or "")
            if sha and not Round.objects.filter(task=task, trigger_key=f"ci:{sha}").exists():
                outcomes.append(checks_handle(client, task=task, sha=sha, source="poll"))
    return outcomes


class ConversationPoller:
    """One task per call, each task at most every `interval` seconds."""

    def __init__(self, client: GitHubClient, *, interval: float | None = None):
        self.client = client
        self._interval = interval
        self._last: dict[int, float] = {}
        self._queue: list[int] = []

    @property
    def interval(self) -> float:
        return self._interval if self._interval is not None else settings.TACX["CONVERSATION_POLL_INTERVAL"]

    def poll_one(self) -> bool:
        import time

        now = time.monotonic()
        if not self._queue:
            self._queue = [pk for pk in tasks_to_poll(timezone.now()).values_list("id", flat=True) if now - self._last.get(pk, -1e9) >= self.interval]
            if not self._queue:
                return False
        task = Task.objects.filter(pk=self._queue.pop(0)).select_related("repository").first()
        if task is None:
            return True
        self._last[task.pk] = now
        try:
            outcomes = poll_task(self.client, task)
        except GitHubError as exc:
            if exc.retry_after is not None:
                raise  # a rate limit: the coordinator holds every GitHub step
            log.warning("task %s: polling its conversation failed: %s", task.pk, exc)
            return True
        for what in outcomes:
            if not what.startswith(("ignored", "duplicate")):
                log.info("task %s: %s", task.pk, what)
        return True
