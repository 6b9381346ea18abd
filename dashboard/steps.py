"""The transcript as steps: an attempt's events grouped so that a long attempt reads as its
steps, not its rows.

A step is the assistant's text and the tool calls it makes with their results (and the usage and
other rows among them). A new step starts with the next text after a tool call, or with the next
tool call after a result; an event of no attempt (a task-level status row) stands alone and ends
the step. Each step says how long it took (first to last event) and the tokens it used (usage
rows are running totals of the attempt, so a step's tokens are the growth of that total).

`static/js/task_detail.js` applies the same rule to live events (`startsStep`): keep them in step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.models import AgentEvent

TITLE_MAX = 120


def usage_total(data: dict) -> int:
    return int(data.get("input_tokens") or 0) + int(data.get("output_tokens") or 0)


def title_of(text: str) -> str:
    for line in str(text or "").splitlines():
        line = line.strip().lstrip("#>*-` ").replace("**", "").replace("`", "").strip()
        if line:
            return line if len(line) <= TITLE_MAX else line[: TITLE_MAX - 1] + "…"
    return ""


@dataclass
class Step:
    result_id: int
    stage_name: str
    n: int
    base_tokens: int
    events: list[AgentEvent] = field(default_factory=list)
    title: str = ""
    tools: list[str] = field(default_factory=list)
    total_tokens: int = 0
    has_tool: bool = False
    has_result: bool = False

    @property
    def first_id(self) -> int:
        return self.events[0].pk

    @property
    def started(self) -> datetime:
        return self.events[0].created_at

    @property
    def seconds(self) -> float:
        return (self.events[-1].created_at - self.events[0].created_at).total_seconds()

    @property
    def tokens(self) -> int:
        return max(0, self.total_tokens - self.base_tokens)

    @property
    def tool_text(self) -> str:
        counts: dict[str, int] = {}
        for name in self.tools:
            counts[name] = counts.get(name, 0) + 1
        return ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in counts.items())

    def add(self, event: AgentEvent) -> None:
        self.events.append(event)
        data = event.data if isinstance(event.data, dict) else {}
        if event.kind == "tool_call":
            self.has_tool = True
            self.tools.append(str(data.get("name") or "tool")[:60])
        elif event.kind == "tool_result":
            self.has_result = True
        elif event.kind == "usage":
            self.total_tokens = usage_total(data)
        elif event.kind in ("message", "output") and not self.title and data.get("role", "assistant") == "assistant":
            self.title = title_of(data.get("text", ""))


def starts_step(step: Step | None, event: AgentEvent) -> bool:
    if step is None or step.result_id != event.result_id:
        return True
    if event.kind in ("message", "output"):
        return step.has_tool
    if event.kind == "tool_call":
        return step.has_result
    return False


def transcript_items(events: Iterable[AgentEvent]) -> list[tuple[str, object]]:
    """("head", event) before an attempt's first event, ("step", Step), or ("event", event) for an
    event of no attempt; in event order."""
    items: list[tuple[str, object]] = []
    step: Step | None = None
    last_result = None
    numbers: dict[int, int] = {}
    totals: dict[int, int] = {}
    for event in events:
        if event.result_id is None:
            items.append(("event", event))
            step, last_result = None, None  # as the page's script sees it: the next attempt row heads again
            continue
        if event.result_id != last_result:
            items.append(("head", event))
            last_result = event.result_id
        if starts_step(step, event):
            numbers[event.result_id] = numbers.get(event.result_id, 0) + 1
            base = totals.get(event.result_id, 0)
            step = Step(
                result_id=event.result_id,
                stage_name=event.result.stage.name,
                n=numbers[event.result_id],
                base_tokens=base,
                total_tokens=base,
            )
            items.append(("step", step))
        step.add(event)
        totals[event.result_id] = step.total_tokens
    return items
