"""The tracker seam: where triggers come from and where progress is reported.

A *tracker* is an issue source (GitHub issues, GitLab issues, Linear, Jira). A repository's
tracker is `Repository.tracker` (its `tracker_kind`, or its forge `kind` when empty); its
non-secret settings are `Repository.tracker_settings` (e.g. a Linear team and label, a Jira
project or JQL). Secrets (tokens, webhook secrets) come from the environment or files only.

Contract of one implementation (a subclass of `Tracker`, registered with `@register`):

- `configured()`: its credentials are present (else it is neither polled nor accepts webhooks).
- `issues_triggered(repository)`: the poll. Every open issue that carries the trigger now
  (label, or assignment to TAC-X's user), as `TrackerEvent(action="trigger")` with who applied
  it (`actor`) and when (`at`); the coordinator creates a task only for a trigger newer than the
  issue's last task, so polling again is harmless.
- `permission(repository, login)`: may this person start work? `Permission(allowed, role,
  required)`. Raises `TrackerError` when the tracker cannot answer now (the caller retries;
  nobody is refused for an outage). Bots, `TACX_ALLOWED_BOTS` and `allow_non_writers` are
  decided by the coordinator (`coordinator.authorization`), not here.
- `comment_create/comment_update/comments`: the progress comment on the task's issue
  (`coordinator.tracker_progress` keeps one per task, found again by its marker).
- `webhook_verify(headers, body)`: raise `WebhookRefused` unless the delivery is authentic
  (a shared secret or an HMAC, compared in constant time). Nothing else is looked at before.
- `webhook_delivery_id(headers, payload)`: the vendor's unique id of the delivery (kept on
  redelivery), used to record it once; `PayloadError` when missing.
- `webhook_parse(headers, payload)`: `(events, why_ignored)`. Raises `PayloadError` (a 400
  naming the field) for a malformed payload; never touches the vendor's API.

Errors carry whether retrying can help (`TrackerError.permanent`, `retry_after`), as
`GitHubError` does. GitHub's tracker (`github.GitHubTracker`) wraps `GitHubClient`; GitHub
webhooks keep their own view (`coordinator.webhooks`) and poller (`coordinator.github_source`),
which predate the seam and do more (ETags, reconciling, rounds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

from django.utils.dateparse import parse_datetime

from ..lib.api_errors import TrackerError  # noqa: F401  (defined in lib: API clients raise it without importing the seam)
from ..models import Repository, Task


class WebhookRefused(Exception):
    """The delivery is not authentic (missing or wrong secret/signature): answered 403."""


class PayloadError(ValueError):
    """The (authentic) payload is malformed: answered 400 with this text; nothing is recorded."""


@dataclass(frozen=True)
class TrackerIssue:
    """An issue as a tracker shows it. `number`: the issue number (GitHub number, GitLab iid) or
    the numeric part of `key`; `key`: "" for numbered trackers, else "ENG-123", "PROJ-7"."""

    number: int
    title: str
    body: str = ""
    url: str = ""
    key: str = ""
    state: str = "open"  # open | closed
    labels: tuple[str, ...] = ()
    updated_at: str = ""  # ISO 8601

    @property
    def ref(self) -> str:
        return self.key or f"#{self.number}"


@dataclass(frozen=True)
class Actor:
    login: str
    type: str = ""  # "Bot" for bot accounts (refused unless in TACX_ALLOWED_BOTS)


@dataclass(frozen=True)
class TrackerEvent:
    """One thing a delivery or a poll says about one issue of one registered repository.

    `action`:
      trigger    start a task (`via` label or assignment), if `actor` may
      untrigger  cancel the issue's unfinished task (label removed, issue closed); `reason` says why
      unassign   unassigned from TAC-X's user: cancels a task an assignment started, if still queued
      comment    a comment on the issue or its PR/MR addressed to TAC-X (`detail`: id, body,
                 created_at, and for merge requests `mr` and a `position`); becomes a round
      pipeline   a CI pipeline failed on a task's MR head (`detail`: sha, ref, pipeline id)
    """

    action: str
    repository_id: int
    issue: TrackerIssue
    actor: Actor = Actor("")
    via: str = "label"
    at: str = ""  # ISO 8601: when the trigger happened (the label, the assignment, the note)
    reason: str = ""
    detail: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TrackerEvent:
        issue = dict(data["issue"])
        issue["labels"] = tuple(issue.get("labels") or ())
        return cls(**{**data, "issue": TrackerIssue(**issue), "actor": Actor(**data.get("actor") or {"login": ""})})

    @property
    def at_time(self) -> datetime | None:
        return parse_datetime(self.at) if self.at else None


@dataclass(frozen=True)
class Permission:
    allowed: bool
    role: str  # the person's role as the tracker names it ("reporter (20)", "write", "member")
    required: str  # what is required, for the refusal text ("Developer (30) or higher")


class Tracker:
    """One kind of issue tracker (see the module docstring for the contract)."""

    kind: str = ""
    label: str = ""  # a human name: "GitLab"

    def configured(self) -> bool:
        return False

    # --- issues -------------------------------------------------------------------------------
    def issues_triggered(self, repository: Repository) -> list[TrackerEvent]:
        raise NotImplementedError

    def issue_fetch(self, repository: Repository, *, number: int = 0, key: str = "") -> TrackerIssue:
        raise NotImplementedError

    # --- people -------------------------------------------------------------------------------
    def permission(self, repository: Repository, login: str) -> Permission:
        raise NotImplementedError

    def own_user(self) -> str:
        """The user issues are assigned to for TAC-X on this tracker ("" when none)."""
        return ""

    # --- comments (progress) ------------------------------------------------------------------
    def comment_create(self, *, task: Task, body: str) -> str:
        """Post a comment on the task's issue; returns its id (as text)."""
        raise NotImplementedError

    def comment_update(self, *, task: Task, comment_id: str, body: str) -> None:
        """Replace the text of a comment; TrackerError(status=404) when it was deleted."""
        raise NotImplementedError

    def comments(self, *, task: Task) -> list[dict]:
        """The issue's comments as [{"id": str, "body": str}], oldest first."""
        raise NotImplementedError

    # --- webhooks -----------------------------------------------------------------------------
    def webhook_verify(self, headers: Mapping[str, str], body: bytes) -> None:
        raise WebhookRefused(f"{self.label or self.kind} takes no webhooks")

    def webhook_delivery_id(self, headers: Mapping[str, str], payload: dict) -> str:
        raise PayloadError("no delivery id")

    def webhook_parse(self, headers: Mapping[str, str], payload: dict) -> tuple[list[TrackerEvent], str]:
        return [], f"ignored: {self.kind} webhooks start nothing"


TRACKERS: dict[str, type[Tracker]] = {}
_instances: dict[str, Tracker] = {}


def register(cls: type[Tracker]) -> type[Tracker]:
    """Class decorator: make a tracker kind known (webhook route `/webhooks/<kind>`, polling)."""
    TRACKERS[cls.kind] = cls
    return cls


def tracker_named(kind: str) -> Tracker:
    """The shared instance of a registered tracker kind (KeyError when unknown)."""
    if kind not in _instances:
        _instances[kind] = TRACKERS[kind]()
    return _instances[kind]


def tracker_for(repository: Repository) -> Tracker:
    return tracker_named(repository.tracker)


def forget_instances() -> None:
    """Drop the shared instances (tests change settings between runs)."""
    _instances.clear()
