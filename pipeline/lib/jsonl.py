"""JSON lines as programs write them: some lines are not JSON, some JSON is not an object."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def json_objects(lines: Iterable[str | bytes]) -> list[dict[str, Any]]:
    """The JSON objects among `lines`, in order; blank, non-JSON and non-object lines skipped."""
    found = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found
