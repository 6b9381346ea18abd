"""Who may start a task: a label alone is not enough.

The person who applied the trigger label (`sender` of a webhook, the actor of the issue's latest
`labeled` event for the poller) must hold write, maintain or admin on the repository, asked of
GitHub's collaborator-permission endpoint (answers cached a few minutes). Bots are refused unless
listed in `TACX["ALLOWED_BOTS"]`; a listed bot is trusted as configured, without the permission
question (GitHub often has no collaborator record for an app). `Repository.allow_non_writers`
switches the permission question off for one repository (bots are still refused).
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from pipeline.github import GitHubClient
from pipeline.models import Repository
from pipeline.trackers import Tracker

WRITE_ROLES = frozenset({"admin", "maintain", "write"})
PERMISSION_CACHE_SECONDS = 300


def is_bot(login: str, user_type: str = "") -> bool:
    return user_type == "Bot" or login.lower().endswith("[bot]")


def permission_cached(client: GitHubClient, *, full_name: str, login: str) -> str:
    """The user's role on the repository, from cache or GitHub (raises GitHubError)."""
    key = f"tacx:permission:{full_name.lower()}:{login.lower()}"
    role = cache.get(key)
    if role is None:
        role = client.collaborator_permission(full_name=full_name, login=login)
        cache.set(key, role, PERMISSION_CACHE_SECONDS)
    return role


def tracker_permission_cached(tracker: Tracker, *, repository: Repository, login: str):
    """The tracker's `Permission` for the user, from cache or the tracker (raises TrackerError)."""
    key = f"tacx:permission:{tracker.kind}:{repository.pk}:{login.lower()}"
    permission = cache.get(key)
    if permission is None:
        permission = tracker.permission(repository, login)
        cache.set(key, permission, PERMISSION_CACHE_SECONDS)
    return permission


def labeler_refusal(client: GitHubClient | Tracker, *, repository: Repository, login: str, user_type: str = "") -> str:
    """Why `login` may not start a task on `repository`, or "" when they may.

    Raises GitHubError when GitHub cannot answer now: the caller retries later rather than
    refusing someone who may well be allowed.
    """
    if not login:
        return "the labeler is unknown (no labeled event found for the trigger label)"
    return write_access_refusal(client, repository=repository, login=login, user_type=user_type, did=" applied the label but")


def write_access_refusal(client: GitHubClient | Tracker, *, repository: Repository, login: str, user_type: str = "", did: str = "") -> str:
    """Why `login` (who `did` something, e.g. " applied the label but") may not act on
    `repository`: a bot not in TACX_ALLOWED_BOTS, or less than write access; "" when they may."""
    if is_bot(login, user_type):
        if login in settings.TACX["ALLOWED_BOTS"]:
            return ""
        return f"{login} is a bot account that is not in TACX_ALLOWED_BOTS"
    if repository.allow_non_writers:
        return ""
    if isinstance(client, Tracker):
        # Another tracker than GitHub's client (coordinator.tracker_*): its own roles.
        permission = tracker_permission_cached(client, repository=repository, login=login)
        if permission.allowed:
            return ""
        return f"{login}{did} has {permission.role} access to {repository.full_name}; {permission.required} is required"
    role = permission_cached(client, full_name=repository.full_name, login=login)
    if role in WRITE_ROLES:
        return ""
    return f"{login}{did} has {role} access to {repository.full_name}; write, maintain or admin is required"
