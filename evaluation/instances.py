"""Evaluation instances in the SWE-bench format: one JSON object per line.

Fields (SWE-bench's names): ``instance_id``, ``repo``, ``base_commit``, ``problem_statement``,
``test_patch``, ``FAIL_TO_PASS``, ``PASS_TO_PASS`` and the optional reference fix ``patch``.
``FAIL_TO_PASS``/``PASS_TO_PASS`` are lists of test ids; SWE-bench's published datasets store
them as JSON-encoded strings, which are accepted too. Other keys (``hints_text``,
``created_at``, ``version``, …) are kept in ``extra`` and written back unchanged.

`parse_jsonl` never stops at a bad line: it returns the good instances and one `LineError` per
bad line, naming the file, the line and the field, so a run goes on with the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

REQUIRED = ("instance_id", "repo", "base_commit", "problem_statement", "test_patch", "FAIL_TO_PASS", "PASS_TO_PASS")
OPTIONAL = ("patch",)
_COMMIT = re.compile(r"[0-9a-fA-F]{7,64}")
MAX_LINE_BYTES = 20_000_000  # one instance; SWE-bench's largest are a few hundred kB


@dataclass(frozen=True)
class Instance:
    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    test_patch: str
    FAIL_TO_PASS: tuple[str, ...]
    PASS_TO_PASS: tuple[str, ...]
    patch: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def title(self) -> str:
        """The first non-empty line of the problem statement (the task's title)."""
        for line in self.problem_statement.splitlines():
            if line.strip():
                return line.strip().lstrip("#").strip()[:200]
        return self.instance_id

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data.update(
            {
                "instance_id": self.instance_id,
                "repo": self.repo,
                "base_commit": self.base_commit,
                "problem_statement": self.problem_statement,
                "test_patch": self.test_patch,
                "FAIL_TO_PASS": list(self.FAIL_TO_PASS),
                "PASS_TO_PASS": list(self.PASS_TO_PASS),
            }
        )
        if self.patch:
            data["patch"] = self.patch
        return data

    def to_line(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)


@dataclass(frozen=True)
class LineError:
    """One line that is not an instance: where, and what is wrong with it."""

    source: str
    line: int
    message: str
    instance_id: str = ""

    def __str__(self) -> str:
        return f"{self.source} line {self.line}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "instance_id": self.instance_id, "message": self.message}


class InstanceError(ValueError):
    """One field of one object is wrong; the message starts with the field's name."""


def _text(data: dict, key: str, *, required: bool = True) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise InstanceError(f"{key}: must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise InstanceError(f"{key}: must not be empty")
    return value


def _tests(data: dict, key: str) -> tuple[str, ...]:
    value = data.get(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InstanceError(f"{key}: a string must hold a JSON list of test ids, got {value[:60]!r}") from None
    if not isinstance(value, list):
        raise InstanceError(f"{key}: must be a list of test ids, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise InstanceError(f"{key}[{i}]: must be a non-empty string, got {item!r}")
        if "\n" in item or "\x00" in item:
            raise InstanceError(f"{key}[{i}]: a test id holds no newline or NUL byte")
    if len(set(value)) != len(value):
        dup = next(v for v in value if value.count(v) > 1)
        raise InstanceError(f"{key}: {dup!r} appears twice")
    return tuple(value)


def instance_from_json(data: Any) -> Instance:
    """An `Instance` from one decoded object; `InstanceError` naming the field otherwise."""
    if not isinstance(data, dict):
        raise InstanceError(f"(line): must be a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InstanceError(f"{missing[0]}: missing" + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    instance_id = _text(data, "instance_id")
    if len(instance_id) > 200 or any(c in instance_id for c in "\n\r\x00"):
        raise InstanceError("instance_id: at most 200 characters on one line")
    base_commit = _text(data, "base_commit").strip()
    if not _COMMIT.fullmatch(base_commit):
        raise InstanceError(f"base_commit: must be a commit id (7 to 64 hex digits), got {base_commit[:70]!r}")
    fail_to_pass = _tests(data, "FAIL_TO_PASS")
    if not fail_to_pass:
        raise InstanceError("FAIL_TO_PASS: must name at least one test (the tests the fix makes pass)")
    pass_to_pass = _tests(data, "PASS_TO_PASS")
    both = set(fail_to_pass) & set(pass_to_pass)
    if both:
        raise InstanceError(f"PASS_TO_PASS: {sorted(both)[0]!r} is in FAIL_TO_PASS too")
    return Instance(
        instance_id=instance_id,
        repo=_text(data, "repo"),
        base_commit=base_commit,
        problem_statement=_text(data, "problem_statement"),
        test_patch=_text(data, "test_patch"),
        FAIL_TO_PASS=fail_to_pass,
        PASS_TO_PASS=pass_to_pass,
        patch=_text(data, "patch", required=False) if data.get("patch") is not None else "",
        extra={k: v for k, v in data.items() if k not in REQUIRED + OPTIONAL},
    )


def parse_jsonl(text: str | bytes, *, source: str = "instances") -> tuple[list[Instance], list[LineError]]:
    """The instances of a JSONL text and one error per bad line (blank lines are skipped). A
    second line with an instance_id seen before is an error; the first one counts."""
    raw_lines = text.split(b"\n") if isinstance(text, bytes) else text.split("\n")
    instances: list[Instance] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(raw_lines, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                errors.append(LineError(source, n, f"not UTF-8 text (byte {exc.start + 1} of the line)"))
                continue
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            errors.append(LineError(source, n, f"{len(line)} characters; the limit for one instance is {MAX_LINE_BYTES}"))
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            errors.append(LineError(source, n, f"not valid JSON: {exc.msg} at column {exc.colno}"))
            continue
        guess = data.get("instance_id", "") if isinstance(data, dict) and isinstance(data.get("instance_id"), str) else ""
        try:
            instance = instance_from_json(data)
        except InstanceError as exc:
            errors.append(LineError(source, n, str(exc), instance_id=guess))
            continue
        if instance.instance_id in seen:
            errors.append(
                LineError(source, n, f"instance_id: {instance.instance_id!r} already on line {seen[instance.instance_id]}", instance_id=guess)
            )
            continue
        seen[instance.instance_id] = n
        instances.append(instance)
    return instances, errors


def to_jsonl(instances: Iterable[Instance]) -> str:
    return "".join(instance.to_line() + "\n" for instance in instances)
