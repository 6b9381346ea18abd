"""The pull request TAC-X opens at the end of a task: its body and where it goes."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db.models import Sum

from . import accounting, forges, hooks, publish_guard, sandbox
from .models import Repository, StageResult, Task
from .quoting import quoted_block, quoted_inline
from .workflow import Workflow

PLAN_SUMMARY_LINES = 25


def pull_request_title(task: Task) -> str:
    return f"{task.title} ({task.issue_ref})"


def sandbox_sentence(task: Task) -> str:
    """How the agents were contained, and every connection the sandbox refused."""
    blocked = sandbox.blocked_for_task(task)
    modes = sandbox.modes_for_task(task)
    if "off" in modes:
        head = "⚠ Some agent stages ran **without the sandbox** (`TACX_SANDBOX=off`)."
    else:
        head = "Agents ran sandboxed (their worktree only, network limited to the allowed hosts)."
    if not blocked:
        return head + " No connection was blocked."
    total = sum(n for _, n in blocked)
    listed = ", ".join(f"{quoted_inline(dest, limit=200)} ×{n}" for dest, n in blocked[:10])
    more = f", and {len(blocked) - 10} more destinations" if len(blocked) > 10 else ""
    return f"{head} Blocked {total} connection{'s' if total != 1 else ''}: {listed}{more}."


def opening_line(task: Task) -> str:
    """The PR's first line: a closing keyword where the forge reads it (GitHub and GitLab both
    take "Closes #N" for an issue of the same project), else where the issue is."""
    repository = task.repository
    if repository.kind == Repository.Kind.LOCAL:
        return f"Task for issue {task.issue_number} of {repository.full_name}."
    if repository.tracker != repository.kind:
        where = f" ({task.issue_url})" if task.issue_url else ""
        return f"For {repository.get_tracker_kind_display()} issue {task.issue_ref}{where}."
    return f"Closes #{task.issue_number}"


def pull_request_body(task: Task) -> str:
    results = StageResult.objects.filter(task=task)
    plan = results.filter(stage__name="planning", success=True).order_by("-id").values_list("output_text", flat=True).first() or ""
    review = results.filter(stage__name="reviewing", success=True).order_by("-id").first()
    # A forge keyword only where a forge reads it: a local repository's issue number is TAC-X's own.
    opening = opening_line(task)
    lines = [opening, "", "## Plan", ""]
    plan_lines = plan.strip().splitlines()
    # The plan's own top heading ("# Plan") would repeat the section's.
    if plan_lines and plan_lines[0].startswith("# "):
        plan_lines = plan_lines[1:]
        while plan_lines and not plan_lines[0].strip():
            plan_lines = plan_lines[1:]
    if plan_lines:
        # The agent's text, quoted: it cannot hide, close or imitate the sections below.
        lines.append("The planning agent's plan (first lines):")
        lines += ["", *quoted_block("\n".join(plan_lines[:PLAN_SUMMARY_LINES]), info="markdown")]
    else:
        lines.append("(no plan recorded)")
    if len(plan_lines) > PLAN_SUMMARY_LINES:
        lines.append(f"… ({len(plan_lines) - PLAN_SUMMARY_LINES} more lines)")
    lines += ["", "## Review", ""]
    if review is not None:
        lines.append(f"Verdict: **{review.verdict or 'none'}** (round {review.round})")
    else:
        lines.append("No review stage ran.")
    lines += ["", rounds_sentence(task, results)]
    lines += ["", "## Tests", ""]
    lines += _tests_section(task, results)
    selections = list(results.filter(output_file="selection", success=True).order_by("id").values_list("output_text", flat=True))
    if selections:
        # Best of N: each pass's candidates, their cost and the choice (the judge's reasons are
        # an agent's text: quoted).
        lines += ["", "## Candidates", ""]
        for text in selections:
            lines += quoted_block(text, info="text")
    lines += ["", "## Usage", "", "| Stage | Attempts | Input | Output | Cache read | Cache write | Cost (USD) |", "|---|---|---|---|---|---|---|"]
    rows = (
        results.values("stage__name", "stage__position")
        .annotate(
            i=Sum("input_tokens"), o=Sum("output_tokens"), cr=Sum("cache_read_tokens"), cw=Sum("cache_write_tokens"), usd=Sum("cost_usd")
        )
        .order_by("stage__position")
    )
    total = Decimal("0")
    for row in rows:
        attempts = results.filter(stage__name=row["stage__name"]).count()
        usd = row["usd"] or Decimal("0")
        total += usd
        lines.append(f"| {row['stage__name']} | {attempts} | {row['i'] or 0} | {row['o'] or 0} | {row['cr'] or 0} | {row['cw'] or 0} | {usd:.4f} |")
    lines.append(f"| **total** | | | | | | **{total:.4f}** |")
    budget_table = accounting.budget_markdown(task)
    if budget_table:
        lines += ["", "## Spend against budget", "", *budget_table]
    lines += ["", "## Sandbox", "", sandbox_sentence(task)]
    dashboard = settings.TACX["DASHBOARD_URL"].rstrip("/")
    lines += ["", f"Opened by TAC-X — [task {task.pk}]({dashboard}/tasks/{task.pk}/)"]
    body = "\n".join(lines)
    # Before it is stored or posted: the body carries no secret TAC-X holds, in any encoding.
    publish_guard.check_text(body, "the pull request body", task=task)
    return body


def rounds_sentence(task: Task, results) -> str:
    """How many building rounds ran, how many of them the tests sent back and how many reviews
    asked for changes, each against its own limit (they are counted apart)."""
    workflow = Workflow.from_json(task.workflow) if task.workflow else None
    building = results.filter(stage__name="building", stage__parent__isnull=True, success=True)
    rounds = building.values("round").distinct().count()
    failing = building.exclude(tests_status__in=["", "passed"]).values("round").distinct().count()
    requests = results.filter(stage__name="reviewing", success=True, verdict="REQUEST_CHANGES").count()
    limits = (f" (max_test_rounds: {workflow.max_test_rounds})", f" (review_rounds: {workflow.review_rounds})") if workflow else ("", "")
    return (
        f"Rounds: {rounds} building round(s); {failing} sent back by failing tests{limits[0]}, "
        f"{requests} by a review requesting changes{limits[1]}."
    )


def _tests_section(task: Task, results) -> list[str]:
    """The test command's last result as TAC-X ran it (not the agent's own claim)."""
    configured = bool(task.workflow) and Workflow.from_json(task.workflow).test_command is not None
    last = results.filter(stage__name="building", stage__parent__isnull=True, success=True).exclude(tests_status="").order_by("-id").first()
    headline = hooks.tests_headline(last, configured=configured)
    if not configured:
        return ["Tests were not run: the workflow has no `test_command`."]
    command = "; ".join(Workflow.from_json(task.workflow).test_command.run)
    lines = [f"{quoted_inline(command, limit=200)}: **{headline}** (run by TAC-X after building, round {last.round if last else '-'})"]
    if last is not None and last.tests_output.strip():
        tail = "\n".join(last.tests_output.strip().splitlines()[-30:])
        if task.worktree_path:
            # Paths as the repository knows them, not the server's worktree.
            root = task.worktree_path.rstrip("/")
            tail = tail.replace(root + "/", "").replace(root, ".")
        # The output is untrusted text: keep it inside a fence it cannot close.
        lines += ["", "<details><summary>Test output (last lines)</summary>", "", *quoted_block(tail), "", "</details>"]
    return lines


def pull_request_open(*, task: Task, body: str) -> tuple[str, int | None]:
    """Open (or update) the PR; returns (url, number). A local repository has no PRs: the branch
    pushed to its origin is the deliverable, recorded as the URL."""
    repository = task.repository
    if repository.kind == Repository.Kind.LOCAL:
        return "", None
    forge = forges.forge_for(repository)
    return forge.pull_request_open(task=task, title=pull_request_title(task), body=body, draft=repository.draft_prs and settings.TACX["DRAFT_PRS"])
