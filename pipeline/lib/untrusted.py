"""Text strangers wrote (issue titles and bodies, comments, reviews, CI logs, what agents wrote
from them) made safe to store and to put in a prompt: hidden markup stripped, markup escaped,
fenced in a tag of its own so it cannot talk to the agent from outside the fence."""

from __future__ import annotations

import html
import re

# Hidden markup an attacker can use to talk to the agent without a human reviewer seeing it.
_HTML_COMMENT = re.compile(r"<!--.*?(-->|$)", re.S)
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f]"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# Markdown "comments": a link reference definition to nowhere renders as nothing at all
# (`[comment]: <> (text)`, `[//]: # "text"`).
_MARKDOWN_COMMENT = re.compile(r"""^[ ]{0,3}\[[^\]\n]*\]:[ \t]*(?:<>|\#)[ \t]*(?:\([^\n]*\)|"[^\n]*"|'[^\n]*')?[ \t]*$\n?""", re.M)
# Elements GitHub renders invisibly: the `hidden` attribute (any tag, with its content).
_HIDDEN_ELEMENT = re.compile(r"<(\w+)\b[^>]*\bhidden\b[^>]*>.*?(?:</\1\s*>|$)", re.S | re.I)
_LINE_BREAKS = re.compile(r"[\r\n\x85\u2028\u2029\v\f]+")


def sanitize_issue_text(text: str) -> str:
    """Strip hidden markup from issue text: HTML comments, markdown comments (reference
    definitions to nowhere), elements with the `hidden` attribute, zero-width, bidi and control
    characters. What is left is what a human sees on the issue page."""
    text = _HTML_COMMENT.sub("", text or "")
    text = _MARKDOWN_COMMENT.sub("", text)
    text = _HIDDEN_ELEMENT.sub("", text)
    text = _INVISIBLE.sub("", text)
    return _CONTROL.sub("", text).strip()


def sanitize_issue_title(text: str) -> str:
    """An issue title as one line of visible text (a newline in a title could start a new
    paragraph of instructions in a prompt)."""
    return " ".join(_LINE_BREAKS.sub(" ", sanitize_issue_text(text)).split())


def untrusted_text(text: str) -> str:
    """`text` made inert inside a prompt's markup: `&`, `<`, `>` and quotes become entities."""
    return html.escape(text, quote=True)


def fence(text: str, tag: str, **attrs: str) -> str:
    """`text` (untrusted: a comment, a review, a CI log) inside `<tag ...>` … `</tag>`, with
    hidden markup stripped and `&`, `<` and `>` as entities (as the runner does for issue text),
    so the text cannot end the fence early or open markup of its own and talk to the agent
    from outside it. Attribute values have their quotes escaped too."""
    clean = html.escape(sanitize_issue_text(text), quote=False)
    attributes = "".join(f' {k}="{html.escape(sanitize_issue_text(str(v)), quote=True)}"' for k, v in attrs.items())
    return f"<{tag}{attributes}>\n{clean}\n</{tag}>"
