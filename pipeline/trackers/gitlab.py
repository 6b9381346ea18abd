"""GitLab issues as a tracker (REST v4 through `pipeline.gitlab_api`), and GitLab's webhooks.

A repository uses it when its forge is GitLab (`kind="gitlab"`) or its `tracker_kind` is
"gitlab"; its `full_name` is the project's `path_with_namespace`. Triggers:
- the trigger label added to an open issue (Issue Hook `changes.labels`, or opened/reopened
  carrying it); removing it or closing the issue cancels an unfinished label-started task;
- the issue assigned to TACX_GITLAB_USER (Issue Hook `changes.assignees`); unassigning it
  before the task started cancels it;
- a note (Note Hook) on the issue or on a task's merge request (with its discussion and diff
  position when it is a thread on the diff), and a failed pipeline (Pipeline Hook) of a task's
  merge request: rounds (`coordinator.gitlab_rounds`).
Who may trigger: a member with Developer (30) access or higher (`permission`).

Webhooks: `X-Gitlab-Token` must equal GITLAB_WEBHOOK_SECRET (constant-time compare); the
delivery is recorded under `X-Gitlab-Event-UUID` (the same event sent twice, or to a project
and a group hook, is acted on once).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

from django.conf import settings

from ..gitlab_api import ACCESS_LEVELS, DEVELOPER, GitLabClient
from ..models import Repository, Task
from .base import Actor, PayloadError, Permission, Tracker, TrackerEvent, TrackerIssue, WebhookRefused, register

HOOKS = ("Issue Hook", "Confidential Issue Hook", "Note Hook", "Confidential Note Hook", "Pipeline Hook")
ASSIGNED_NOTE = re.compile(r"^assigned to (.*)$", re.I)
MAX_TEXT = 1_000_000


def gitlab_repository(full_name: str) -> Repository | None:
    """The enabled repository whose GitLab issues (or code) are at project `full_name`."""
    repos = Repository.objects.filter(enabled=True, full_name__iexact=full_name)
    return (
        repos.filter(tracker_kind=Repository.Kind.GITLAB).first()
        or repos.filter(kind=Repository.Kind.GITLAB, tracker_kind="").first()
    )


def label_titles(labels: object) -> tuple[str, ...]:
    if labels is None:
        return ()
    if not isinstance(labels, list):
        raise PayloadError("labels must be a list")
    titles = []
    for label in labels:
        if not isinstance(label, dict) or not isinstance(label.get("title", ""), str):
            raise PayloadError("each label must be an object with a string title")
        titles.append(label.get("title", ""))
    return tuple(titles)


def usernames(users: object, where: str) -> set[str]:
    if users is None:
        return set()
    if not isinstance(users, list) or not all(isinstance(u, dict) and isinstance(u.get("username", ""), str) for u in users):
        raise PayloadError(f"{where} must be a list of user objects")
    return {u.get("username", "").casefold() for u in users}


def obj(payload: dict, key: str) -> dict:
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{key} must be an object")
    return value


def text_field(data: dict, key: str, where: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise PayloadError(f"{where}.{key} must be a string")
    return value


def iid_of(data: dict, where: str) -> int:
    iid = data.get("iid")
    if isinstance(iid, bool) or not isinstance(iid, int) or not 1 <= iid <= 2**31 - 1:
        raise PayloadError(f"{where}.iid must be a whole number from 1 to {2**31 - 1}")
    return iid


def issue_from_api(data: dict) -> TrackerIssue:
    """An issue from the REST API (labels are names there) or a hook (label objects)."""
    labels = data.get("labels") or []
    names = tuple(str(lb.get("title", "")) if isinstance(lb, dict) else str(lb) for lb in labels)
    return TrackerIssue(
        number=int(data["iid"]),
        title=str(data.get("title") or ""),
        body=str(data.get("description") or ""),
        url=str(data.get("web_url") or data.get("url") or ""),
        state="open" if data.get("state") in ("opened", "reopened", None) else "closed",
        labels=names,
        updated_at=str(data.get("updated_at") or ""),
    )


@register
class GitLabTracker(Tracker):
    kind = Repository.Kind.GITLAB
    label = "GitLab"

    def configured(self) -> bool:
        return bool(settings.GITLAB_TOKEN)

    def own_user(self) -> str:
        return str(settings.GITLAB_USER or "")

    def client(self, repository: Repository) -> GitLabClient:
        return GitLabClient(base_url=repository.forge_url, timeout=10.0)

    # --- polling ------------------------------------------------------------------------------

    def issues_triggered(self, repository: Repository) -> list[TrackerEvent]:
        client, name, events = self.client(repository), repository.full_name, []
        wanted = repository.trigger_label.casefold()
        for data in client.issues(name, labels=repository.trigger_label):
            adds = [
                e
                for e in client.label_events(name, int(data["iid"]))
                if e.get("action") == "add" and str((e.get("label") or {}).get("name", "")).casefold() == wanted
            ]
            latest = adds[-1] if adds else {}
            user = latest.get("user") or {}
            events.append(
                TrackerEvent(
                    action="trigger",
                    repository_id=repository.pk,
                    issue=issue_from_api(data),
                    actor=Actor(str(user.get("username") or "")),
                    at=str(latest.get("created_at") or data.get("updated_at") or ""),
                )
            )
        mine = self.own_user()
        if mine:
            for data in client.issues(name, assignee_username=mine):
                assigner, at = "", ""
                for note in client.notes(name, int(data["iid"])):
                    m = ASSIGNED_NOTE.match(str(note.get("body") or "")) if note.get("system") else None
                    if m and f"@{mine.casefold()}" in m.group(1).casefold():
                        assigner, at = str((note.get("author") or {}).get("username") or ""), str(note.get("created_at") or "")
                events.append(
                    TrackerEvent(
                        action="trigger",
                        via="assignment",
                        repository_id=repository.pk,
                        issue=issue_from_api(data),
                        actor=Actor(assigner),
                        at=at or str(data.get("updated_at") or ""),
                    )
                )
        return events

    def issue_fetch(self, repository: Repository, *, number: int = 0, key: str = "") -> TrackerIssue:
        return issue_from_api(self.client(repository).issue(repository.full_name, number))

    # --- people and comments ------------------------------------------------------------------

    def permission(self, repository: Repository, login: str) -> Permission:
        level = self.client(repository).access_level(repository.full_name, login)
        return Permission(level >= DEVELOPER, f"{ACCESS_LEVELS.get(level, 'level')} ({level})", "Developer (30) or higher")

    def comment_create(self, *, task: Task, body: str) -> str:
        return str(self.client(task.repository).note_create(task.repository.full_name, task.issue_number, body)["id"])

    def comment_update(self, *, task: Task, comment_id: str, body: str) -> None:
        self.client(task.repository).note_update(task.repository.full_name, task.issue_number, int(comment_id), body)

    def comments(self, *, task: Task) -> list[dict]:
        notes = self.client(task.repository).notes(task.repository.full_name, task.issue_number)
        return [{"id": str(n["id"]), "body": str(n.get("body") or "")} for n in notes if not n.get("system")]

    # --- webhooks -----------------------------------------------------------------------------

    def webhook_verify(self, headers: Mapping[str, str], body: bytes) -> None:
        secret = settings.GITLAB_WEBHOOK_SECRET
        given = headers.get("X-Gitlab-Token", "")
        if not secret:
            raise WebhookRefused("GITLAB_WEBHOOK_SECRET is not set")
        if not given or not hmac.compare_digest(secret.encode(), given.encode("utf-8", "replace")):
            raise WebhookRefused("missing or wrong X-Gitlab-Token")

    def webhook_delivery_id(self, headers: Mapping[str, str], payload: dict) -> str:
        uuid = headers.get("X-Gitlab-Event-UUID", "")
        if not uuid or len(uuid) > 80:
            raise PayloadError("X-Gitlab-Event-UUID is required")
        return uuid

    def webhook_parse(self, headers: Mapping[str, str], payload: dict) -> tuple[list[TrackerEvent], str]:
        hook = headers.get("X-Gitlab-Event", "")
        if hook not in HOOKS:
            return [], f"ignored: {hook or 'an event without X-Gitlab-Event'} starts nothing"
        project = obj(payload, "project")
        full_name = text_field(project, "path_with_namespace", "project")
        user = obj(payload, "user")
        actor = Actor(text_field(user, "username", "user"), "Bot" if user.get("bot") is True else "")
        attrs = obj(payload, "object_attributes")
        if not full_name:
            raise PayloadError("project.path_with_namespace is required")
        repository = gitlab_repository(full_name)
        if repository is None:
            return [], f"ignored: {full_name} is not registered (or disabled)"
        if hook.endswith("Issue Hook"):
            return self.issue_events(repository, payload, attrs, actor)
        if hook.endswith("Note Hook"):
            return self.note_events(repository, payload, attrs, actor)
        return self.pipeline_events(repository, payload, attrs, actor)

    def issue_events(self, repository: Repository, payload: dict, attrs: dict, actor: Actor) -> tuple[list[TrackerEvent], str]:
        number = iid_of(attrs, "object_attributes")
        action = text_field(attrs, "action", "object_attributes")
        labels = label_titles(attrs.get("labels") if "labels" in attrs else payload.get("labels"))
        changes = obj(payload, "changes")
        issue = TrackerIssue(
            number=number,
            title=text_field(attrs, "title", "object_attributes"),
            body=text_field(attrs, "description", "object_attributes"),
            url=text_field(attrs, "url", "object_attributes"),
            state="closed" if action == "close" or attrs.get("state") == "closed" else "open",
            labels=labels,
            updated_at=text_field(attrs, "updated_at", "object_attributes"),
        )
        at = issue.updated_at
        base = {"repository_id": repository.pk, "issue": issue, "actor": actor, "at": at}
        trigger = repository.trigger_label.casefold()
        has = trigger in {lb.casefold() for lb in labels}
        events: list[TrackerEvent] = []
        if action == "close":
            return [
                TrackerEvent(
                    action="untrigger", via="issue", reason=f"the issue was closed by {actor.login or 'someone'}", **base
                )
            ], ""
        label_change = obj(changes, "labels")
        if label_change:
            before = {lb.casefold() for lb in label_titles(label_change.get("previous"))}
            after = {lb.casefold() for lb in label_titles(label_change.get("current"))}
            if trigger in after and trigger not in before:
                events.append(TrackerEvent(action="trigger", **base))
            elif trigger in before and trigger not in after:
                events.append(
                    TrackerEvent(
                        action="untrigger", reason=f"the trigger label was removed by {actor.login or 'someone'}", **base
                    )
                )
        elif action in ("open", "reopen") and has:
            events.append(TrackerEvent(action="trigger", **base))
        mine = self.own_user().casefold()
        assignees = obj(changes, "assignees")
        if mine and assignees:
            before, after = (
                usernames(assignees.get("previous"), "changes.assignees.previous"),
                usernames(assignees.get("current"), "changes.assignees.current"),
            )
            if mine in after and mine not in before:
                events.append(TrackerEvent(action="trigger", via="assignment", **base))
            elif mine in before and mine not in after:
                events.append(TrackerEvent(action="unassign", via="assignment", **base))
        elif mine and action in ("open", "reopen") and mine in usernames(payload.get("assignees"), "assignees"):
            events.append(TrackerEvent(action="trigger", via="assignment", **base))
        return (
            events,
            ""
            if events
            else f"ignored: issue {action or 'update'} changes neither the trigger label nor the assignment to TAC-X",
        )

    def note_events(self, repository: Repository, payload: dict, attrs: dict, actor: Actor) -> tuple[list[TrackerEvent], str]:
        kind = text_field(attrs, "noteable_type", "object_attributes")
        if attrs.get("system") is True:
            return [], "ignored: a system note"
        if text_field(attrs, "action", "object_attributes") == "update":
            return [], "ignored: an edited note (its text at posting time is what counts)"
        note_id = attrs.get("id")
        if isinstance(note_id, bool) or not isinstance(note_id, int):
            raise PayloadError("object_attributes.id must be a number")
        body = text_field(attrs, "note", "object_attributes")
        detail: dict = {"id": note_id, "body": body, "url": text_field(attrs, "url", "object_attributes")}
        created = text_field(attrs, "created_at", "object_attributes")
        if kind == "Issue":
            issue = obj(payload, "issue")
            number = iid_of(issue, "issue")
            tracked = TrackerIssue(number=number, title=text_field(issue, "title", "issue"))
        elif kind == "MergeRequest":
            mr = obj(payload, "merge_request")
            number = iid_of(mr, "merge_request")
            tracked = TrackerIssue(number=number, title=text_field(mr, "title", "merge_request"))
            detail.update(mr=number, discussion_id=text_field(attrs, "discussion_id", "object_attributes"))
            position = obj(attrs, "position")
            if position:
                detail["position"] = {
                    "path": text_field(position, "new_path", "object_attributes.position")
                    or text_field(position, "old_path", "object_attributes.position"),
                    "line": position.get("new_line")
                    if isinstance(position.get("new_line"), int)
                    else position.get("old_line")
                    if isinstance(position.get("old_line"), int)
                    else None,
                }
        else:
            return [], f"ignored: a note on a {kind or 'thing'} starts nothing"
        return [
            TrackerEvent(action="comment", repository_id=repository.pk, issue=tracked, actor=actor, at=created, detail=detail)
        ], ""

    def pipeline_events(self, repository: Repository, payload: dict, attrs: dict, actor: Actor) -> tuple[list[TrackerEvent], str]:
        status = text_field(attrs, "status", "object_attributes")
        if status != "failed":
            return [], f"ignored: a pipeline that is {status or 'in an unknown state'}"
        pipeline_id, sha = attrs.get("id"), text_field(attrs, "sha", "object_attributes")
        if isinstance(pipeline_id, bool) or not isinstance(pipeline_id, int) or not re.fullmatch(r"[0-9a-f]{40}", sha):
            raise PayloadError("object_attributes.id must be a number and object_attributes.sha a commit id")
        mr = obj(payload, "merge_request")
        ref = text_field(attrs, "ref", "object_attributes")
        number = iid_of(mr, "merge_request") if mr else 0
        task = Task.objects.filter(repository=repository, pr_number=number).first() if number else None
        if task is None:
            task = (
                Task.objects.filter(repository=repository, branch=ref, pr_number__isnull=False).order_by("-id").first()
                if ref
                else None
            )
        if task is None:
            return [], "ignored: not a TAC-X merge request's pipeline"
        detail = {
            "pipeline_id": pipeline_id,
            "sha": sha,
            "ref": ref,
            "mr": task.pr_number,
            "url": text_field(attrs, "url", "object_attributes"),
        }
        return [
            TrackerEvent(
                action="pipeline",
                repository_id=repository.pk,
                issue=TrackerIssue(number=int(task.pr_number or 0), title=""),
                actor=actor,
                detail=detail,
            )
        ], ""
