"""A stand-in for GitHub's REST API on loopback, for the coordinator's tests and benchmark.

It follows GitHub's documented request and response shapes for the endpoints TAC-X uses:

  GET   /repos/{o}/{r}/issues?labels=&state=&per_page=&page=   issues and PRs (PRs carry a
        `pull_request` key), newest first, `Link` pagination, a weak `ETag`; `If-None-Match`
        with the current ETag answers 304 without touching the rate limit
  GET   /repos/{o}/{r}/issues/{n}/events                        labeled/unlabeled/closed events
  GET   /repos/{o}/{r}/collaborators/{user}/permission          {permission, role_name, user}
  GET   /repos/{o}/{r}/issues/{n}/comments
  POST  /repos/{o}/{r}/issues/{n}/comments                      201 with the comment
  PATCH /repos/{o}/{r}/issues/comments/{id}
  GET   /repos/{o}/{r}/pulls?head=owner:branch&state=open
  POST  /repos/{o}/{r}/pulls                                    201; 422 when an open PR exists
  PATCH /repos/{o}/{r}/pulls/{n}
  GET   /repos/{o}/{r}/pulls/{n}                                the PR; `head.sha` is the branch's
        commit in the repository's bare origin when one is set (`add_repo(origin=...)`)
  GET   /repos/{o}/{r}/pulls/{n}/reviews[/{id}[/comments]]      submitted reviews, their inline comments
  POST  /repos/{o}/{r}/issues/comments/{id}/reactions           201 new, 200 when already there
  POST  /repos/{o}/{r}/pulls/comments/{id}/reactions
  GET   /repos/{o}/{r}/commits/{sha}/check-runs                  {total_count, check_runs}
  GET   /repos/{o}/{r}/commits/{sha}/status                      combined status {state, statuses}
  GET   /repos/{o}/{r}/actions/jobs/{id}/logs                    302 to a plain-text download URL

A pull request is also an issue (its conversation comments are issue comments), as on GitHub.
`webhook(...)` builds deliveries from the real octokit example payloads with our ids and text.

Every answer but a 304 carries X-RateLimit-Limit/Remaining/Used/Reset/Resource and costs one
request of `rate_limit`; at 0 remaining GitHub's 403 "API rate limit exceeded" comes back.
`fail_next(...)` scripts an error answer (e.g. a secondary rate limit: 403 with Retry-After).
A token, when set, is required as `Authorization: Bearer` (401 "Bad credentials" otherwise).

State is in memory and inspectable: `issues`, `events`, `comments` (each with its edit
`history`), `pulls`, `requests` (method, path, query, status, if_none_match, time).
Timestamps are GitHub's: UTC, whole seconds, `YYYY-MM-DDTHH:MM:SSZ`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

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


class GitHubStandIn:
    def __init__(self, *, token: str = "", rate_limit: int = 5000, page_size_cap: int = 100):
        self.token = token
        self.rate_limit = rate_limit
        self.rate_remaining = rate_limit
        self.rate_reset = int(time.time()) + 3600
        self.page_size_cap = page_size_cap
        self.lock = threading.RLock()
        self.repos: dict[str, RepoState] = {}
        self.issues: dict[str, dict[int, dict]] = {}
        self.events: dict[str, dict[int, list[dict]]] = {}
        self.comments: dict[int, dict] = {}
        self.pulls: dict[str, dict[int, dict]] = {}
        self.reviews: dict[int, dict] = {}
        self.review_comments: dict[int, dict] = {}
        self.check_runs: dict[int, dict] = {}
        self.statuses: list[dict] = []
        self.job_logs: dict[int, str] = {}
        self.requests: list[dict] = []
        self.failures: list[ScriptedFailure] = []
        self._ids = 1000
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> GitHubStandIn:
        standin = self

        class Handler(_Handler):
            owner = standin

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-standin", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # --- arranging state -------------------------------------------------------------------------

    def next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def add_repo(self, full_name: str, *, permissions: dict[str, str] | None = None, default_role: str = "read", origin: str = "") -> RepoState:
        with self.lock:
            state = RepoState(full_name, dict(permissions or {}), default_role, origin)
            self.repos[full_name.lower()] = state
            self.issues.setdefault(full_name.lower(), {})
            self.events.setdefault(full_name.lower(), {})
            self.pulls.setdefault(full_name.lower(), {})
            return state

    def set_permission(self, full_name: str, login: str, role: str) -> None:
        with self.lock:
            self.repos[full_name.lower()].permissions[login] = role

    def add_issue(
        self,
        full_name: str,
        *,
        number: int | None = None,
        title: str = "An issue",
        body: str = "",
        author: str = "octocat",
        labels: tuple[str, ...] = (),
        labeled_by: str | None = None,
        labeler_type: str = "User",
        is_pull: bool = False,
    ) -> dict:
        """An open issue (or PR). Each label gets a `labeled` event by `labeled_by` (default:
        the author), as GitHub records for labels applied when an issue is opened."""
        key = full_name.lower()
        with self.lock:
            number = number or (max(list(self.issues[key]) + list(self.pulls[key]) + [0]) + 1)
            now = github_now()
            issue = {
                "id": self.next_id(),
                "node_id": f"I_{number}",
                "url": f"https://api.github.com/repos/{full_name}/issues/{number}",
                "repository_url": f"https://api.github.com/repos/{full_name}",
                "labels_url": f"https://api.github.com/repos/{full_name}/issues/{number}/labels{{/name}}",
                "comments_url": f"https://api.github.com/repos/{full_name}/issues/{number}/comments",
                "events_url": f"https://api.github.com/repos/{full_name}/issues/{number}/events",
                "html_url": f"https://github.com/{full_name}/{'pull' if is_pull else 'issues'}/{number}",
                "number": number,
                "state": "open",
                "state_reason": None,
                "title": title,
                "body": body,
                "user": user(author),
                "labels": [],
                "assignee": None,
                "assignees": [],
                "milestone": None,
                "locked": False,
                "comments": 0,
                "created_at": now,
                "updated_at": now,
                "closed_at": None,
                "author_association": "NONE",
            }
            if is_pull:
                issue["pull_request"] = {
                    "url": f"https://api.github.com/repos/{full_name}/pulls/{number}",
                    "html_url": f"https://github.com/{full_name}/pull/{number}",
                    "diff_url": f"https://github.com/{full_name}/pull/{number}.diff",
                    "patch_url": f"https://github.com/{full_name}/pull/{number}.patch",
                    "merged_at": None,
                }
            self.issues[key][number] = issue
            self.events[key][number] = []
            for label in labels:
                self.label(full_name, number, label, actor=labeled_by or author, actor_type=labeler_type)
            return issue

    def _event(self, full_name: str, number: int, kind: str, actor: str, actor_type: str = "User", **extra) -> dict:
        event = {
            "id": self.next_id(),
            "node_id": f"E_{self._ids}",
            "url": f"https://api.github.com/repos/{full_name}/issues/events/{self._ids}",
            "actor": user(actor, actor_type),
            "event": kind,
            "commit_id": None,
            "commit_url": None,
            "created_at": github_now(),
            "performed_via_github_app": None,
            **extra,
        }
        self.events[full_name.lower()][number].append(event)
        return event

    def label(self, full_name: str, number: int, name: str, *, actor: str, actor_type: str = "User") -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            if not any(lb["name"] == name for lb in issue["labels"]):
                issue["labels"].append({"id": self.next_id(), "node_id": "L", "url": "", "name": name, "color": "ededed", "default": False, "description": None})
            issue["updated_at"] = github_now()
            return self._event(full_name, number, "labeled", actor, actor_type, label={"name": name, "color": "ededed"})

    def unlabel(self, full_name: str, number: int, name: str, *, actor: str) -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            issue["labels"] = [lb for lb in issue["labels"] if lb["name"] != name]
            issue["updated_at"] = github_now()
            return self._event(full_name, number, "unlabeled", actor, label={"name": name, "color": "ededed"})

    def close(self, full_name: str, number: int, *, actor: str) -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            issue["state"], issue["state_reason"] = "closed", "completed"
            issue["closed_at"] = issue["updated_at"] = github_now()
            return self._event(full_name, number, "closed", actor)

    def fail_next(self, method: str, path_regex: str, *, status: int = 403, message: str = "You have exceeded a secondary rate limit.", headers: dict[str, str] | None = None, times: int = 1) -> None:
        """The next `times` requests matching answer `status` with GitHub's error shape."""
        with self.lock:
            self.failures.append(ScriptedFailure(method.upper(), re.compile(path_regex), status, message, dict(headers or {}), times))

    def add_comment(self, full_name: str, number: int, body: str, *, author: str = "alice", author_type: str = "User") -> dict:
        """A person's comment on an issue or PR conversation (as posted on GitHub)."""
        with self.lock:
            comment = self.create_comment(full_name, number, body, {}, author=user(author, author_type))
            return comment

    def edit_comment(self, comment_id: int, body: str) -> dict:
        """Edit a comment later (GitHub moves `updated_at`; whole seconds, so at least one on)."""
        with self.lock:
            comment = self.comments[comment_id]
            comment["body"] = body
            comment["updated_at"] = later_than(comment["created_at"])
            comment["history"].append(body)
            return self.public_comment(comment)

    def add_review(self, full_name: str, number: int, *, author: str, state: str = "CHANGES_REQUESTED", body: str = "", comments: tuple[tuple[str, int, str], ...] = ()) -> dict:
        """A submitted review of PR `number` with inline comments (path, line, body)."""
        with self.lock:
            pull = self.pulls[full_name.lower()][number]
            rid = self.next_id()
            now = github_now()
            sha = self.head_sha(full_name, pull["head"]["ref"])
            review = {
                "id": rid,
                "node_id": f"PRR_{rid}",
                "user": user(author),
                "body": body,
                "state": state,
                "html_url": f"https://github.com/{full_name}/pull/{number}#pullrequestreview-{rid}",
                "pull_request_url": f"https://api.github.com/repos/{full_name}/pulls/{number}",
                "author_association": "MEMBER",
                "submitted_at": now,
                "commit_id": sha,
                "_repo": full_name.lower(),
                "_pull": number,
            }
            self.reviews[rid] = review
            for path, line, text in comments:
                cid = self.next_id()
                self.review_comments[cid] = {
                    "url": f"https://api.github.com/repos/{full_name}/pulls/comments/{cid}",
                    "pull_request_review_id": rid,
                    "id": cid,
                    "node_id": f"PRRC_{cid}",
                    "diff_hunk": "@@ -1,1 +1,1 @@",
                    "path": path,
                    "position": line,
                    "original_position": line,
                    "commit_id": sha,
                    "original_commit_id": sha,
                    "user": user(author),
                    "body": text,
                    "created_at": now,
                    "updated_at": now,
                    "html_url": f"https://github.com/{full_name}/pull/{number}#discussion_r{cid}",
                    "pull_request_url": f"https://api.github.com/repos/{full_name}/pulls/{number}",
                    "author_association": "MEMBER",
                    "start_line": None,
                    "original_start_line": None,
                    "start_side": None,
                    "line": line,
                    "original_line": line,
                    "side": "RIGHT",
                    "reactions_list": [],
                    "_repo": full_name.lower(),
                    "_pull": number,
                }
            return self.public(review)

    def edit_review_comment(self, comment_id: int, body: str) -> None:
        with self.lock:
            comment = self.review_comments[comment_id]
            comment["body"] = body
            comment["updated_at"] = later_than(comment["created_at"])

    def review_comments_of(self, review_id: int) -> list[dict]:
        with self.lock:
            return [self.public(c) for c in self.review_comments.values() if c["pull_request_review_id"] == review_id]

    def add_check_run(self, full_name: str, sha: str, *, name: str, conclusion: str = "failure", log: str = "", app: str = "github-actions") -> dict:
        """A completed check run on commit `sha` (with a job log for GitHub Actions)."""
        with self.lock:
            cid = self.next_id()
            now = github_now()
            run = {
                "id": cid,
                "head_sha": sha,
                "node_id": f"CR_{cid}",
                "external_id": "",
                "url": f"https://api.github.com/repos/{full_name}/check-runs/{cid}",
                "html_url": f"https://github.com/{full_name}/actions/runs/1/job/{cid}",
                "details_url": f"https://github.com/{full_name}/actions/runs/1/job/{cid}",
                "status": "completed",
                "conclusion": conclusion,
                "started_at": now,
                "completed_at": now,
                "output": {"title": f"{name} {conclusion}", "summary": "", "text": None, "annotations_count": 0, "annotations_url": ""},
                "name": name,
                "check_suite": {"id": cid + 1},
                "app": {"id": 15368, "slug": app, "name": "GitHub Actions" if app == "github-actions" else app},
                "pull_requests": [],
                "_repo": full_name.lower(),
            }
            self.check_runs[cid] = run
            if log:
                self.job_logs[cid] = log
            return self.public(run)

    def head_sha(self, full_name: str, ref: str) -> str:
        import subprocess

        origin = self.repos[full_name.lower()].origin
        if not origin:
            return "0" * 40
        done = subprocess.run(["git", "rev-parse", f"refs/heads/{ref}"], cwd=origin, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "0" * 40

    def webhook(self, kind: str, full_name: str, *, sender: str, **fields) -> bytes:
        """A delivery body of `kind` (`issue_comment.created`, `pull_request_review.submitted`,
        `pull_request_review_comment.created`, `check_run.completed`) from the octokit example,
        with this repository, these objects and this sender."""
        with self.lock:
            if kind == "check_run.completed":
                payload = {"action": "completed", "check_run": fields["check_run"]}
            else:
                payload = json.loads(fixture_bytes(kind))
            owner, name = full_name.split("/")
            payload["repository"] = {**(payload.get("repository") or {}), "full_name": full_name, "name": name, "owner": user(owner)}
            payload["sender"] = user(sender, "Bot" if sender.endswith("[bot]") else "User")
            if kind == "issue_comment.created":
                issue = self.issues[full_name.lower()][fields["number"]]
                payload["issue"] = {**payload["issue"], **{k: v for k, v in issue.items() if not k.startswith("_")}}
                payload["comment"] = self.public_comment(self.comments[fields["comment_id"]])
            elif kind in ("pull_request_review.submitted", "pull_request_review_comment.created"):
                pull = self.pulls[full_name.lower()][fields["number"]]
                payload["pull_request"] = {**payload["pull_request"], **self.public_pull(pull)}
                payload["pull_request"]["head"] = {**payload["pull_request"]["head"], "ref": pull["head"]["ref"], "sha": self.head_sha(full_name, pull["head"]["ref"])}
                if kind == "pull_request_review.submitted":
                    review = self.public(self.reviews[fields["review_id"]])
                    review["state"] = review["state"].lower()  # webhooks spell it in lower case
                    payload["review"] = {**payload["review"], **review}
                else:
                    payload["comment"] = {**payload["comment"], **self.public(self.review_comments[fields["comment_id"]])}
            elif kind == "check_run.completed":
                run = payload["check_run"]
                pull = next(iter(p for p in self.pulls[full_name.lower()].values() if self.head_sha(full_name, p["head"]["ref"]) == run["head_sha"]), None)
                if pull is not None:
                    run["pull_requests"] = [{"number": pull["number"], "head": {"ref": pull["head"]["ref"], "sha": run["head_sha"]}, "base": pull["base"]}]
                    run["check_suite"] = {**run["check_suite"], "head_branch": pull["head"]["ref"], "head_sha": run["head_sha"]}
            return json.dumps(payload).encode()

    @staticmethod
    def public(item: dict) -> dict:
        return {k: v for k, v in item.items() if not k.startswith("_") and k not in ("history", "reactions_list")}

    # --- inspecting ------------------------------------------------------------------------------

    def comments_on(self, full_name: str, number: int) -> list[dict]:
        with self.lock:
            return [c for c in self.comments.values() if c["_repo"] == full_name.lower() and c["_issue"] == number]

    def pulls_of(self, full_name: str) -> list[dict]:
        with self.lock:
            return list(self.pulls[full_name.lower()].values())

    def requests_to(self, method: str, path_regex: str) -> list[dict]:
        pattern = re.compile(path_regex)
        with self.lock:
            return [r for r in self.requests if r["method"] == method and pattern.search(r["path"])]

    # --- answering -------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_path)
        path, query = parts.path.rstrip("/"), {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            if self.token and headers.get("authorization") != f"Bearer {self.token}":
                return 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}, {}
            for failure in self.failures:
                if failure.method == method and failure.path_pattern.search(path) and failure.times > 0:
                    failure.times -= 1
                    return failure.status, {"message": failure.message, "documentation_url": "https://docs.github.com/rest"}, dict(failure.headers)
            if self.rate_remaining <= 0:
                return 403, {"message": "API rate limit exceeded for user.", "documentation_url": "https://docs.github.com/rest"}, {}
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                return 400, {"message": "Problems parsing JSON"}, {}
            return self.route(method, path, query, headers, payload)

    def route(self, method: str, path: str, query: dict, headers: dict, payload: Any) -> tuple[int, Any, dict[str, str]]:
        if (blob := re.fullmatch(r"/_blob/job-logs/(\d+)", path)) and method == "GET":
            text = self.job_logs.get(int(blob.group(1)))
            return (200, PlainText(text), {}) if text is not None else (404, {"message": "Not Found"}, {})
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/(.*)", path)
        if not m or m.group(1).lower() not in self.repos:
            return 404, {"message": "Not Found"}, {}
        full_name, rest = m.group(1), m.group(2)
        key = full_name.lower()
        if method == "GET" and rest == "issues":
            return self.list_issues(full_name, query, headers)
        if (mm := re.fullmatch(r"issues/(\d+)/events", rest)) and method == "GET":
            number = int(mm.group(1))
            if number not in self.events[key]:
                return 404, {"message": "Not Found"}, {}
            return self.paginated(f"/repos/{full_name}/{rest}", self.events[key][number], query)
        if (mm := re.fullmatch(r"collaborators/([^/]+)/permission", rest)) and method == "GET":
            login = mm.group(1)
            role = self.repos[key].permissions.get(login, self.repos[key].default_role)
            return 200, {"permission": WRITE_ROLES.get(role, "none"), "role_name": role, "user": user(login)}, {}
        if mm := re.fullmatch(r"issues/(\d+)/comments", rest):
            number = int(mm.group(1))
            if number not in self.issues[key]:
                return 404, {"message": "Not Found"}, {}
            if method == "GET":
                found = [self.public_comment(c) for c in self.comments.values() if c["_repo"] == key and c["_issue"] == number]
                return self.paginated(f"/repos/{full_name}/{rest}", found, query)
            if method == "POST":
                if not isinstance(payload, dict) or not payload.get("body"):
                    return 422, {"message": "Validation Failed", "errors": [{"resource": "IssueComment", "code": "missing_field", "field": "body"}]}, {}
                return 201, self.create_comment(full_name, number, str(payload["body"]), headers), {}
        if mm := re.fullmatch(r"issues/comments/(\d+)", rest):
            comment = self.comments.get(int(mm.group(1)))
            if comment is None or comment["_repo"] != key:
                return 404, {"message": "Not Found"}, {}
            if method == "PATCH":
                if not isinstance(payload, dict) or not payload.get("body"):
                    return 422, {"message": "Validation Failed"}, {}
                comment["body"] = str(payload["body"])
                comment["updated_at"] = github_now()
                comment["history"].append(comment["body"])
                self.issues[key][comment["_issue"]]["updated_at"] = comment["updated_at"]
                return 200, self.public_comment(comment), {}
            if method == "GET":
                return 200, self.public_comment(comment), {}
        if (mm := re.fullmatch(r"(issues|pulls)/comments/(\d+)/reactions", rest)) and method == "POST":
            store = self.comments if mm.group(1) == "issues" else self.review_comments
            comment = store.get(int(mm.group(2)))
            if comment is None or comment["_repo"] != key:
                return 404, {"message": "Not Found"}, {}
            content = (payload or {}).get("content") if isinstance(payload, dict) else None
            if content not in ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"):
                return 422, {"message": "Validation Failed"}, {}
            reactions = comment.setdefault("reactions_list", [])
            existing = next((r for r in reactions if r["content"] == content), None)
            if existing is not None:
                return 200, existing, {}
            reaction = {"id": self.next_id(), "node_id": "REA", "user": user("tacx-bot[bot]", "Bot"), "content": content, "created_at": github_now()}
            reactions.append(reaction)
            return 201, reaction, {}
        if (mm := re.fullmatch(r"pulls/(\d+)", rest)) and method == "GET":
            pull = self.pulls[key].get(int(mm.group(1)))
            return (200, self.public_pull(pull), {}) if pull else (404, {"message": "Not Found"}, {})
        if (mm := re.fullmatch(r"pulls/(\d+)/reviews", rest)) and method == "GET":
            found = [self.public(r) for r in self.reviews.values() if r["_repo"] == key and r["_pull"] == int(mm.group(1))]
            return self.paginated(f"/repos/{full_name}/{rest}", found, query)
        if (mm := re.fullmatch(r"pulls/(\d+)/reviews/(\d+)", rest)) and method == "GET":
            review = self.reviews.get(int(mm.group(2)))
            if review is None or review["_repo"] != key:
                return 404, {"message": "Not Found"}, {}
            return 200, self.public(review), {}
        if (mm := re.fullmatch(r"pulls/(\d+)/reviews/(\d+)/comments", rest)) and method == "GET":
            found = [self.public(c) for c in self.review_comments.values() if c["_repo"] == key and c["pull_request_review_id"] == int(mm.group(2))]
            return self.paginated(f"/repos/{full_name}/{rest}", found, query)
        if (mm := re.fullmatch(r"commits/([0-9a-f]{7,40})/check-runs", rest)) and method == "GET":
            runs = [self.public(r) for r in self.check_runs.values() if r["_repo"] == key and r["head_sha"] == mm.group(1)]
            return 200, {"total_count": len(runs), "check_runs": runs}, {}
        if (mm := re.fullmatch(r"commits/([0-9a-f]{7,40})/status", rest)) and method == "GET":
            statuses = [s for s in self.statuses if s["_repo"] == key and s["sha"] == mm.group(1)]
            state = "failure" if any(s["state"] in ("failure", "error") for s in statuses) else "pending" if any(s["state"] == "pending" for s in statuses) else "success"
            return 200, {"state": state, "sha": mm.group(1), "total_count": len(statuses), "statuses": [self.public(s) for s in statuses]}, {}
        if (mm := re.fullmatch(r"actions/jobs/(\d+)/logs", rest)) and method == "GET":
            if int(mm.group(1)) not in self.job_logs:
                return 404, {"message": "Not Found"}, {}
            return 302, None, {"Location": f"{self.url}/_blob/job-logs/{mm.group(1)}"}
        if rest == "pulls":
            if method == "GET":
                return self.paginated(f"/repos/{full_name}/pulls", self.find_pulls(full_name, query), query)
            if method == "POST":
                return self.create_pull(full_name, payload)
        if (mm := re.fullmatch(r"pulls/(\d+)", rest)) and method == "PATCH":
            pull = self.pulls[key].get(int(mm.group(1)))
            if pull is None:
                return 404, {"message": "Not Found"}, {}
            for name in ("title", "body", "state", "base"):
                if isinstance(payload, dict) and name in payload:
                    pull[name] = payload[name] if name != "base" else {**pull["base"], "ref": payload[name]}
            pull["updated_at"] = github_now()
            pull["history"].append({"title": pull["title"], "body": pull["body"]})
            return 200, self.public_pull(pull), {}
        return 404, {"message": "Not Found"}, {}

    def list_issues(self, full_name: str, query: dict, headers: dict) -> tuple[int, Any, dict[str, str]]:
        key = full_name.lower()
        state = query.get("state", "open")
        wanted = [label for label in query.get("labels", "").split(",") if label]
        items = [
            issue
            for issue in self.issues[key].values()
            if (state == "all" or issue["state"] == state)
            and all(any(lb["name"].lower() == w.lower() for lb in issue["labels"]) for w in wanted)
        ]
        items.sort(key=lambda i: (i["created_at"], i["number"]), reverse=True)  # sort=created, direction=desc
        return self.paginated(f"/repos/{full_name}/issues", items, query, headers=headers, etag=True)

    def paginated(self, path: str, items: list, query: dict, *, headers: dict | None = None, etag: bool = False) -> tuple[int, Any, dict[str, str]]:
        per_page = max(1, min(self.page_size_cap, int(query.get("per_page", 30))))
        page = max(1, int(query.get("page", 1)))
        chunk = items[(page - 1) * per_page : page * per_page]
        extra: dict[str, str] = {}
        last = max(1, -(-len(items) // per_page))
        links = []
        if page < last:
            links.append(f'<{self.url}{path}?{urlencode({**query, "page": page + 1})}>; rel="next"')
            links.append(f'<{self.url}{path}?{urlencode({**query, "page": last})}>; rel="last"')
        if links:
            extra["Link"] = ", ".join(links)
        if etag:
            digest = hashlib.sha256(json.dumps(chunk, sort_keys=True).encode()).hexdigest()[:32]
            tag = f'W/"{digest}"'
            extra["ETag"] = tag
            if (headers or {}).get("if-none-match") == tag:
                return 304, None, extra
        return 200, chunk, extra

    def create_comment(self, full_name: str, number: int, body: str, headers: dict, *, author: dict | None = None) -> dict:
        cid = self.next_id()
        now = github_now()
        comment = {
            "id": cid,
            "node_id": f"IC_{cid}",
            "url": f"https://api.github.com/repos/{full_name}/issues/comments/{cid}",
            "html_url": f"https://github.com/{full_name}/issues/{number}#issuecomment-{cid}",
            "issue_url": f"https://api.github.com/repos/{full_name}/issues/{number}",
            "body": body,
            "user": author or user("tacx-bot[bot]", "Bot"),
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
            "reactions_list": [],
            "history": [body],
            "_repo": full_name.lower(),
            "_issue": number,
        }
        self.comments[cid] = comment
        issue = self.issues[full_name.lower()][number]
        issue["comments"] += 1
        issue["updated_at"] = now  # a comment updates the issue, as on GitHub
        return self.public_comment(comment)

    @staticmethod
    def public_comment(comment: dict) -> dict:
        return {k: v for k, v in comment.items() if not k.startswith("_") and k not in ("history", "reactions_list")}

    def find_pulls(self, full_name: str, query: dict) -> list[dict]:
        state = query.get("state", "open")
        head = query.get("head", "")
        owner = full_name.split("/")[0]
        found = []
        for pull in self.pulls[full_name.lower()].values():
            if state != "all" and pull["state"] != state:
                continue
            if head and head != f"{owner}:{pull['head']['ref']}":
                continue
            found.append(self.public_pull(pull))
        return found

    def create_pull(self, full_name: str, payload: Any) -> tuple[int, Any, dict[str, str]]:
        key = full_name.lower()
        if not isinstance(payload, dict):
            return 422, {"message": "Validation Failed"}, {}
        missing = [f for f in ("head", "base") if not payload.get(f)] + ([] if payload.get("title") or payload.get("issue") else ["title"])
        if missing:
            return 422, {"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "missing_field", "field": f} for f in missing]}, {}
        head = str(payload["head"]).split(":")[-1]
        owner = full_name.split("/")[0]
        for pull in self.pulls[key].values():
            if pull["state"] == "open" and pull["head"]["ref"] == head:
                return 422, {
                    "message": "Validation Failed",
                    "errors": [{"resource": "PullRequest", "code": "custom", "message": f"A pull request already exists for {owner}:{head}."}],
                }, {}
        number = max(list(self.issues[key]) + list(self.pulls[key]) + [0]) + 1
        now = github_now()
        pull = {
            "id": self.next_id(),
            "number": number,
            "state": "open",
            "title": payload.get("title", ""),
            "body": payload.get("body", ""),
            "draft": bool(payload.get("draft", False)),
            "head": {"ref": head, "label": f"{owner}:{head}"},
            "base": {"ref": payload["base"]},
            "url": f"https://api.github.com/repos/{full_name}/pulls/{number}",
            "html_url": f"https://github.com/{full_name}/pull/{number}",
            "user": user("tacx-bot[bot]", "Bot"),
            "created_at": now,
            "updated_at": now,
            "history": [{"title": payload.get("title", ""), "body": payload.get("body", "")}],
        }
        self.pulls[key][number] = pull
        # A pull request is an issue too: its conversation comments live there.
        self.issues[key][number] = {
            "id": self.next_id(), "number": number, "state": "open", "title": pull["title"], "body": pull["body"],
            "user": pull["user"], "labels": [], "comments": 0, "created_at": now, "updated_at": now,
            "html_url": pull["html_url"], "pull_request": {"url": pull["url"], "html_url": pull["html_url"]},
        }
        self.events[key][number] = []
        return 201, self.public_pull(pull), {}

    def public_pull(self, pull: dict) -> dict:
        data = {k: v for k, v in pull.items() if k != "history"}
        data["head"] = {**pull["head"], "sha": self.head_sha(data["url"].split("/repos/")[1].rsplit("/pulls/", 1)[0], pull["head"]["ref"])}
        return data

    def rate_headers(self, counted: bool) -> dict[str, str]:
        if counted and self.rate_remaining > 0:
            self.rate_remaining -= 1
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(self.rate_remaining),
            "X-RateLimit-Used": str(self.rate_limit - self.rate_remaining),
            "X-RateLimit-Reset": str(self.rate_reset),
            "X-RateLimit-Resource": "core",
        }


class PlainText(str):
    """A text/plain answer body (job logs)."""


def later_than(stamp: str) -> str:
    """Now, or one second after `stamp` when now is the same second (GitHub's whole seconds)."""
    from datetime import timedelta

    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return max(datetime.now(UTC).replace(microsecond=0), then + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Handler(BaseHTTPRequestHandler):
    owner: GitHubStandIn
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (40 ms a request on Linux).
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:  # quiet
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, data, extra = self.owner.handle(self.command, self.path, headers, body)
        with self.owner.lock:
            extra = {**extra, **self.owner.rate_headers(counted=status != 304)}
            parts = urlsplit(self.path)
            self.owner.requests.append(
                {
                    "method": self.command,
                    "path": parts.path,
                    "query": {k: v[-1] for k, v in parse_qs(parts.query).items()},
                    "status": status,
                    "if_none_match": headers.get("if-none-match", ""),
                    "time": time.time(),
                }
            )
        plain = isinstance(data, PlainText)
        raw = b"" if status in (204, 304) or data is None else data.encode() if plain else json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if plain else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if raw:
            self.wfile.write(raw)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve


# --- pytest fixtures and helpers shared by the coordinator's tests ------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "github-webhooks"
WEBHOOK_SECRET = "test-webhook-secret"
TOKEN = "ghp_standinTokenForTests0123456789"


def command_workflow(*, planning: str | None = None, building: str | None = None, reviewing: str | None = None, stages: tuple[str, ...] = ("planning", "building", "reviewing", "pr_creation"), timeout: int = 60) -> str:
    """A `.tac/workflow.yaml` whose agent stages run small Python scripts (the `command`
    provider), so tests need no agent CLI: the planner writes plan.md, the builder changes a
    file, the reviewer approves."""
    import sys

    scripts = {
        "planning": planning or "import pathlib; pathlib.Path('plan.md').write_text('# Plan\\n\\nAdd CHANGES.md.\\n'); print('plan written')",
        "building": building or "import pathlib; pathlib.Path('CHANGES.md').write_text('built by the test agent\\n'); print('built')",
        "reviewing": reviewing or "print('Looks good.'); print('VERDICT: APPROVE')",
    }
    lines = ["version: 1", "stages:"]
    for name in stages:
        lines.append(f"  - name: {name}")
        if name == "pr_creation":
            continue
        lines += [
            "    provider: command",
            f"    timeout: {timeout}",
            "    max_attempts: 3",
            "    options:",
            f"      argv: {json.dumps([sys.executable, '-c', scripts[name]])}",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def standin(settings):
    """A running stand-in with one repository, octo/sample, and a cast of users: alice
    (write), mo (maintain), ada (admin), tom (triage), rita (read)."""
    from django.core.cache import cache

    server = GitHubStandIn(token=TOKEN).start()
    server.add_repo("octo/sample", permissions={"alice": "write", "mo": "maintain", "ada": "admin", "tom": "triage", "rita": "read"})
    settings.GITHUB_API_URL = server.url
    settings.GITHUB_TOKEN = TOKEN
    settings.GITHUB_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.TACX = {**settings.TACX, "POLL_INTERVAL": 0.0, "DASHBOARD_URL": "https://tacx.example"}
    cache.clear()
    yield server
    server.stop()
    cache.clear()


@pytest.fixture
def github_repo(db, standin, tmp_path):
    """octo/sample registered as a GitHub repository whose clone URL is a bare repository on
    disk (branches are pushed there) and whose workflow runs the command-provider scripts."""
    from conftest import make_origin_and_clone

    from pipeline.models import Repository

    files = {"README.md": "# sample\n", "greeter.py": "def greet(name):\n    return f'Hello {name}'\n", ".tac/workflow.yaml": command_workflow()}
    origin, _clone = make_origin_and_clone(tmp_path, "sample", files)
    return Repository.objects.create(
        kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=str(origin), default_branch="main", trigger_label="rpi-auto"
    )


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    import hashlib as _hashlib
    import hmac as _hmac

    return "sha256=" + _hmac.new(secret.encode(), body, _hashlib.sha256).hexdigest()


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()
