"""Registering repositories and the coordinator's bookkeeping of their polls."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone

from .. import setup_cache
from ..models import Repository
from ..workflow import load_workflow_text
from .tasks import REPOSITORY_WORKFLOW_SOURCE, workflow_machine_check


def repository_add(
    *,
    full_name: str,
    kind: str = Repository.Kind.GITHUB,
    local_path: str = "",
    clone_url: str = "",
    default_branch: str | None = None,
    trigger_label: str | None = None,
    max_concurrent_tasks: int | None = None,
    memory_auto_accept: bool | None = None,
    forge_url: str = "",
    tracker_kind: str | None = None,
    tracker_settings: dict | None = None,
) -> tuple[Repository, bool]:
    """Register a repository, or update the given fields of the one with that kind and name.

    Returns (repository, created). Fields passed as None (or "") keep their current value, so
    running `add_repo` twice is harmless. `tracker_settings` are checked by
    `tracker_settings_problem` (no secrets); a ValueError says what is wrong.
    """
    if tracker_settings and (problem := tracker_settings_problem(tracker_settings)):
        raise ValueError(problem)
    fields = {
        "forge_url": forge_url.rstrip("/"),
        "tracker_kind": tracker_kind,
        "tracker_settings": tracker_settings or None,
        "local_path": local_path,
        "clone_url": clone_url,
        "default_branch": default_branch,
        "trigger_label": trigger_label,
        "max_concurrent_tasks": max_concurrent_tasks,
        "memory_auto_accept": memory_auto_accept,
    }
    given = {k: v for k, v in fields.items() if v not in (None, "")}
    repository, created = Repository.objects.get_or_create(kind=kind, full_name=full_name, defaults=given)
    if not created and given:
        for name, value in given.items():
            setattr(repository, name, value)
        repository.save(update_fields=list(given))
    return repository, created


SECRET_WORDS = ("token", "secret", "password", "apikey", "api_key", "private_key")


def tracker_settings_problem(settings_: dict) -> str:
    """Why these tracker settings cannot be stored, or "": a flat object of short strings,
    numbers or lists of strings, and no secret (a key naming one is refused: secrets come from
    the environment or files, never the database)."""
    if not isinstance(settings_, dict):
        return "tracker settings must be an object of name: value"
    for key, value in settings_.items():
        if not isinstance(key, str) or not key or len(key) > 50:
            return f"tracker setting name {key!r} must be a non-empty string of at most 50 characters"
        if any(word in key.lower().replace("-", "_") for word in SECRET_WORDS):
            return f"tracker setting {key!r} looks like a secret: secrets come from the environment or files, never the database"
        ok = isinstance(value, (str, int, float, bool)) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not ok or len(str(value)) > 2000:
            return f"tracker setting {key!r} must be a string, a number or a list of strings of at most 2000 characters"
    return ""


def repository_poll_claim(*, repository: Repository, interval: float, now=None) -> bool:
    """Claim this repository's next poll: True for exactly one caller per `interval` seconds,
    however many coordinators ask (conditional UPDATE of `polled_at`, the time the poll began)."""
    now = now or timezone.now()
    due = now - timedelta(seconds=interval)
    claimed = (
        Repository.objects.filter(pk=repository.pk)
        .filter(models.Q(polled_at__isnull=True) | models.Q(polled_at__lte=due))
        .update(polled_at=now)
    )
    if claimed:
        repository.polled_at = now
    return claimed == 1


def repository_poll_etag_set(*, repository: Repository, etag: str) -> None:
    """Remember the ETag of a complete, fully handled issue listing (next poll sends it)."""
    Repository.objects.filter(pk=repository.pk).update(poll_etag=etag[:200])
    repository.poll_etag = etag[:200]


def repository_setup_cache_clear(*, repository: Repository) -> tuple[int, list[str]]:
    """Remove the repository's setup cache (every key no setup is using right now). Returns
    (bytes freed, the keys left because a setup holds them). The next setup starts empty."""
    return setup_cache.clear(repository.pk)


def repository_workflow_set(*, repository: Repository, text: str) -> Repository:
    """Keep `text` as the repository's workflow in TAC-X (its tasks use it instead of the
    repository's .tac/workflow.yaml), or "" to use the file again. The text is validated as a
    task would load it (raises WorkflowError listing every problem) and nothing is saved then.
    Tasks already started keep the workflow they started with (their snapshot)."""
    text = (text or "").strip()
    if text:
        workflow_machine_check(load_workflow_text(text, source=REPOSITORY_WORKFLOW_SOURCE))
        text += "\n"
    Repository.objects.filter(pk=repository.pk).update(workflow_text=text)
    repository.workflow_text = text
    return repository


def repository_poll_succeeded(*, repository: Repository, now=None) -> None:
    """Record that a poll of the repository's issue source completed (shown on /health)."""
    now = now or timezone.now()
    Repository.objects.filter(pk=repository.pk).update(poll_succeeded_at=now)
    repository.poll_succeeded_at = now
