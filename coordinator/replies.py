"""What TAC-X says back on GitHub about rounds: 👀 on the comment that started one, the reply
when it is over (the commits it pushed, the diff stat, the cost; or why it did not start; or a
command's answer), the plan of a task awaiting approval, and the question of a task paused at a
budget.

Each post is claimed in the database first (a conditional UPDATE), so two coordinators never
post it twice; a reply whose poster died after posting is found again by its marker.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from pipeline import budgets
from pipeline.github import GitHubClient, GitHubError
from pipeline.models import BudgetPause, Repository, Round, StageResult, Task
from pipeline.quoting import quoted_block, quoted_inline
from pipeline.services.budget_pauses import suggested_raise

from .conversation import workflow_of


def round_marker(round_: Round) -> str:
    return f"<!-- tacx:round:{round_.pk} -->"


def reply_body(round_: Round) -> str:
    task = round_.task
    dashboard = settings.TACX["DASHBOARD_URL"].rstrip("/")
    head = f"{round_marker(round_)}\n**TAC-X** ({round_.started_by()}): "
    if round_.kind == Round.Kind.COMMAND:
        return head + round_.reason
    if round_.status == Round.Status.REFUSED:
        return head + f"not started: {round_.reason}"
    if round_.status == Round.Status.CANCELLED and not round_.started_at:
        return head + f"cancelled: {round_.reason}"
    icon = {"succeeded": "✅", "failed": "❌", "cancelled": "🚫"}.get(round_.status, "")
    lines = [head + f"round {icon} **{round_.status}**."]
    if round_.reason and round_.status != Round.Status.SUCCEEDED:
        # A failure's reason can quote the agent: shown as code, never as Markdown.
        lines.append(f"Reason: {quoted_inline(round_.reason.splitlines()[0], limit=300)}")
    changes = (round_.context or {}).get("changes") or {}
    if changes.get("commits"):
        lines += ["", "Changes pushed to this pull request:", *[f"- {commit_line(c)}" for c in changes["commits"]]]
        if changes.get("stat"):
            lines += ["", quoted_inline(changes["stat"], limit=200)]
    elif round_.status == Round.Status.SUCCEEDED:
        lines += ["", "No new commits were needed."]
    cost = f"**Cost:** ${round_.cost_usd:.4f} ({round_.input_tokens + round_.output_tokens:,} input+output tokens)"
    if round_.resumed_session_id:
        cost += f" · resumed the previous session (≈{round_.tokens_saved:,} input tokens not re-read)"
    lines += ["", cost, "", f"[Task {task.pk} in the TAC-X dashboard]({dashboard}/tasks/{task.pk}/)"]
    return "\n".join(lines)


def commit_line(commit: str) -> str:
    """`<sha> <subject>` as TAC-X's short sha and the agent's subject, quoted."""
    sha, _, subject = str(commit).partition(" ")
    return f"{quoted_inline(sha, limit=12)} {quoted_inline(subject, limit=120)}"


def thread_of(round_: Round) -> int | None:
    """The inline review comment whose thread the round's reply goes to, if it has one."""
    react = (round_.context or {}).get("react") or {}
    if react.get("review_comment") and react.get("comment_id"):
        return int(react["comment_id"])
    return None


REPLY_CLAIM_SECONDS = 60
# Rounds whose comment was on GitHub: a repository whose issues live on Linear or Jira has its
# code on GitHub, but its rounds' comments (and their ids) are the tracker's, not GitHub's.
GITHUB_TRACKED = ("", Repository.Kind.GITHUB)
FINAL = (Round.Status.SUCCEEDED, Round.Status.FAILED, Round.Status.REFUSED, Round.Status.CANCELLED, Round.Status.DONE)


def react_one(client: GitHubClient) -> bool:
    """👀 on the comment of a round that was picked up (not refused). One per call."""
    round_ = (
        Round.objects.filter(reacted_at__isnull=True, task__repository__kind=Repository.Kind.GITHUB)
        .filter(task__repository__tracker_kind__in=GITHUB_TRACKED)
        .exclude(status=Round.Status.REFUSED)
        .exclude(context__react=None)
        .filter(context__has_key="react")
        .select_related("task__repository")
        .order_by("id")
        .first()
    )
    if round_ is None:
        return False
    react = round_.context.get("react") or {}
    if not Round.objects.filter(pk=round_.pk, reacted_at__isnull=True).update(reacted_at=timezone.now()):
        return True
    try:
        client.reaction_create(full_name=round_.task.repository.full_name, comment_id=int(react["comment_id"]), review_comment=bool(react.get("review_comment")))
    except GitHubError as exc:
        if exc.status not in (404, 410, 422):
            Round.objects.filter(pk=round_.pk).update(reacted_at=None)
            raise
    return True


