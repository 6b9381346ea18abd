"""GitHub issues as a tracker: the seam's first implementation, over `GitHubClient`.

The coordinator's GitHub paths (`coordinator.webhooks`, `github_source`, `progress`) predate
the seam and call the same client endpoints directly, with GitHub-only refinements (ETags,
reconciling, reactions, check runs). This class gives the same operations the shape every
tracker has, so code written against `Tracker` works for a GitHub repository too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from django.conf import settings

from .. import github_auth
from ..github import GitHubClient, GitHubError
from ..models import Repository, Task
from .base import Actor, PayloadError, Permission, Tracker, TrackerEvent, TrackerIssue, WebhookRefused, register

WRITE_ROLES = frozenset({"admin", "maintain", "write"})


def issue_of(data: dict) -> TrackerIssue:
    return TrackerIssue(
        number=int(data["number"]),
        title=str(data.get("title") or ""),
        body=str(data.get("body") or ""),
        url=str(data.get("html_url") or ""),
        state=str(data.get("state") or "open"),
        labels=tuple(str(lb.get("name", "")) for lb in data.get("labels") or [] if isinstance(lb, dict)),
        updated_at=str(data.get("updated_at") or ""),
    )


@register
class GitHubTracker(Tracker):
    kind = Repository.Kind.GITHUB
    label = "GitHub"

    def __init__(self, client: GitHubClient | None = None):
        self._client = client

    @property
    def client(self) -> GitHubClient:
        # A fresh client per use unless one was given: it reads GITHUB_API_URL and the identity
        # when made, and the shared instance outlives settings changes.
        return self._client or GitHubClient(timeout=10.0)

    def configured(self) -> bool:
        return bool(settings.GITHUB_TOKEN or github_auth.app_configured())

    def own_user(self) -> str:
        return str(settings.TACX.get("GITHUB_LOGIN", "") or "")

    def issues_triggered(self, repository: Repository) -> list[TrackerEvent]:
        events = []
        for data in self.client.issues_labelled(full_name=repository.full_name, label=repository.trigger_label).issues:
            event = (
                self.client.latest_label_event(
                    full_name=repository.full_name, number=int(data["number"]), label=repository.trigger_label
                )
                or {}
            )
            actor = event.get("actor") or {}
            events.append(
                TrackerEvent(
                    action="trigger",
                    repository_id=repository.pk,
                    issue=issue_of(data),
                    actor=Actor(str(actor.get("login") or ""), str(actor.get("type") or "")),
                    at=str(event.get("created_at") or data.get("updated_at") or ""),
                )
            )
        return events

    def issue_fetch(self, repository: Repository, *, number: int = 0, key: str = "") -> TrackerIssue:
        return issue_of(self.client.request("GET", f"/repos/{repository.full_name}/issues/{int(number)}").data or {})

    def permission(self, repository: Repository, login: str) -> Permission:
        role = self.client.collaborator_permission(full_name=repository.full_name, login=login)
        return Permission(role in WRITE_ROLES, role, "write, maintain or admin")

    def comment_create(self, *, task: Task, body: str) -> str:
        return str(
            self.client.issue_comment_create(full_name=task.repository.full_name, number=task.issue_number, body=body)["id"]
        )

    def comment_update(self, *, task: Task, comment_id: str, body: str) -> None:
        self.client.issue_comment_update(full_name=task.repository.full_name, comment_id=int(comment_id), body=body)

    def comments(self, *, task: Task) -> list[dict]:
        found = self.client.issue_comments(full_name=task.repository.full_name, number=task.issue_number)
        return [{"id": str(c["id"]), "body": str(c.get("body") or "")} for c in found]

    def webhook_verify(self, headers: Mapping[str, str], body: bytes) -> None:
        secret = settings.GITHUB_WEBHOOK_SECRET
        given = headers.get("X-Hub-Signature-256", "")
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not secret or not given or not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
            raise WebhookRefused("missing or wrong signature")

    def webhook_delivery_id(self, headers: Mapping[str, str], payload: dict) -> str:
        delivery = headers.get("X-GitHub-Delivery", "")
        if not delivery:
            raise PayloadError("X-GitHub-Delivery is required")
        return delivery[:100]

    def webhook_parse(self, headers: Mapping[str, str], payload: dict) -> tuple[list[TrackerEvent], str]:
        # GitHub deliveries are handled by coordinator.webhooks.github_webhook (its own route).
        return [], "ignored: GitHub deliveries go to /webhooks/github"


__all__ = ["GitHubTracker", "GitHubError"]
