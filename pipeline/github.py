"""The one place TAC-X talks to GitHub's REST API (base URL from GITHUB_API_URL, so tests and
GitHub Enterprise point elsewhere). Errors raise `GitHubError` carrying whether retrying helps."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

from .redaction import redact


class GitHubError(Exception):
    def __init__(self, message: str, *, status: int | None = None, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass
class Response:
    status: int
    data: Any
    headers: dict[str, str]


class GitHubClient:
    def __init__(self, *, base_url: str | None = None, token: str | None = None, timeout: float = 20.0):
        self.base_url = (base_url or settings.GITHUB_API_URL).rstrip("/")
        self.token = settings.GITHUB_TOKEN if token is None else token
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update(
            {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "tac-x"}
        )
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"
        # Primary rate limit as last reported by GitHub (None until the first answer).
        self.rate_remaining: int | None = None
        self.rate_reset: float | None = None

    # --- transport ----------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None, headers: dict | None = None, ok: tuple[int, ...] = ()) -> Response:
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        if self.rate_remaining == 0 and self.rate_reset and self.rate_reset > time.time():
            raise GitHubError(
                f"GitHub rate limit exhausted until {time.strftime('%H:%M:%S', time.gmtime(self.rate_reset))} UTC",
                status=403,
                retry_after=self.rate_reset - time.time(),
            )
        try:
            resp = self.session.request(method, url, params=params, json=json, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise GitHubError(f"GitHub {method} {path}: {redact(str(exc))}") from None
        if "X-RateLimit-Remaining" in resp.headers:
            try:
                self.rate_remaining = int(resp.headers["X-RateLimit-Remaining"])
                self.rate_reset = float(resp.headers.get("X-RateLimit-Reset", "0"))
            except ValueError:
                pass
        if resp.status_code in ok or 200 <= resp.status_code < 300 or resp.status_code == 304:
            data = None
            if resp.status_code not in (204, 304) and resp.content:
                try:
                    data = resp.json()
                except ValueError:
                    data = resp.text
            return Response(resp.status_code, data, dict(resp.headers))
        try:
            message = resp.json().get("message", "")
        except ValueError:
            message = resp.text[:200]
        retry_after = None
        if resp.status_code in (403, 429):
            if "Retry-After" in resp.headers:
                retry_after = float(resp.headers["Retry-After"])
            elif resp.headers.get("X-RateLimit-Remaining") == "0":
                retry_after = max(0.0, float(resp.headers.get("X-RateLimit-Reset", time.time())) - time.time())
        permanent = resp.status_code in (400, 401, 404, 410, 422) or (resp.status_code == 403 and retry_after is None)
        raise GitHubError(
            f"GitHub {method} {path} answered {resp.status_code}: {redact(message)}",
            status=resp.status_code,
            permanent=permanent,
            retry_after=retry_after,
        )

    # --- pull requests ------------------------------------------------------------------------

    def pull_request_open_or_update(self, *, full_name: str, head: str, base: str, title: str, body: str, draft: bool) -> dict:
        """Open a PR for `head`, or update the open one if it exists (never a second PR)."""
        owner = full_name.split("/")[0]
        existing = self.request("GET", f"/repos/{full_name}/pulls", params={"head": f"{owner}:{head}", "state": "open"}).data or []
        if existing:
            number = existing[0]["number"]
            return self.request("PATCH", f"/repos/{full_name}/pulls/{number}", json={"title": title, "body": body}).data
        return self.request(
            "POST", f"/repos/{full_name}/pulls", json={"title": title, "body": body, "head": head, "base": base, "draft": draft}
        ).data
