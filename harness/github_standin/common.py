"""The GitHub stand-in's shared pieces: users, timestamps, its state records, the octokit
example payloads."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

WRITE_ROLES = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read", "none": "none"}


def github_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def user(login: str, kind: str = "User") -> dict:
    uid = int(hashlib.sha256(login.encode()).hexdigest()[:7], 16)
    return {
        "login": login,
        "id": uid,
        "node_id": f"U_{uid}",
        "avatar_url": f"https://avatars.example/u/{uid}",
        "url": f"https://api.github.com/users/{login}",
        "html_url": f"https://github.com/{login}",
        "type": kind,
        "site_admin": False,
    }


@dataclass
class ScriptedFailure:
    method: str
    path_pattern: re.Pattern
    status: int
    message: str
    headers: dict[str, str]
    times: int


@dataclass
class RepoState:
    full_name: str
    permissions: dict[str, str] = field(default_factory=dict)  # login -> role
    default_role: str = "read"  # what a non-collaborator gets on a public repository
    origin: str = ""  # a bare repository whose branches are the PRs' heads



class PlainText(str):
    """A text/plain answer body (job logs)."""


def later_than(stamp: str) -> str:
    """Now, or one second after `stamp` when now is the same second (GitHub's whole seconds)."""
    from datetime import timedelta

    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return max(datetime.now(UTC).replace(microsecond=0), then + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")



FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "github-webhooks"  # octokit example payloads


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()
