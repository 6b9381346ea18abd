"""Text to HTML for pages: markdown written by agents (plans, reviews, PR bodies, messages) is
untrusted. Raw HTML in it is escaped (shown as the text it is, so `Goodbye, <name>` and
`List<String>` keep every character), the markdown is rendered, and the result is sanitised with
nh3 before it is marked safe.

No image is rendered: `![](https://host/?d=...)` in a plan or a message would make every viewer's
browser fetch a URL the agent chose (a way out past the sandbox's allow-list, and a tell of who
looked when). An image becomes inert text showing its alt text and URL; nh3 drops any `<img>` left
(and the Content-Security-Policy, tacx_site.csp, would refuse the fetch anyway)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import markdown as md
import nh3
import yaml
from django.utils.safestring import SafeString, mark_safe
from markdown.treeprocessors import Treeprocessor

_EXTENSIONS = ["fenced_code", "tables", "sane_lists"]
_TAGS = (nh3.ALLOWED_TAGS - {"img"}) | {"pre", "code", "table", "thead", "tbody", "tr", "th", "td", "hr", "del", "input"}
_ATTRIBUTES = {**nh3.ALLOWED_ATTRIBUTES, "code": {"class"}, "span": {"class"}, "input": {"type", "checked", "disabled"}}


class InertImages(Treeprocessor):
    """Each `<img>` the markdown made becomes `<span class="image-ref">[image: alt] URL</span>`."""

    def run(self, root):
        for element in root.iter("img"):
            alt, src = element.get("alt", ""), element.get("src", "")
            element.tag = "span"
            element.attrib.clear()
            element.set("class", "image-ref")
            element.text = f"[image{': ' + alt if alt else ''}] {src}".rstrip()


def markdown_html(text: str) -> SafeString:
    """Sanitised HTML for markdown text (links get rel="noopener noreferrer")."""
    if not text:
        return mark_safe("")
    renderer = md.Markdown(extensions=_EXTENSIONS, output_format="html")  # not thread-safe: one per call
    # Raw HTML blocks and inline tags become text (escaped by the serializer) instead of markup
    # that the sanitiser would then drop with its content.
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    renderer.treeprocessors.register(InertImages(renderer), "inert_images", 15)  # after "inline" (20)
    html = renderer.convert(text)
    return mark_safe(nh3.clean(html, tags=_TAGS, attributes=_ATTRIBUTES, link_rel="noopener noreferrer"))


def pretty_json(value: Any) -> str:
    """A readable JSON rendering (escaped by the template as usual)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def duration_text(seconds: float | None) -> str:
    """1h 02m, 3m 05s, 12s."""
    if seconds is None:
        return "–"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def ago_text(seconds: float) -> str:
    """A relative time for a list: "just now", "42 s ago", "5 min ago", "3 h ago", "2 days ago"."""
    seconds = max(0, int(seconds))
    if seconds < 10:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    days = seconds // 86400
    return f"{days} day{'s' if days != 1 else ''} ago"


def usd_text(value: Decimal | str | None) -> str:
    """$0.0123 under a dollar, $12.30 from one."""
    if value in (None, ""):
        return "–"
    return f"${Decimal(value):.4f}" if Decimal(value) < 1 else f"${Decimal(value):.2f}"


def tokens_text(value: int | None) -> str:
    """12, 3.4k, 1.2M."""
    n = int(value or 0)
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def workflow_yaml(data: dict) -> str:
    """The workflow snapshot as the YAML a repository would write."""
    if not data:
        return ""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def worktree_relative(text: Any, worktree: str) -> str:
    """``text`` with the task's worktree path written relative to it: ``<worktree>/src/a.py``
    reads ``src/a.py`` and the worktree itself ``.`` (``/w/task-1`` never matches ``/w/task-10``)."""
    text = "" if text is None else str(text)
    root = (worktree or "").rstrip("/")
    if not root or root not in text:
        return text
    text = re.sub(re.escape(root) + r"/(?=[\w.-])", "", text)  # a path inside it
    return re.sub(re.escape(root) + r"/?(?![\w.-])", ".", text)  # the worktree itself


def tool_call_detail(data: dict, worktree: str = "") -> tuple[str, str]:
    """What a tool call is about, for one line: ("command", "$ ...") or ("path", "src/a.py") or
    ("", ""), with worktree paths relative to the worktree."""
    tool_input = data.get("input") if isinstance(data.get("input"), dict) else {}
    if tool_input.get("command"):
        return "command", "$ " + worktree_relative(tool_input["command"], worktree)
    path = tool_input.get("file_path") or tool_input.get("path") or tool_input.get("pattern")
    return ("path", worktree_relative(path, worktree)) if path else ("", "")


def event_summary(kind: str, data: dict, worktree: str = "") -> str:
    """One line saying what an agent event does ("now doing"): the tool and its command or path,
    the start of a message, or a line a command stage printed."""
    data = data if isinstance(data, dict) else {}
    if kind == "tool_call":
        name = f"{data['server']} › {data.get('tool', '')}" if data.get("server") else str(data.get("name") or "tool")
        detail = tool_call_detail(data, worktree)[1]
        text = f"{name}: {detail}" if detail else name
    elif kind in ("message", "output"):
        text = str(data.get("text") or "")
    else:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:159] + "…"
