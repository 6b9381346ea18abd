"""What became of TAC-X's pull requests, as GitHub tells it: the `pull_request` webhook
(`closed`, with `merged` true or false, and `reopened`) and, as the fallback for a missed or
unconfigured webhook, the conversation poller reading `GET /repos/{o}/{r}/pulls/{n}`.

Both end in `services.pull_outcome_record`, which keeps the latest state by GitHub's own time,
so the webhook and the poll agree whatever order they arrive in (see its module).
"""

from __future__ import annotations

from datetime import datetime

from pipeline import services
from pipeline.models import Repository, Task

from .conversation import github_time as _github_time
from .lookups import repository_for, task_for_pull
from .models import WebhookDelivery

ACTIONS = ("closed", "reopened")
MAX_NUMBER = 2**31 - 1


def github_time(value: object) -> datetime | None:
    """GitHub's time, or None when it is missing or not a time (a well-formed but impossible
    date included)."""
    try:
        return _github_time(value)
    except ValueError:
        return None


def payload_problem(payload: dict) -> str | None:
    """What makes a (correctly signed) `pull_request` payload unusable, or None."""
    for key in ("repository", "pull_request", "sender"):
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            return f"{key} must be an object"
    if not isinstance(payload.get("action", ""), str):
        return "action must be a string"
    pull = payload.get("pull_request") or {}
    number = pull.get("number")
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_NUMBER:
        return f"pull_request.number must be a whole number from 1 to {MAX_NUMBER}"
    if pull.get("state") not in ("open", "closed"):
        return "pull_request.state must be open or closed"
    if not isinstance(pull.get("merged", False), bool):
        return "pull_request.merged must be true or false"
    for key in ("merged_at", "closed_at", "updated_at"):
        value = pull.get(key)
        if value is not None and (not isinstance(value, str) or github_time(value) is None):
            return f"pull_request.{key} must be a time like 2026-12-07T20:00:00Z or null"
    if not isinstance((payload.get("repository") or {}).get("full_name", ""), str):
        return "repository.full_name must be a string"
    if not isinstance((payload.get("sender") or {}).get("login", ""), str):
        return "sender.login must be a string"
    return None


def relevance(payload: dict) -> tuple[Repository | None, int | None, str]:
    """(repository, PR number, "") for a delivery about one of TAC-X's pull requests, else
    (None, None, why it is ignored). Call `payload_problem` first."""
    action = str(payload.get("action", ""))
    if action not in ACTIONS:
        return None, None, f"ignored: pull_request.{action}"
    full_name = str((payload.get("repository") or {}).get("full_name", ""))
    repository = repository_for(full_name)
    if repository is None:
        return None, None, f"ignored: {full_name or 'the repository'} is not registered (or disabled)"
    number = int(payload["pull_request"]["number"])
    if task_for_pull(repository, number) is None:
        return None, None, f"ignored: #{number} is not a pull request of a TAC-X task"
    return repository, number, ""


def payload_summary(payload: dict) -> dict:
    pull = payload.get("pull_request") or {}
    sender = payload.get("sender") or {}
    return {
        "action": payload.get("action", ""),
        "repository": (payload.get("repository") or {}).get("full_name", ""),
        "sender": {"login": sender.get("login", ""), "type": sender.get("type", "")},
        "pull": {key: pull.get(key) for key in ("number", "state", "merged", "merged_at", "closed_at", "updated_at")},
    }


def state_of(pull: dict) -> tuple[str, bool, datetime | None]:
    """(state, merged, GitHub's time of that state) of a pull request as the REST API and the
    webhook give it: merged_at for a merge, closed_at for a close, updated_at while open."""
    state = str(pull.get("state") or "")
    merged = bool(pull.get("merged")) or (state == "closed" and bool(pull.get("merged_at")))
    if merged:
        at = github_time(pull.get("merged_at")) or github_time(pull.get("closed_at"))
    elif state == "closed":
        at = github_time(pull.get("closed_at"))
    else:
        at = github_time(pull.get("updated_at"))
    return state, merged, at or github_time(pull.get("updated_at"))


def outcome_record(task: Task, pull: dict, *, source: str) -> str:
    """Record what `pull` (GitHub's pull request object, or the webhook's summary of it) says
    about `task`'s pull request; the result text for the delivery or the poller's log."""
    state, merged, at = state_of(pull)
    number = int(pull.get("number") or task.pr_number or 0)
    if at is None:
        return f"ignored: pull request #{number} carries no time for its state"
    try:
        changed = services.pull_outcome_record(task=task, number=number, state=state, merged=merged, at=at, source=source)
    except ValueError as exc:
        return f"ignored: pull request #{number}: {exc}"
    if changed:
        return f"pull request #{number}: {task.pr_outcome}"
    task.refresh_from_db(fields=["pr_outcome", "pr_number"])
    return f"duplicate: pull request #{task.pr_number} is {task.pr_outcome or 'unknown'} already (or this is older news)"


def delivery_act(delivery: WebhookDelivery) -> tuple[Task | None, str, str]:
    data = delivery.payload
    repository = repository_for(delivery.repository_full_name)
    if repository is None:
        return None, "ignored: the repository is no longer registered or is disabled", WebhookDelivery.Status.IGNORED
    pull = data.get("pull") or {}
    task = task_for_pull(repository, int(pull["number"]))
    if task is None:
        return None, f"ignored: #{pull['number']} is not a pull request of a TAC-X task", WebhookDelivery.Status.IGNORED
    return task, outcome_record(task, pull, source="webhook"), WebhookDelivery.Status.DONE
