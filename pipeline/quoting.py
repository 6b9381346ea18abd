"""Agent text inside what TAC-X posts (PR bodies, replies, comments, check summaries).

Agent text (a plan, a test output, a commit subject, an error that quotes the agent) is shown as
code: a fenced block whose fence is longer than any run of backticks in the text, or a code span
likewise. In CommonMark and on GitHub, nothing inside a code block or span is Markdown or HTML: a
heading, `<!--`, `</details>`, a link or an image stays literal text, and the text cannot close
the fence, so it cannot hide, close or imitate the sections TAC-X writes around it.
"""

from __future__ import annotations

import re

_BACKTICKS = re.compile(r"`+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    # NUL and other controls have no business in a post (PostgreSQL refuses NUL too).
    return _CONTROL.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))


def _fence(text: str, minimum: int) -> str:
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    return "`" * max(minimum, longest + 1)


def quoted_block(text: str, *, info: str = "text", empty: str = "(empty)") -> list[str]:
    """`text` as the lines of a fenced code block it cannot close (`info` is the language tag)."""
    body = _clean(text).strip("\n") or empty
    fence = _fence(body, 3)
    return [f"{fence}{info}", *body.split("\n"), fence]


def quoted_inline(text: str, *, limit: int = 300, empty: str = "(empty)", table: bool = False) -> str:
    """`text` on one line as a code span it cannot close, cut to `limit` characters. In a table
    cell (`table`), `|` is escaped: GitHub splits cells at `|` even inside a code span."""
    line = " ".join(_clean(text).split("\n")).strip()
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    if not line:
        return empty
    if table:
        line = line.replace("|", "\\|")
    fence = _fence(line, 1)
    # Spaces inside both ends: a span may then begin or end with a backtick (CommonMark strips one each).
    return f"{fence} {line} {fence}"
