"""A tracker's secret from the environment or a file, never from the database or a log.

`secret_value("LINEAR_API_KEY")` is the variable's value, or the content of the file named by
`LINEAR_API_KEY_FILE` (trailing newline removed: what `echo x > file` writes). A variable and a
file both set is refused: which one wins would be a guess."""

from __future__ import annotations

import os
from pathlib import Path


class SecretMissing(Exception):
    pass


def secret_value(name: str, *, required: bool = True) -> str:
    value = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE", "")
    if value and path:
        raise SecretMissing(f"both {name} and {name}_FILE are set; set one of them")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretMissing(f"{name}_FILE names {path}, which cannot be read: {exc.strerror}") from None
    if not value and required:
        raise SecretMissing(f"{name} (or {name}_FILE) is not set")
    return value
