"""A stand-in for GitHub's REST API on loopback, for the coordinator's tests, the benchmarks and
`manage.py demo --github` (no GitHub account needed).

It follows GitHub's documented request and response shapes for the endpoints TAC-X uses:

  GET   /repos/{o}/{r}/issues?labels=&assignee=&state=&per_page=&page=   issues and PRs (PRs carry a
        `pull_request` key), newest first, `Link` pagination, a weak `ETag`; `If-None-Match`
        with the current ETag answers 304 without touching the rate limit
  GET   /repos/{o}/{r}/issues/{n}/events                        labeled/unlabeled/closed events
  GET   /repos/{o}/{r}/collaborators/{user}/permission          {permission, role_name, user}
  GET   /repos/{o}/{r}/issues/{n}/comments
  POST  /repos/{o}/{r}/issues/{n}/comments                      201 with the comment
  PATCH /repos/{o}/{r}/issues/comments/{id}
  GET   /repos/{o}/{r}/pulls?head=owner:branch&state=open
  POST  /repos/{o}/{r}/pulls                                    201; 422 when an open PR exists
  PATCH /repos/{o}/{r}/pulls/{n}                                `state: closed` closes it (`closed_at`)
  GET   /repos/{o}/{r}/pulls/{n}/reviews                        reviews added with `add_review`
  POST  /repos/{o}/{r}/check-runs                               GitHub App identity only (403 else)
  PATCH /repos/{o}/{r}/check-runs/{id}
  GET   /repos/{o}/{r}/commits/{ref}/check-runs                 {total_count, check_runs}
  POST  /repos/{o}/{r}/statuses/{sha}                           commit statuses (either identity)
  GET   /repos/{o}/{r}/commits/{ref}/statuses

GitHub App (`app_id` + `app_public_key`): `GET /repos/{o}/{r}/installation` and
`POST /app/installations/{id}/access_tokens` need an App JWT, verified like GitHub does: RS256
signature with the App's public key, `iss` the App id, `iat` not in the future, `exp` not past
and at most 10 minutes ahead. Installation tokens (`ghs_…`, `token_lifetime` seconds) are
accepted for the installation's repositories until they expire (401 "Bad credentials" after);
`expire_installation_tokens()` ends them early. `clock` (default time.time) can be pinned.

Git over HTTP (`git_root`): `/git/{owner}/{name}.git/...` is served by the real `git
http-backend` (clone, fetch, push) from bare repositories under `git_root`, with GitHub's rule
for credentials: HTTP Basic `x-access-token:<token>` (an unexpired installation token of the
repository's installation, or the personal token); 401 with `WWW-Authenticate` otherwise.
  GET   /repos/{o}/{r}/pulls/{n}                                the PR; `head.sha` is the branch's
        commit in the repository's bare origin when one is set (`add_repo(origin=...)`)
  GET   /repos/{o}/{r}/pulls/{n}/reviews[/{id}[/comments]]      submitted reviews, their inline comments
  POST  /repos/{o}/{r}/issues/comments/{id}/reactions           201 new, 200 when already there
  POST  /repos/{o}/{r}/pulls/comments/{id}/reactions
  GET   /repos/{o}/{r}/commits/{sha}/check-runs                  {total_count, check_runs}, `Link` pages
  GET   /repos/{o}/{r}/check-suites/{id}/check-runs              the same, for one check suite
  GET   /repos/{o}/{r}/commits/{sha}/status                      combined status {state, statuses,
        total_count}; `statuses` paged by `per_page`/`page` with `Link`, `state` over all of them
  GET   /repos/{o}/{r}/actions/jobs/{id}/logs                    302 to a plain-text download URL on
        another host (a second server on 127.0.0.2, `blob_url`), which needs no credentials
  GET   /repos/{o}/{r}/pulls/{n}/comments                        the PR's inline review comments
  POST  /repos/{o}/{r}/pulls/{n}/comments/{id}/replies           201 with the reply (a review comment
        with `in_reply_to_id`); 404 for an unknown comment, 422 when `id` is itself a reply

A pull request is also an issue (its conversation comments are issue comments), as on GitHub.
`webhook(...)` builds deliveries from the real octokit example payloads with our ids and text.
`close_pull(..., merge=True|False)` and `reopen_pull(...)` do what a person does on GitHub; the
PR then shows `state`, `merged`, `merged_at`, `closed_at` as GitHub's `GET .../pulls/{n}` does,
and `webhook("pull_request.closed" | "pull_request.reopened", ...)` is the matching delivery.

Every answer but a 304 carries X-RateLimit-Limit/Remaining/Used/Reset/Resource and costs one
request of `rate_limit`; at 0 remaining GitHub's 403 "API rate limit exceeded" comes back.
`fail_next(...)` scripts an error answer (e.g. a secondary rate limit: 403 with Retry-After).
A token, when set, is required as `Authorization: Bearer` (401 "Bad credentials" otherwise).

State is in memory and inspectable: `issues`, `events`, `comments` (each with its edit
`history`), `pulls`, `requests` (method, path, query, status, if_none_match, authorization,
host, time).
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

from harness.modelserver.server import read_body

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
    def __init__(
        self,
        *,
        token: str = "",
        rate_limit: int = 5000,
        page_size_cap: int = 100,
        app_id: int | None = None,
        app_public_key: str = "",
        token_lifetime: int = 3600,
        clock=time.time,
        git_root: str | Path | None = None,
    ):
        self.token = token
        self.git_root = Path(git_root) if git_root else None
        self.git_requests: list[dict] = []
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.installations: dict[int, dict] = {}  # id -> {"account": login, "repos": {lower names}}
        self.installation_tokens: dict[str, dict] = {}  # token -> {"installation": id, "expires_at": epoch}
        self.jwts_seen = 0
        self._local = threading.local()  # the identity of the request this thread answers
        self.check_runs: dict[int, dict] = {}
        self.statuses: list[dict] = []
        self.reviews: dict[tuple[str, int], list[dict]] = {}
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
        self.review_index: dict[int, dict] = {}  # review id -> review (with its pull request)
        self.review_comments: dict[int, dict] = {}
        self.job_logs: dict[int, str] = {}
        self.requests: list[dict] = []
        self.failures: list[ScriptedFailure] = []
        self._ids = 1000
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        # Job logs are downloaded from another host, as on GitHub (its blob storage).
        self.blob_server: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> GitHubStandIn:
        standin = self

        class Handler(_Handler):
            owner = standin

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-standin", daemon=True)
        self.thread.start()
        self.blob_server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.blob_server.daemon_threads = True
        threading.Thread(target=self.blob_server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-standin-blobs", daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self.server, self.blob_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        self.server = self.blob_server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def blob_url(self) -> str:
        assert self.blob_server is not None
        host, port = self.blob_server.server_address[:2]
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

    def assign(self, full_name: str, number: int, login: str, *, actor: str, actor_type: str = "User") -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            if not any(a["login"] == login for a in issue["assignees"]):
                issue["assignees"].append(user(login))
            issue["assignee"] = issue["assignees"][0]
            issue["updated_at"] = github_now()
            return self._event(full_name, number, "assigned", actor, actor_type, assignee=user(login))

    def unassign(self, full_name: str, number: int, login: str, *, actor: str) -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            issue["assignees"] = [a for a in issue["assignees"] if a["login"] != login]
            issue["assignee"] = issue["assignees"][0] if issue["assignees"] else None
            issue["updated_at"] = github_now()
            return self._event(full_name, number, "unassigned", actor, assignee=user(login))

    def close(self, full_name: str, number: int, *, actor: str) -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            issue["state"], issue["state_reason"] = "closed", "completed"
            issue["closed_at"] = issue["updated_at"] = github_now()
            return self._event(full_name, number, "closed", actor)

    def close_pull(self, full_name: str, number: int, *, actor: str, merge: bool = False, at: str | None = None) -> dict:
        """Close pull request `number`, merged or not, as a person on GitHub would (`at`: GitHub's
        time of it, default now). Its issue closes too; `merged`, `merged_at`, `merged_by`,
        `merge_commit_sha` and `closed_at` are set as GitHub sets them."""
        with self.lock:
            pull = self.pulls[full_name.lower()][number]
            if pull.get("merged"):
                raise ValueError(f"#{number} is merged already")
            now = at or github_now()
            pull["state"], pull["closed_at"], pull["updated_at"] = "closed", now, now
            if merge:
                pull["merged"], pull["merged_at"], pull["merged_by"] = True, now, user(actor)
                pull["merge_commit_sha"] = hashlib.sha1(f"{full_name}#{number}".encode()).hexdigest()
            issue = self.issues[full_name.lower()][number]
            issue["state"], issue["closed_at"], issue["updated_at"] = "closed", now, now
            self._event(full_name, number, "merged" if merge else "closed", actor)
            return self.public_pull(pull)

    def reopen_pull(self, full_name: str, number: int, *, actor: str, at: str | None = None) -> dict:
        """Reopen a pull request closed without merging (GitHub refuses to reopen a merged one)."""
        with self.lock:
            pull = self.pulls[full_name.lower()][number]
            if pull.get("merged"):
                raise ValueError(f"#{number} is merged: GitHub cannot reopen it")
            now = at or github_now()
            pull["state"], pull["closed_at"], pull["updated_at"] = "open", None, now
            issue = self.issues[full_name.lower()][number]
            issue["state"], issue["closed_at"], issue["updated_at"] = "open", None, now
            self._event(full_name, number, "reopened", actor)
            return self.public_pull(pull)

    def add_installation(self, installation_id: int, *, account: str, repos: tuple[str, ...]) -> None:
        with self.lock:
            self.installations[installation_id] = {"account": account, "repos": {r.lower() for r in repos}}

    def expire_installation_tokens(self) -> None:
        with self.lock:
            for info in self.installation_tokens.values():
                info["expires_at"] = self.clock() - 1

    def add_review(self, full_name: str, number: int, *, login: str, state: str, commit_id: str, kind: str = "User") -> dict:
        with self.lock:
            review = {
                "id": self.next_id(),
                "user": user(login, kind),
                "body": "",
                "state": state,
                "commit_id": commit_id,
                "submitted_at": github_now(),
                "author_association": "MEMBER",
            }
            self.reviews.setdefault((full_name.lower(), number), []).append(review)
            return review

    def checks_on(self, full_name: str, sha: str | None = None) -> list[dict]:
        with self.lock:
            return [c for c in self.check_runs.values() if c["_repo"] == full_name.lower() and (sha is None or c["head_sha"] == sha)]

    def statuses_on(self, full_name: str, sha: str | None = None) -> list[dict]:
        with self.lock:
            return [st for st in self.statuses if st["_repo"] == full_name.lower() and (sha is None or st["_sha"] == sha)]

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

    def submit_review(self, full_name: str, number: int, *, author: str, state: str = "CHANGES_REQUESTED", body: str = "", comments: tuple[tuple[str, int, str], ...] = ()) -> dict:
        """A submitted review of PR `number` with a body and inline comments (path, line, body)."""
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
            self.review_index[rid] = review
            self.reviews.setdefault((full_name.lower(), number), []).append(self.public(review))
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

    def reply_to_review_comment(self, full_name: str, number: int, comment_id: int, payload: Any) -> tuple[int, Any, dict[str, str]]:
        """GitHub's "Create a reply for a review comment": a new review comment in the thread of
        a top-level one (replies to replies are refused), on the same path and line."""
        key = full_name.lower()
        parent = self.review_comments.get(comment_id)
        if parent is None or parent["_repo"] != key or parent["_pull"] != number:
            return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest/pulls/comments#create-a-reply-for-a-review-comment"}, {}
        if parent.get("in_reply_to_id"):
            return 422, {"message": "Validation Failed", "errors": [{"resource": "PullRequestReviewComment", "code": "invalid", "field": "in_reply_to_id"}]}, {}
        if not isinstance(payload, dict) or not payload.get("body"):
            return 422, {"message": "Validation Failed", "errors": [{"resource": "PullRequestReviewComment", "code": "missing_field", "field": "body"}]}, {}
        cid, rid, now = self.next_id(), self.next_id(), github_now()
        reply = {
            **{k: v for k, v in parent.items() if k not in ("reactions_list",)},
            "url": f"https://api.github.com/repos/{full_name}/pulls/comments/{cid}",
            "id": cid,
            "node_id": f"PRRC_{cid}",
            "pull_request_review_id": rid,
            "in_reply_to_id": comment_id,
            "user": user("tacx-bot[bot]", "Bot") if self._local.identity.startswith("installation:") else user("tacx-bot"),
            "body": str(payload["body"]),
            "created_at": now,
            "updated_at": now,
            "html_url": f"https://github.com/{full_name}/pull/{number}#discussion_r{cid}",
            "author_association": "NONE",
            "reactions_list": [],
        }
        self.review_comments[cid] = reply
        return 201, self.public(reply), {}

    def replies_to(self, comment_id: int) -> list[dict]:
        with self.lock:
            return [self.public(c) for c in self.review_comments.values() if c.get("in_reply_to_id") == comment_id]

    def edit_review_comment(self, comment_id: int, body: str) -> None:
        with self.lock:
            comment = self.review_comments[comment_id]
            comment["body"] = body
            comment["updated_at"] = later_than(comment["created_at"])

    def review_comments_of(self, review_id: int) -> list[dict]:
        with self.lock:
            return [self.public(c) for c in self.review_comments.values() if c["pull_request_review_id"] == review_id]

    def add_check_run(self, full_name: str, sha: str, *, name: str, conclusion: str = "failure", log: str = "", app: str = "github-actions", suite: int | None = None) -> dict:
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
                "check_suite": {"id": suite if suite is not None else cid + 1},
                "app": {"id": 15368, "slug": app, "name": "GitHub Actions" if app == "github-actions" else app},
                "pull_requests": [],
                "_repo": full_name.lower(),
                "history": [],
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
        `pull_request_review_comment.created`, `check_run.completed`, `pull_request.closed`,
        `pull_request.reopened`) from the octokit example, with this repository, these objects
        and this sender."""
        with self.lock:
            if kind == "check_run.completed":
                payload = {"action": "completed", "check_run": fields["check_run"]}
            elif kind in ("pull_request.closed", "pull_request.reopened"):
                # GitHub's `pull_request` payload: action, number, the pull request as the REST
                # API shows it (merged, merged_at, closed_at, ...), repository, sender. The
                # octokit example's pull request object is the base, as for the review events.
                example = json.loads(fixture_bytes("pull_request_review.submitted"))
                pull = self.pulls[full_name.lower()][fields["number"]]
                payload = {"action": kind.split(".")[1], "number": pull["number"], "repository": example["repository"]}
                payload["pull_request"] = {**example["pull_request"], "merged": False, "merged_by": None, **self.public_pull(pull)}
                payload["pull_request"]["head"] = {**example["pull_request"]["head"], "ref": pull["head"]["ref"], "sha": self.head_sha(full_name, pull["head"]["ref"])}
                payload["pull_request"]["base"] = {**example["pull_request"]["base"], "ref": pull["base"]["ref"]}
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
                    review = self.public(self.review_index[fields["review_id"]])
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
        on_blob_host = self.blob_server is not None and headers.get("host", "") == self.blob_url.removeprefix("http://")
        if on_blob_host or path.startswith("/_blob/"):
            # The download host serves signed URLs only, and needs (and wants) no credentials.
            blob = re.fullmatch(r"/_blob/job-logs/(\d+)", path)
            if not (on_blob_host and blob and method == "GET"):
                return 404, {"message": "Not Found"}, {}
            with self.lock:
                text = self.job_logs.get(int(blob.group(1)))
            return (200, PlainText(text), {}) if text is not None else (404, {"message": "Not Found"}, {})
        with self.lock:
            auth = headers.get("authorization", "")
            self._local.identity = ""
            if path.startswith("/app/") or re.fullmatch(r"/repos/[^/]+/[^/]+/installation", path):
                problem = self.verify_jwt(auth)
                if problem:
                    return 401, {"message": problem, "documentation_url": "https://docs.github.com/rest"}, {}
                self._local.identity = "jwt"
            elif self.token or self.app_id is not None:
                identity = self.authenticate(auth, path)
                if identity is None:
                    return 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}, {}
                if identity == "forbidden":
                    return 403, {"message": "Resource not accessible by integration", "documentation_url": "https://docs.github.com/rest"}, {}
                self._local.identity = identity
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

    # --- git over HTTP --------------------------------------------------------------------------

    def handle_git(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        import base64
        import subprocess

        parts = urlsplit(raw_path)
        m = re.fullmatch(r"/git/([^/]+)/([^/]+?)(?:\.git)?(/.*)", parts.path)
        if self.git_root is None or not m:
            return 404, {}, b"Not Found"
        owner, name, rest = m.group(1), m.group(2), m.group(3)
        auth = headers.get("authorization", "")
        identity = None
        if auth.startswith("Basic "):
            try:
                login, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                login, secret = "", ""
            with self.lock:
                identity = self.authenticate(f"Bearer {secret}", f"/repos/{owner}/{name}") if login == "x-access-token" else None
        with self.lock:
            self.git_requests.append({"method": method, "path": parts.path, "query": parts.query, "identity": identity or "", "authorization": auth})
        if identity is None or identity == "forbidden":
            return 401, {"WWW-Authenticate": 'Basic realm="GitHub"'}, b"Invalid username or token."
        repo_dir = next((p for p in (self.git_root / owner / name, self.git_root / owner / f"{name}.git") if p.is_dir()), None)
        if repo_dir is None:
            return 404, {}, b"Repository not found."
        env = {
            "PATH": "/usr/bin:/bin",
            "GIT_PROJECT_ROOT": str(repo_dir.parent),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{repo_dir.name}{rest}",
            "QUERY_STRING": parts.query,
            "REQUEST_METHOD": method,
            "CONTENT_TYPE": headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": identity,  # an authenticated user may push (http.receivepack)
            "REMOTE_ADDR": "127.0.0.1",
        }
        if headers.get("content-encoding"):
            env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]
        if headers.get("git-protocol"):
            env["GIT_PROTOCOL"] = headers["git-protocol"]
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _ and b"\n\n" in proc.stdout:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status, out_headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                out_headers[key.strip()] = value.strip()
        return status, out_headers, payload

    # --- the GitHub App ---------------------------------------------------------------------------

    def verify_jwt(self, auth: str) -> str:
        """"" when `auth` carries a valid App JWT, else GitHub's message."""
        import jwt

        if self.app_id is None or not auth.startswith("Bearer "):
            return "A JSON web token could not be decoded"
        self.jwts_seen += 1
        try:
            claims = jwt.decode(
                auth[len("Bearer ") :],
                self.app_public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return "A JSON web token could not be decoded"
        now = self.clock()
        if str(claims["iss"]) != str(self.app_id):
            return "Integration not found"
        if claims["iat"] > now + 5:
            return "'Issued at' claim ('iat') must be an Integer representing a time in the past"
        if claims["exp"] <= now:
            return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
        if claims["exp"] > now + 600 + 5:
            return "'Expiration time' claim ('exp') is too far in the future"
        return ""

    def authenticate(self, auth: str, path: str) -> str | None:
        """"token", "installation:<id>", "forbidden" (a token of another installation), or
        None (bad or expired credentials)."""
        if self.token and auth == f"Bearer {self.token}":
            return "token"
        if not auth.startswith(("Bearer ", "token ")):
            return None
        info = self.installation_tokens.get(auth.split(" ", 1)[1])
        if info is None or info["expires_at"] <= self.clock():
            return None
        m = re.match(r"/repos/([^/]+/[^/]+)", path)
        if m and m.group(1).lower() not in self.installations[info["installation"]]["repos"]:
            return "forbidden"
        return f"installation:{info['installation']}"

    def route_app(self, method: str, path: str) -> tuple[int, Any, dict[str, str]] | None:
        if (m := re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)) and method == "POST":
            installation = int(m.group(1))
            if installation not in self.installations:
                return 404, {"message": "Not Found"}, {}
            import secrets

            token = "ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36]
            expires_at = int(self.clock()) + self.token_lifetime
            self.installation_tokens[token] = {"installation": installation, "expires_at": expires_at}
            return 201, {
                "token": token,
                "expires_at": datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": {"checks": "write", "contents": "write", "issues": "write", "pull_requests": "write", "statuses": "write"},
                "repository_selection": "selected",
            }, {}
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/installation", path):
            for installation, info in self.installations.items():
                if m.group(1).lower() in info["repos"]:
                    return 200, {
                        "id": installation,
                        "account": user(info["account"], "Organization"),
                        "app_id": self.app_id,
                        "app_slug": "tac-x",
                        "target_type": "Organization",
                        "repository_selection": "selected",
                        "access_tokens_url": f"https://api.github.com/app/installations/{installation}/access_tokens",
                        "repositories_url": "https://api.github.com/installation/repositories",
                        "html_url": f"https://github.com/organizations/{info['account']}/settings/installations/{installation}",
                        "permissions": {"checks": "write", "contents": "write", "issues": "write", "pull_requests": "write", "statuses": "write"},
                        "events": ["issues", "issue_comment", "pull_request", "pull_request_review", "check_run"],
                        "created_at": github_now(),
                        "updated_at": github_now(),
                    }, {}
            return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app"}, {}
        return None

    # --- checks and statuses ----------------------------------------------------------------------

    def route_checks(self, method: str, full_name: str, rest: str, query: dict, payload: Any) -> tuple[int, Any, dict[str, str]] | None:
        key = full_name.lower()
        if rest == "check-runs" and method == "POST":
            if not self._local.identity.startswith("installation:"):
                return 403, {"message": "You must authenticate via a GitHub App.", "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run"}, {}
            if not isinstance(payload, dict) or not payload.get("name") or not re.fullmatch(r"[0-9a-f]{40}", str(payload.get("head_sha", ""))):
                return 422, {"message": "Validation Failed", "errors": [{"resource": "CheckRun", "code": "invalid", "field": "head_sha"}]}, {}
            run = {"id": self.next_id(), "head_sha": payload["head_sha"], "name": payload["name"], "status": "queued", "conclusion": None,
                   "started_at": None, "completed_at": None, "output": {"title": None, "summary": None, "text": None, "annotations_count": 0},
                   "details_url": None, "external_id": None, "app": {"id": self.app_id, "slug": "tac-x"}, "_repo": key, "history": []}
            problem = self.apply_check(run, payload)
            if problem:
                return 422, {"message": problem}, {}
            run["html_url"] = f"https://github.com/{full_name}/runs/{run['id']}"
            self.check_runs[run["id"]] = run
            return 201, self.public_check(run), {}
        if (m := re.fullmatch(r"check-runs/(\d+)", rest)) and method == "PATCH":
            run = self.check_runs.get(int(m.group(1)))
            if run is None or run["_repo"] != key:
                return 404, {"message": "Not Found"}, {}
            if not self._local.identity.startswith("installation:"):
                return 403, {"message": "You must authenticate via a GitHub App."}, {}
            problem = self.apply_check(run, payload if isinstance(payload, dict) else {})
            if problem:
                return 422, {"message": problem}, {}
            return 200, self.public_check(run), {}
        if (m := re.fullmatch(r"commits/([^/]+)/check-runs", rest)) and method == "GET":
            found = [self.public_check(c) for c in self.check_runs.values() if c["_repo"] == key and c["head_sha"] == m.group(1)]
            return self.paginated_wrapped(f"/repos/{full_name}/{rest}", "check_runs", found, query)
        if (m := re.fullmatch(r"check-suites/(\d+)/check-runs", rest)) and method == "GET":
            found = [self.public_check(c) for c in self.check_runs.values() if c["_repo"] == key and (c.get("check_suite") or {}).get("id") == int(m.group(1))]
            return self.paginated_wrapped(f"/repos/{full_name}/{rest}", "check_runs", found, query)
        if (m := re.fullmatch(r"statuses/([0-9a-f]{40})", rest)) and method == "POST":
            if not isinstance(payload, dict) or payload.get("state") not in ("error", "failure", "pending", "success"):
                return 422, {"message": "Validation Failed", "errors": [{"resource": "Status", "code": "custom", "field": "state"}]}, {}
            if len(str(payload.get("description") or "")) > 140:
                return 422, {"message": "Validation Failed", "errors": [{"resource": "Status", "code": "custom", "field": "description", "message": "description is too long (maximum is 140 characters)"}]}, {}
            status = {"id": self.next_id(), "state": payload["state"], "description": payload.get("description"), "target_url": payload.get("target_url"),
                      "context": payload.get("context") or "default", "created_at": github_now(), "updated_at": github_now(),
                      "creator": user("tacx-bot[bot]", "Bot"), "_repo": key, "_sha": m.group(1)}
            self.statuses.append(status)
            return 201, {k: v for k, v in status.items() if not k.startswith("_")}, {}
        if (m := re.fullmatch(r"commits/([^/]+)/statuses", rest)) and method == "GET":
            found = [{k: v for k, v in st.items() if not k.startswith("_")} for st in reversed(self.statuses) if st["_repo"] == key and st["_sha"] == m.group(1)]
            return 200, found, {}
        if (m := re.fullmatch(r"pulls/(\d+)/reviews", rest)) and method == "GET":
            return self.paginated(f"/repos/{full_name}/{rest}", list(self.reviews.get((key, int(m.group(1))), [])), query)
        return None

    @staticmethod
    def apply_check(run: dict, payload: dict) -> str:
        for name in ("name", "details_url", "external_id", "started_at", "completed_at"):
            if name in payload:
                run[name] = payload[name]
        if "status" in payload:
            if payload["status"] not in ("queued", "in_progress", "completed"):
                return f"Invalid status {payload['status']!r}"
            run["status"] = payload["status"]
        if "conclusion" in payload:
            if payload["conclusion"] not in ("action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out"):
                return f"Invalid conclusion {payload['conclusion']!r}"
            run["conclusion"], run["status"] = payload["conclusion"], "completed"
        if run["status"] == "completed" and not run["conclusion"]:
            return "Conclusion is required when status is completed"
        if "output" in payload:
            output = payload["output"] or {}
            if not output.get("title") or not output.get("summary"):
                return "output needs title and summary"
            if len(output["summary"]) > 65535:
                return "output.summary is too long (maximum is 65535 characters)"
            run["output"] = {"title": output["title"], "summary": output["summary"], "text": output.get("text"), "annotations_count": 0}
        run["history"].append((run["status"], run["conclusion"]))
        return ""

    @staticmethod
    def public_check(run: dict) -> dict:
        return {k: v for k, v in run.items() if not k.startswith("_") and k != "history"}

    def route(self, method: str, path: str, query: dict, headers: dict, payload: Any) -> tuple[int, Any, dict[str, str]]:
        if (answer := self.route_app(method, path)) is not None:
            return answer
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/(.*)", path)
        if not m or m.group(1).lower() not in self.repos:
            return 404, {"message": "Not Found"}, {}
        full_name, rest = m.group(1), m.group(2)
        key = full_name.lower()
        if (answer := self.route_checks(method, full_name, rest, query, payload)) is not None:
            return answer
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
        if (mm := re.fullmatch(r"pulls/(\d+)/reviews/(\d+)", rest)) and method == "GET":
            review = self.review_index.get(int(mm.group(2)))
            if review is None or review["_repo"] != key:
                return 404, {"message": "Not Found"}, {}
            return 200, self.public(review), {}
        if (mm := re.fullmatch(r"pulls/(\d+)/reviews/(\d+)/comments", rest)) and method == "GET":
            found = [self.public(c) for c in self.review_comments.values() if c["_repo"] == key and c["pull_request_review_id"] == int(mm.group(2))]
            return self.paginated(f"/repos/{full_name}/{rest}", found, query)
        if (mm := re.fullmatch(r"pulls/(\d+)/comments", rest)) and method == "GET":
            found = [self.public(c) for c in self.review_comments.values() if c["_repo"] == key and c["_pull"] == int(mm.group(1))]
            return self.paginated(f"/repos/{full_name}/{rest}", found, query)
        if (mm := re.fullmatch(r"pulls/(\d+)/comments/(\d+)/replies", rest)) and method == "POST":
            return self.reply_to_review_comment(full_name, int(mm.group(1)), int(mm.group(2)), payload)
        if (mm := re.fullmatch(r"commits/([0-9a-f]{7,40})/status", rest)) and method == "GET":
            statuses = [s for s in self.statuses if s["_repo"] == key and s["_sha"] == mm.group(1)]
            state = "failure" if any(s["state"] in ("failure", "error") for s in statuses) else "pending" if any(s["state"] == "pending" for s in statuses) else "success"
            status, page, extra = self.paginated(f"/repos/{full_name}/{rest}", [self.public(s) for s in statuses], query)
            return status, {"state": state, "sha": mm.group(1), "total_count": len(statuses), "statuses": page}, extra
        if (mm := re.fullmatch(r"actions/jobs/(\d+)/logs", rest)) and method == "GET":
            if int(mm.group(1)) not in self.job_logs:
                return 404, {"message": "Not Found"}, {}
            return 302, None, {"Location": f"{self.blob_url}/_blob/job-logs/{mm.group(1)}?sig={hashlib.sha256(mm.group(1).encode()).hexdigest()[:16]}"}
        if rest == "pulls":
            if method == "GET":
                return self.paginated(f"/repos/{full_name}/pulls", self.find_pulls(full_name, query), query)
            if method == "POST":
                return self.create_pull(full_name, payload)
        if (mm := re.fullmatch(r"pulls/(\d+)", rest)) and method == "PATCH":
            pull = self.pulls[key].get(int(mm.group(1)))
            if pull is None:
                return 404, {"message": "Not Found"}, {}
            if isinstance(payload, dict) and payload.get("state") not in (None, "open", "closed"):
                return 422, {"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "invalid", "field": "state"}]}, {}
            if isinstance(payload, dict) and payload.get("state") == "open" and pull.get("merged"):
                return 422, {"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": "state cannot be changed. The pull request cannot be reopened."}]}, {}
            for name in ("title", "body", "state", "base"):
                if isinstance(payload, dict) and name in payload:
                    pull[name] = payload[name] if name != "base" else {**pull["base"], "ref": payload[name]}
            pull["updated_at"] = github_now()
            if isinstance(payload, dict) and "state" in payload:
                pull["closed_at"] = pull["updated_at"] if pull["state"] == "closed" else None
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
            and (not query.get("assignee") or any(a["login"].lower() == query["assignee"].lower() for a in issue["assignees"]))
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

    def paginated_wrapped(self, path: str, key: str, items: list, query: dict) -> tuple[int, Any, dict[str, str]]:
        """A list GitHub wraps in an object ({total_count, <key>}), paged like any other."""
        status, page, extra = self.paginated(path, items, query)
        return status, {"total_count": len(items), key: page}, extra

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
            "closed_at": None,
            "merged_at": None,
            "merged": False,
            "merged_by": None,
            "merge_commit_sha": None,
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
        body = read_body(self)
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path.startswith("/git/"):
            status, extra, raw = self.owner.handle_git(self.command, self.path, headers, body)
            self.send_response(status)
            self.send_header("Content-Length", str(len(raw)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)
            return
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
                    "authorization": headers.get("authorization", ""),
                    "host": headers.get("host", ""),
                    "identity": getattr(self.owner._local, "identity", ""),
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


FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "github-webhooks"  # octokit example payloads


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()