def reply_one(client: GitHubClient) -> bool:
    """Post the reply of one finished round (claimed first, so it is posted once)."""
    now = timezone.now()
    stale = now - timedelta(seconds=REPLY_CLAIM_SECONDS)
    round_ = (
        Round.objects.filter(status__in=FINAL, replied_at__isnull=True, task__repository__kind=Repository.Kind.GITHUB, context__has_key="reply_to")
        .filter(task__repository__tracker_kind__in=GITHUB_TRACKED)
        .filter(Q(reply_claimed_at__isnull=True) | Q(reply_claimed_at__lt=stale))
        .select_related("task__repository")
        .order_by("id")
        .first()
    )
    if round_ is None:
        return False
    claimed_before = round_.reply_claimed_at
    if not Round.objects.filter(pk=round_.pk, replied_at__isnull=True, reply_claimed_at=claimed_before).update(reply_claimed_at=now):
        return True
    full_name, number = round_.task.repository.full_name, int(round_.context["reply_to"])
    thread = thread_of(round_)
    if claimed_before is not None:
        # An earlier try may have posted it and died before recording it.
        if thread is not None:
            posted = client.pull_review_comments(full_name=full_name, number=number)
        else:
            posted = client.issue_comments(full_name=full_name, number=number)
        for comment in posted:
            if round_marker(round_) in str(comment.get("body") or ""):
                Round.objects.filter(pk=round_.pk).update(replied_at=now, reply_comment_id=int(comment["id"]))
                return True
    try:
        if thread is not None:
            # A review with inline comments: the reply goes in the first comment's thread.
            comment = client.review_comment_reply(full_name=full_name, number=number, comment_id=thread, body=reply_body(round_))
        else:
            comment = client.issue_comment_create(full_name=full_name, number=number, body=reply_body(round_))
    except GitHubError:
        Round.objects.filter(pk=round_.pk).update(reply_claimed_at=claimed_before)
        raise
    Round.objects.filter(pk=round_.pk).update(replied_at=timezone.now(), reply_comment_id=int(comment["id"]))
    return True


def plan_comment_body(task: Task, plan: str, result_id: int) -> str:
    mention = workflow_of(task).mention
    return "\n".join(
        [
            f"<!-- tacx:plan:{task.pk}:{result_id} -->",
            f"**TAC-X** planned this issue (task {task.pk}). The plan waits for approval:",
            "",
            *quoted_block(plan, info="markdown", empty="(empty plan)"),
            "",
            f"Comment `/tacx approve` to build it, or `{mention} <feedback>` to have it planned again.",
        ]
    )


def post_one_plan(client: GitHubClient) -> bool:
    """Post the plan of one task awaiting approval whose latest plan is not on the issue yet."""
    for task in Task.objects.filter(status=Task.Status.AWAITING_APPROVAL, repository__kind=Repository.Kind.GITHUB).select_related("repository")[:20]:
        plan = StageResult.objects.filter(task=task, stage__name="planning", success=True).order_by("-id").first()
        if plan is None or plan.pk == task.plan_comment_result_id:
            continue
        if not Task.objects.filter(pk=task.pk, plan_comment_result_id=task.plan_comment_result_id).update(plan_comment_result=plan):
            return True
        try:
            comment = client.issue_comment_create(full_name=task.repository.full_name, number=task.issue_number, body=plan_comment_body(task, plan.output_text, plan.pk))
        except GitHubError:
            Task.objects.filter(pk=task.pk, plan_comment_result=plan).update(plan_comment_result_id=task.plan_comment_result_id)
            raise
        Task.objects.filter(pk=task.pk).update(plan_comment_id=int(comment["id"]))
        return True
    return False


def pause_marker(pause: BudgetPause) -> str:
    return f"<!-- tacx:pause:{pause.pk} -->"


def pause_comment_body(pause: BudgetPause) -> str:
    """The question a budget pause asks on GitHub: what was spent against which limit, what the
    rest may cost, how to answer, and when it ends unanswered. Only TAC-X's own figures and
    names (the meter's sentence, the branch), no agent text."""
    task = pause.task
    dashboard = settings.TACX["DASHBOARD_URL"].rstrip("/")
    what = f"the {pause.scope} budget" + (f" of stage `{pause.stage_name}`" if pause.stage_name else "")
    limit = " and ".join(
        x for x in (budgets.money(pause.limit_usd) if pause.limit_usd is not None else "", f"{pause.limit_tokens:,} tokens" if pause.limit_tokens is not None else "") if x
    )
    spent = f"{budgets.money(pause.spent_usd)} ({pause.spent_tokens:,} tokens)"
    raise_by = suggested_raise(pause, pause.estimate or {})
    kept = pause.result.head_commit
    lines = [
        pause_marker(pause),
        f"**TAC-X** paused task {task.pk} at a budget: {what} ({limit}) was reached in stage `{pause.stage.name}`; {spent} spent against it.",
        "",
        f"The rest of the workflow: {budgets.estimate_sentence(pause.estimate or {})}.",
    ]
    if kept and kept != pause.result.base_commit:
        lines.append(f"The work so far is on the branch {quoted_inline(task.branch, limit=200)} (commit {quoted_inline(kept[:10], limit=12)}).")
    lines += [
        "",
        "Someone with write access answers with a comment:",
        f"- `/tacx budget +{raise_by}` raises the limit by that much; the stage goes on where it stopped",
        "- `/tacx budget stop` ends the task here",
        "",
        f"Nobody answering ends the task at {pause.expires_at:%Y-%m-%d %H:%M} UTC." if pause.expires_at else "",
        f"[Task {task.pk} in the TAC-X dashboard]({dashboard}/tasks/{task.pk}/)",
    ]
    return "\n".join(lines)


def post_one_pause(client: GitHubClient) -> bool:
    """Post the question of one waiting budget pause on its task's PR (or issue), once: the post
    is claimed first; a failed post is given back for the next try."""
    pause = (
        BudgetPause.objects.filter(status=BudgetPause.Status.WAITING, comment_claimed_at__isnull=True, task__repository__kind=Repository.Kind.GITHUB)
        .select_related("task__repository", "stage", "result")
        .order_by("id")
        .first()
    )
    if pause is None:
        return False
    if not BudgetPause.objects.filter(pk=pause.pk, comment_claimed_at__isnull=True).update(comment_claimed_at=timezone.now()):
        return True
    task = pause.task
    try:
        comment = client.issue_comment_create(full_name=task.repository.full_name, number=task.pr_number or task.issue_number, body=pause_comment_body(pause))
    except GitHubError:
        BudgetPause.objects.filter(pk=pause.pk).update(comment_claimed_at=None)
        raise
    BudgetPause.objects.filter(pk=pause.pk).update(comment_id=int(comment["id"]))
    return True
