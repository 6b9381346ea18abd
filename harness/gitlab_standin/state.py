"""The GitLab stand-in's state and the calls tests use to arrange it (projects, members, issues,
labels, assignments, merge requests, pipelines) and to build webhook deliveries.

Deliveries are made from GitLab's own documented examples (tests/fixtures/gitlab-webhooks/),
with only the fields a test needs replaced, and carry the headers GitLab sends
(`X-Gitlab-Event`, `X-Gitlab-Token`, `X-Gitlab-Event-UUID`).
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "gitlab-webhooks"
LEVELS = {"guest": 10, "reporter": 20, "developer": 30, "maintainer": 40, "owner": 50}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


class State:
    def __init__(self, *, token: str, web_url: str = "https://gitlab.example"):
        self.token = token
        self.web_url = web_url
        self.lock = threading.RLock()
        self.users: dict[str, int] = {}
        self.projects: dict[str, dict] = {}  # path -> {"id", "members": {username: level}}
        self.issues: dict[str, dict[int, dict]] = {}
        self.label_events: dict[tuple[str, int], list[dict]] = {}
        self.notes: dict[tuple[str, str, int], list[dict]] = {}  # (path, "issues"|"merge_requests", iid)
        self.mrs: dict[str, dict[int, dict]] = {}
        self.statuses: list[dict] = []
        self.pipelines: dict[int, dict] = {}
        self.jobs: dict[int, dict] = {}
        self.emoji: list[dict] = []
        self.requests: list[dict] = []
        self._ids = 5000
        self._clock = datetime.now(UTC).replace(microsecond=0)

    def next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def now(self) -> str:
        """GitLab's time: the real time, at least a millisecond after the last one given (ISO 8601
        with Z), so events are ordered and never in the future."""
        with self.lock:
            self._clock = max(datetime.now(UTC), self._clock + timedelta(milliseconds=1))
            return self._clock.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self._clock.microsecond // 1000:03d}Z"

    def user(self, username: str) -> dict:
        with self.lock:
            uid = self.users.setdefault(username, len(self.users) + 1)
        return {"id": uid, "username": username, "name": username.title(), "state": "active"}

    # --- arranging ----------------------------------------------------------------------------

    def add_project(self, path: str, *, members: dict[str, str] | None = None, default_branch: str = "main") -> dict:
        with self.lock:
            project = {"id": self.next_id(), "path": path, "default_branch": default_branch, "members": {}}
            self.projects[path] = project
            self.issues[path], self.mrs[path] = {}, {}
        for name, role in (members or {}).items():
            self.set_member(path, name, role)
        return project

    def set_member(self, path: str, username: str, role: str) -> None:
        self.user(username)
        self.projects[path]["members"][username] = LEVELS[role]

    def add_issue(
        self,
        path: str,
        *,
        title: str = "An issue",
        body: str = "",
        author: str = "alice",
        labels: tuple[str, ...] = (),
        labeled_by: str = "",
    ) -> dict:
        with self.lock:
            iid = len(self.issues[path]) + 1
            issue = {
                "id": self.next_id(),
                "iid": iid,
                "project_id": self.projects[path]["id"],
                "title": title,
                "description": body,
                "state": "opened",
                "labels": [],
                "assignees": [],
                "author": self.user(author),
                "created_at": self.now(),
                "updated_at": self.now(),
                "web_url": f"{self.web_url}/{path}/-/issues/{iid}",
            }
            self.issues[path][iid] = issue
        for label in labels:
            self.label(path, iid, label, actor=labeled_by or author)
        return issue

    def label(self, path: str, iid: int, name: str, *, actor: str) -> dict:
        with self.lock:
            issue = self.issues[path][iid]
            previous = list(issue["labels"])
            if name not in issue["labels"]:
                issue["labels"].append(name)
            issue["updated_at"] = at = self.now()
            self.label_events.setdefault((path, iid), []).append(
                {
                    "id": self.next_id(),
                    "user": self.user(actor),
                    "created_at": at,
                    "resource_type": "Issue",
                    "resource_id": issue["id"],
                    "label": {"id": 1, "name": name},
                    "action": "add",
                }
            )
            return {"previous": previous, "current": list(issue["labels"])}

    def unlabel(self, path: str, iid: int, name: str, *, actor: str) -> dict:
        with self.lock:
            issue = self.issues[path][iid]
            previous = list(issue["labels"])
            issue["labels"] = [lb for lb in issue["labels"] if lb != name]
            issue["updated_at"] = at = self.now()
            self.label_events.setdefault((path, iid), []).append(
                {
                    "id": self.next_id(),
                    "user": self.user(actor),
                    "created_at": at,
                    "resource_type": "Issue",
                    "resource_id": issue["id"],
                    "label": {"id": 1, "name": name},
                    "action": "remove",
                }
            )
            return {"previous": previous, "current": list(issue["labels"])}

    def assign(self, path: str, iid: int, username: str, *, actor: str, unassign: bool = False) -> dict:
        """Assign (or unassign) the issue; GitLab records it as a system note by the actor."""
        with self.lock:
            issue = self.issues[path][iid]
            previous = [dict(a) for a in issue["assignees"]]
            if unassign:
                issue["assignees"] = [a for a in issue["assignees"] if a["username"] != username]
            elif username not in {a["username"] for a in issue["assignees"]}:
                issue["assignees"].append(self.user(username))
            issue["updated_at"] = self.now()
            verb = "unassigned" if unassign else "assigned to"
            self.add_note(path, iid, f"{verb} @{username}", author=actor, system=True)
            return {"previous": previous, "current": [dict(a) for a in issue["assignees"]]}

    def add_note(
        self,
        path: str,
        iid: int,
        body: str,
        *,
        author: str = "alice",
        mr: bool = False,
        system: bool = False,
        position: dict | None = None,
    ) -> dict:
        kind = "merge_requests" if mr else "issues"
        with self.lock:
            note = {
                "id": self.next_id(),
                "body": body,
                "author": self.user(author),
                "created_at": self.now(),
                "system": system,
                "noteable_type": "MergeRequest" if mr else "Issue",
                "noteable_iid": iid,
                "discussion_id": uuid.uuid4().hex[:40],
            }
            note["updated_at"] = note["created_at"]
            if position:
                note["type"] = "DiffNote"
                note["position"] = position
            self.notes.setdefault((path, kind, iid), []).append(note)
            return note

    def add_pipeline(self, path: str, *, sha: str, ref: str, jobs: list[dict]) -> dict:
        """A finished pipeline; `jobs`: [{"name", "status", "log", "allow_failure"}]."""
        with self.lock:
            pipeline = {
                "id": self.next_id(),
                "sha": sha,
                "ref": ref,
                "status": "failed" if any(j["status"] == "failed" for j in jobs) else "success",
                "jobs": [],
            }
            for spec in jobs:
                job = {
                    "id": self.next_id(),
                    "name": spec["name"],
                    "stage": spec.get("stage", "test"),
                    "status": spec["status"],
                    "allow_failure": spec.get("allow_failure", False),
                    "failure_reason": "script_failure" if spec["status"] == "failed" else None,
                    "web_url": f"{self.web_url}/{path}/-/jobs/0",
                    "log": spec.get("log", ""),
                }
                job["web_url"] = f"{self.web_url}/{path}/-/jobs/{job['id']}"
                self.jobs[job["id"]] = job
                pipeline["jobs"].append(job["id"])
            self.pipelines[pipeline["id"]] = pipeline
            return pipeline

    # --- webhook deliveries from the documented examples ------------------------------------

    def _project_part(self, path: str) -> dict:
        return {
            "id": self.projects[path]["id"],
            "name": path.rsplit("/", 1)[-1],
            "path_with_namespace": path,
            "web_url": f"{self.web_url}/{path}",
            "default_branch": self.projects[path]["default_branch"],
        }

    def _labels(self, names: list[str]) -> list[dict]:
        return [{"id": 200 + i, "title": n, "color": "#ffffff", "type": "ProjectLabel"} for i, n in enumerate(names)]

    def issue_hook(
        self,
        path: str,
        iid: int,
        *,
        actor: str,
        action: str = "update",
        labels: dict | None = None,
        assignees: dict | None = None,
    ) -> dict:
        issue = self.issues[path][iid]
        payload = fixture("issue_hook")
        payload["user"] = {**payload["user"], **self.user(actor)}
        payload["project"] = {**payload["project"], **self._project_part(path)}
        attrs = payload["object_attributes"]
        attrs.update(
            id=issue["id"],
            iid=iid,
            title=issue["title"],
            description=issue["description"],
            action=action,
            url=issue["web_url"],
            state="closed" if action == "close" else "opened",
            updated_at=issue["updated_at"],
            labels=self._labels(issue["labels"]),
        )
        payload["labels"] = self._labels(issue["labels"])
        payload["assignees"] = [dict(a) for a in issue["assignees"]]
        payload["changes"] = {"updated_at": payload["changes"]["updated_at"]}
        if labels is not None:
            payload["changes"]["labels"] = {
                "previous": self._labels(labels["previous"]),
                "current": self._labels(labels["current"]),
            }
        if assignees is not None:
            payload["changes"]["assignees"] = assignees
        return payload

    def note_hook(self, path: str, note: dict, *, mr: dict | None = None) -> dict:
        payload = fixture("note_hook_merge_request" if mr else "note_hook_issue")
        payload["user"] = {**payload["user"], **note["author"]}
        payload["project"] = {**payload["project"], **self._project_part(path)}
        attrs = payload["object_attributes"]
        attrs.update(
            id=note["id"],
            note=note["body"],
            created_at=note["created_at"],
            updated_at=note["updated_at"],
            discussion_id=note["discussion_id"],
        )
        if note.get("position"):
            attrs["type"] = "DiffNote"
            attrs["position"] = note["position"]
        if mr:
            payload["merge_request"].update(
                iid=mr["iid"],
                id=mr["id"],
                title=mr["title"],
                source_branch=mr["source_branch"],
                target_branch=mr["target_branch"],
            )
        else:
            issue = self.issues[path][note["noteable_iid"]]
            payload["issue"].update(iid=issue["iid"], id=issue["id"], title=issue["title"], state=issue["state"])
        return payload

    def pipeline_hook(self, path: str, pipeline: dict, *, mr: dict | None) -> dict:
        payload = fixture("pipeline_hook")
        payload["project"] = {**payload["project"], **self._project_part(path)}
        payload["object_attributes"].update(
            id=pipeline["id"], sha=pipeline["sha"], ref=pipeline["ref"], status=pipeline["status"]
        )
        if mr:
            payload["merge_request"].update(iid=mr["iid"], id=mr["id"], source_branch=mr["source_branch"])
        else:
            payload.pop("merge_request")
        payload["builds"] = [
            {**payload["builds"][0], "id": j, "name": self.jobs[j]["name"], "status": self.jobs[j]["status"]}
            for j in pipeline["jobs"]
        ]
        return payload

    def delivery(self, event: str, payload: dict, *, secret: str, event_uuid: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers GitLab sends for one webhook delivery."""
        headers = {
            "X-Gitlab-Event": event,
            "X-Gitlab-Token": secret,
            "X-Gitlab-Event-UUID": event_uuid or str(uuid.uuid4()),
            "X-Gitlab-Instance": self.web_url,
        }
        return json.dumps(copy.deepcopy(payload)).encode(), headers
