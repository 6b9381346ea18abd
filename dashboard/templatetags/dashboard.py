from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django import template
from django.utils import timezone

from dashboard import rendering
from dashboard.task_rows import task_row_html

register = template.Library()


@register.filter
def markdown(text: str):
    return rendering.markdown_html(text)


@register.filter
def pretty_json(value: Any) -> str:
    return rendering.pretty_json(value)


@register.filter
def duration(seconds: float | None) -> str:
    return rendering.duration_text(seconds)


@register.filter
def tokens(value: int | None) -> str:
    return rendering.tokens_text(value)


@register.filter
def usd(value: Decimal | str | None) -> str:
    return rendering.usd_text(value)


@register.filter
def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


@register.simple_tag
def elapsed(start: datetime | None, end: datetime | None = None) -> str:
    if start is None:
        return "–"
    return rendering.duration_text(((end or timezone.now()) - start).total_seconds())


@register.filter
def age(moment: datetime | None) -> str:
    if moment is None:
        return "–"
    return rendering.duration_text((timezone.now() - moment).total_seconds())


@register.filter
def ago(moment: datetime | None) -> str:
    """How long ago, in one unit: "just now", "5 min ago", "3 h ago", "2 days ago"."""
    if moment is None:
        return "–"
    return rendering.ago_text((timezone.now() - moment).total_seconds())


@register.simple_tag
def task_row(task):
    """A row of the task list (`dashboard.task_rows`: rendered in Python, it is most of the page)."""
    return task_row_html(task)


@register.filter
def add_numbers(a, b):
    return (a or 0) + (b or 0)


@register.filter
def older_than(moment: datetime | None, seconds: float) -> bool:
    return moment is not None and (timezone.now() - moment).total_seconds() > float(seconds)


@register.filter
def event_summary(event) -> str:
    """The "now doing" line of an agent event (tool call, message or program output)."""
    return rendering.event_summary(event.kind, event.data, event.task.worktree_path)


@register.filter
def tool_call_detail(event) -> dict:
    """{"kind": "command" | "path" | "", "text": ...} of a tool call, worktree paths relative."""
    kind, text = rendering.tool_call_detail(event.data if isinstance(event.data, dict) else {}, event.task.worktree_path)
    return {"kind": kind, "text": text}


@register.filter
def attempt_fingerprint(result) -> list[str]:
    """What an attempt ran with, as parts to join with " · " (only those it has: a command stage
    has no model, and its line must not start with a separator)."""
    parts = []
    if result.model:
        parts.append(f"model {result.model}")
    if result.prompt_hash:
        parts.append(f"prompt {result.prompt_hash[:12]}")
    if result.base_commit:
        head = result.head_commit if result.head_commit and result.head_commit != result.base_commit else ""
        parts.append(f"from {result.base_commit[:10]}" + (f" → {head[:10]}" if head else ""))
    if result.memory_entries:
        parts.append("memory " + ", ".join(f"#{i}" for i in result.memory_entries))
    return parts


@register.filter
def counted_attempts(stage) -> int:
    """Attempts that count against the limit: a cancelled one does not, nor one before a
    person's Retry (it resets the count; selectors.task_stages works it out)."""
    counted = getattr(stage, "counted_attempts", None)
    if counted is not None:
        return counted
    results = getattr(stage, "attempt_list", None)
    if results is None:
        return stage.attempts
    return sum(1 for r in results if r.outcome != "cancelled")


@register.filter
def stage_label(stage) -> str:
    """A stage's status as the timeline says it: a stage that ended without ever running (the
    task failed or was cancelled before it) is "not run", not "cancelled"."""
    if stage.status == "cancelled" and not getattr(stage, "attempt_list", None):
        return "not run"
    return stage.status
