"""GitLab's REST API v4, the endpoints TAC-X uses, over plain `requests` (one thin module with
its own error type, like `pipeline.github`).

Works with gitlab.com and self-hosted instances: the base URL is the repository's `forge_url`
or GITLAB_URL (the API is `<base>/api/v4`). The token (GITLAB_TOKEN or GITLAB_TOKEN_FILE: a
personal, project or group access token with the `api` scope) goes in the `PRIVATE-TOKEN`
header, which all three kinds accept; it is never put in a URL, a file or a log.

A project is named by its URL-encoded path (`group/sub/project` -> `group%2Fsub%2Fproject`),
which every project endpoint accepts in place of the numeric id. Every write passes the publish
guard first (no secret TAC-X holds leaves in a comment, an MR or a status).

Why not python-gitlab: the handful of endpoints here are plain JSON calls; `requests` is already
a dependency and lets this module keep GitHub's error shape (status, permanent, retry_after).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings

from . import publish_guard
from .lib.api_errors import TrackerError
from .lib.redaction import redact
from .publish_guard import PublishBlocked

# Member access levels (https://docs.gitlab.com/api/members/#roles).
ACCESS_LEVELS = {
    0: "no access",
    5: "minimal access",
    10: "guest",
    15: "planner",
    20: "reporter",
    30: "developer",
    40: "maintainer",
    50: "owner",
}
DEVELOPER = 30


class GitLabError(TrackerError):
    """A GitLab API call failed (`status`, `permanent`, `retry_after` as for GitHubError)."""


def base_url_for(forge_url: str = "") -> str:
    return (forge_url or settings.GITLAB_URL or "https://gitlab.com").rstrip("/")


def project_path(full_name: str) -> str:
    return "/projects/" + quote(full_name, safe="")


class GitLabClient:
    def __init__(self, *, base_url: str = "", token: str | None = None, timeout: float = 20.0):
        self.base_url = base_url_for(base_url)
        self.api = f"{self.base_url}/api/v4"
        self.token = settings.GITLAB_TOKEN if token is None else token
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": "tac-x"})

    # --- transport ----------------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, params: dict | None = None, json: Any = None, raw: bool = False
    ) -> tuple[Any, dict[str, str]]:
        url = path if path.startswith("http") else f"{self.api}{path}"
        if not url.startswith(f"{self.api}/"):
            raise GitLabError(f"refusing to send the token to {redact(url)} outside {self.api}", permanent=True)
        if method.upper() != "GET" and json is not None:
            try:
                publish_guard.check_post(method.upper(), path, json)
            except PublishBlocked as exc:
                raise GitLabError(str(exc), permanent=True) from None
        try:
            resp = self.session.request(
                method, url, params=params, json=json, headers={"PRIVATE-TOKEN": self.token}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise GitLabError(f"GitLab {method} {path}: {redact(str(exc))}") from None
        if 200 <= resp.status_code < 300:
            if raw:
                return resp.text, dict(resp.headers)
            try:
                return (resp.json() if resp.content else None), dict(resp.headers)
            except ValueError:
                raise GitLabError(f"GitLab {method} {path} answered {resp.status_code} with a body that is not JSON") from None
        try:
            answer = resp.json()
            message = answer.get("message") or answer.get("error") or ""
            message = message if isinstance(message, str) else str(message)
        except (ValueError, AttributeError):
            message = resp.text[:200]
        retry_after = None
        if resp.status_code == 429:
            try:
                retry_after = float(resp.headers.get("Retry-After", "60"))
            except ValueError:
                retry_after = 60.0
            reset = resp.headers.get("RateLimit-Reset")
            if reset and reset.isdigit():
                retry_after = max(retry_after, float(reset) - time.time())
        permanent = resp.status_code in (400, 401, 403, 404, 405, 409, 410, 422)
        raise GitLabError(
            f"GitLab {method} {path} answered {resp.status_code}: {redact(message)}",
            status=resp.status_code,
            permanent=permanent,
            retry_after=retry_after,
        )

    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params=params or None)[0]

    def paginate(self, path: str, *, params: dict | None = None, max_pages: int = 20) -> list:
        """Every item of a listing (offset pagination: `page` and the `X-Next-Page` header)."""
        items: list = []
        page = 1
        for _ in range(max_pages):
            data, headers = self.request("GET", path, params={**(params or {}), "per_page": 100, "page": page})
            items.extend(data or [])
            following = headers.get("X-Next-Page", "")
            if not following.isdigit():
                break
            page = int(following)
        return items

    # --- issues -------------------------------------------------------------------------------

    def issues(self, full_name: str, **filters) -> list[dict]:
        """Open issues of the project matching `filters` (labels=, assignee_username=)."""
        return self.paginate(f"{project_path(full_name)}/issues", params={"state": "opened", **filters})

    def issue(self, full_name: str, iid: int) -> dict:
        return self.get(f"{project_path(full_name)}/issues/{int(iid)}") or {}

    def label_events(self, full_name: str, iid: int) -> list[dict]:
        """The issue's label events, oldest first (`action` add/remove, `label`, `user`)."""
        return self.paginate(f"{project_path(full_name)}/issues/{int(iid)}/resource_label_events")

    def notes(self, full_name: str, iid: int, *, mr: bool = False) -> list[dict]:
        kind = "merge_requests" if mr else "issues"
        return self.paginate(
            f"{project_path(full_name)}/{kind}/{int(iid)}/notes", params={"sort": "asc", "order_by": "created_at"}
        )

    def note_create(self, full_name: str, iid: int, body: str, *, mr: bool = False) -> dict:
        kind = "merge_requests" if mr else "issues"
        return self.request("POST", f"{project_path(full_name)}/{kind}/{int(iid)}/notes", json={"body": body})[0]

    def note_update(self, full_name: str, iid: int, note_id: int, body: str, *, mr: bool = False) -> dict:
        kind = "merge_requests" if mr else "issues"
        return self.request("PUT", f"{project_path(full_name)}/{kind}/{int(iid)}/notes/{int(note_id)}", json={"body": body})[0]

    def discussion_reply(self, full_name: str, mr: int, discussion_id: str, body: str) -> dict:
        return self.request(
            "POST",
            f"{project_path(full_name)}/merge_requests/{int(mr)}/discussions/{quote(discussion_id, safe='')}/notes",
            json={"body": body},
        )[0]

    def award_emoji(self, full_name: str, mr: int, note_id: int, name: str = "eyes") -> None:
        try:
            self.request(
                "POST",
                f"{project_path(full_name)}/merge_requests/{int(mr)}/notes/{int(note_id)}/award_emoji",
                json={"name": name},
            )
        except GitLabError as exc:
            if exc.status not in (400, 404, 409):  # already awarded
                raise

    # --- people -------------------------------------------------------------------------------

    def user_id(self, username: str) -> int | None:
        users = self.get("/users", username=username) or []
        return int(users[0]["id"]) if users and isinstance(users[0], dict) and "id" in users[0] else None

    def access_level(self, full_name: str, username: str) -> int:
        """The user's effective access level on the project (inherited memberships included);
        0 when not a member."""
        uid = self.user_id(username)
        if uid is None:
            return 0
        try:
            member = self.get(f"{project_path(full_name)}/members/all/{uid}") or {}
        except GitLabError as exc:
            if exc.status == 404:
                return 0
            raise
        return int(member.get("access_level") or 0)

    # --- merge requests -------------------------------------------------------------------------

    def merge_request(self, full_name: str, iid: int) -> dict:
        return self.get(f"{project_path(full_name)}/merge_requests/{int(iid)}") or {}

    def merge_request_open_or_update(
        self, full_name: str, *, source: str, target: str, title: str, description: str, draft: bool
    ) -> dict:
        """Open an MR from `source`, or update the open one (never a second). A draft MR is
        one whose title starts with "Draft: " (GitLab's documented way)."""
        plain = title
        title = f"Draft: {title}" if draft and not title.lower().startswith("draft:") else title
        existing = self.get(f"{project_path(full_name)}/merge_requests", state="opened", source_branch=source) or []
        if existing:
            iid = int(existing[0]["iid"])
            # Someone marked it ready: updating the text must not make it a draft again.
            keep = title if existing[0].get("draft") else plain
            return self.request(
                "PUT", f"{project_path(full_name)}/merge_requests/{iid}", json={"title": keep, "description": description}
            )[0]
        fields = {
            "source_branch": source,
            "target_branch": target,
            "title": title,
            "description": description,
            "remove_source_branch": False,
        }
        try:
            return self.request("POST", f"{project_path(full_name)}/merge_requests", json=fields)[0]
        except GitLabError as exc:
            if exc.status != 409:
                raise
            # Opened by an earlier attempt that died before recording it.
            existing = self.get(f"{project_path(full_name)}/merge_requests", state="opened", source_branch=source) or []
            if not existing:
                raise
            return existing[0]

    # --- CI -----------------------------------------------------------------------------------

    def commit_status(
        self, full_name: str, sha: str, *, state: str, name: str, description: str = "", target_url: str = ""
    ) -> dict:
        fields = {"state": state, "name": name, "description": description[:255]}
        if target_url:
            fields["target_url"] = target_url
        return self.request("POST", f"{project_path(full_name)}/statuses/{sha}", json=fields)[0]

    def pipeline(self, full_name: str, pipeline_id: int) -> dict:
        return self.get(f"{project_path(full_name)}/pipelines/{int(pipeline_id)}") or {}

    def pipeline_jobs(self, full_name: str, pipeline_id: int) -> list[dict]:
        return self.paginate(f"{project_path(full_name)}/pipelines/{int(pipeline_id)}/jobs")

    def job_log_tail(self, full_name: str, job_id: int, *, lines: int = 60, max_chars: int = 6000) -> str:
        text, _ = self.request("GET", f"{project_path(full_name)}/jobs/{int(job_id)}/trace", raw=True)
        return "\n".join(str(text or "").splitlines()[-lines:])[-max_chars:]
