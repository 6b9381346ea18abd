"""Decoded JSON that cannot be stored: JSON's `\\ud800` escapes decode to lone surrogates, which
Python keeps in a `str` but UTF-8 (the database, the logs, HTTP) cannot encode. Found at the
door, such text is a 400 naming the field, never a UnicodeEncodeError (500) at the first lookup.
"""

from __future__ import annotations

from typing import Any


def text_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unencodable_field(value: Any, prefix: str = "") -> str | None:
    """The path (`repository.full_name`, `commits[2].message`) of the first key or string in
    decoded JSON that UTF-8 cannot encode, or None. Walks without recursion (depth is bounded by
    the JSON parser already, breadth by the request size)."""
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not text_encodable(item):
                return path or "the body"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                name = str(key)
                if not text_encodable(name):
                    return f"{path}.<key>" if path else "<key>"
                stack.append((f"{path}.{name}" if path else name, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in reversed(list(enumerate(item))))
    return None


UNENCODABLE = "not valid Unicode text (a lone surrogate such as \\ud800 cannot be encoded)"


def unencodable_message(field: str) -> str:
    return f"{field}: {UNENCODABLE}"
