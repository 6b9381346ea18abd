"""Why a task stopped and what to do next, for the red callout of the task page.

The reason comes from the task (``status_reason``) and its last failed attempt; the next step is
chosen from what the reason says. Matching words is crude but honest: when nothing matches, the
callout says to read the attempt's error and transcript.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.models import StageResult, Task


@dataclass
class Failure:
    title: str
    reasons: list[str] = field(default_factory=list)
    next_step: str = ""
    stage: str = ""


_STEPS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"invalid workflow|workflow\.yaml|workflow override", re.I),
        "Fix these problems in .tac/workflow.yaml on the repository's default branch (every one is listed), "
        "commit, and press Retry.",
    ),
    (
        re.compile(r"api key|authenticat|unauthori[sz]ed|\b401\b|\b403\b|credential|log ?in", re.I),
        "Check the agent's API key (ANTHROPIC_API_KEY, OPENAI_API_KEY or GEMINI_API_KEY in the environment of "
        "the worker processes; agents run with a private HOME, so a CLI login of the worker's user does not count), "
        "then press Retry.",
    ),
    (
        re.compile(r"budget", re.I),
        "Raise the budget that ran out (the stage's or task's `budget:` in .tac/workflow.yaml, the repository's "
        "daily budget in the admin, or TACX_DAILY_BUDGET_*), then press Retry. The work so far is on the branch.",
    ),
    (
        re.compile(r"timed out|timeout|stalled|silent for", re.I),
        "The agent ran out of time: raise the stage's `timeout` (or `stall_timeout`) in .tac/workflow.yaml, or "
        "make the issue smaller, then press Retry.",
    ),
    (
        re.compile(r"not a valid|unknown revision|not a git repository|cannot read the repository", re.I),
        "The repository or its branch is not what TAC-X expects: check the repository's path, clone URL and "
        "default branch in the admin, then press Retry.",
    ),
    (
        re.compile(r"does not exist or is not executable|no agent program|unknown agent provider", re.I),
        "The agent program is missing on the worker: install it (npm ci) or fix the stage's provider, then press Retry.",
    ),
    (
        re.compile(r"no verdict|left no plan|left no changes|requests changes after", re.I),
        "The agent did not deliver what the stage needs. Read its transcript; adjust the issue text or the "
        "stage's prompt, then press Retry.",
    ),
    (re.compile(r"worker lost", re.I), "The worker running the stage died. Check the qcluster processes, then press Retry."),
]


def failure_explain(task: Task) -> Failure | None:
    """The callout for a task that ended without delivering (None while it runs or after success)."""
    if task.status not in (Task.Status.FAILED, Task.Status.BUDGET_EXCEEDED, Task.Status.CANCELLED, Task.Status.SKIPPED):
        return None
    last = (
        task.results.exclude(outcome__in=[StageResult.Outcome.SUCCEEDED, StageResult.Outcome.RUNNING])
        .select_related("stage")
        .order_by("-id")
        .first()
    )
    reason = task.status_reason or (last.error if last else "")
    stage = last.stage.name if last else ""
    if task.status == Task.Status.CANCELLED:
        return Failure(title="Cancelled", reasons=[reason] if reason else [], next_step="Press Retry to run it again from the stage that did not finish.", stage=stage)
    if task.status == Task.Status.SKIPPED:
        return Failure(title="Skipped", reasons=[reason], next_step="Nothing ran. If the trigger should count, fix what the reason names and trigger the issue again.")
    reasons = _reason_lines(reason)
    title = "Budget exceeded" if task.status == Task.Status.BUDGET_EXCEEDED else "Failed"
    if stage:
        title += f" in {stage}"
    step = next((text for pattern, text in _STEPS if pattern.search(reason)), "")
    if not step:
        step = "Read the failed attempt's error and its transcript below; fix the cause and press Retry."
    return Failure(title=title, reasons=reasons, next_step=step, stage=stage)


def _reason_lines(reason: str) -> list[str]:
    """One line per problem: an invalid workflow lists every error on its own line."""
    reason = reason.strip()
    prefix = "invalid workflow: "
    if reason.startswith(prefix):
        return [line for line in reason[len(prefix):].splitlines() if line.strip()]
    return [reason] if reason else []
