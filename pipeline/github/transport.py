"""How TAC-X talks to GitHub's REST API: the base URL (GITHUB_API_URL, so tests and GitHub
Enterprise point elsewhere), the identity's token per repository, the rate limit, pagination,
credential-free downloads, and the publish guard in front of every write. Errors raise
`GitHubError` carrying whether retrying helps. The endpoints are `client.GitHubClient`'s."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from .. import github_auth, publish_guard
from ..github_auth import AppIdentity, GitHubAuthError, TokenIdentity
from ..lib.redaction import redact
from ..publish_guard import PublishBlocked

_REPO_PATH = re.compile(r"^/repos/([^/?#]+/[^/?#]+)")


class GitHubError(Exception):
    def __init__(self, message: str, *, status: int | None = None, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.permanent = permanent
        self.retry_after = retry_after


class GitHubPublishBlocked(GitHubError, PublishBlocked):
    """The publish guard stopped a write: it carried a secret's value. Permanent; nothing was sent."""

    def __init__(self, message: str):
        super().__init__(message, permanent=True)


@dataclass
class Response:
    status: int
    data: Any
    headers: dict[str, str]


class Transport:
    def __init__(
        self,
        *,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 20.0,
        identity: TokenIdentity | AppIdentity | None = None,
    ):
        """`token` pins a token identity; otherwise `identity`, or the configured one (the
        GitHub App when GITHUB_APP_ID is set, else GITHUB_TOKEN)."""
        self.base_url = (base_url or settings.GITHUB_API_URL).rstrip("/")
        if identity is None:
            identity = TokenIdentity(token) if token is not None else github_auth.identity(base_url=self.base_url)
        self.identity = identity
        self.token = identity.token if isinstance(identity, TokenIdentity) else ""
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update(
            {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "tac-x"}
        )
        # Primary rate limit as last reported by GitHub (None until the first answer).
        self.rate_remaining: int | None = None
        self.rate_reset: float | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        json: Any = None,
        headers: dict | None = None,
        ok: tuple[int, ...] = (),
        allow_redirects: bool = True,
    ) -> Response:
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        if not url.startswith(f"{self.base_url}/"):
            # Pagination links come from the answer: never send the token to another host.
            raise GitHubError(f"refusing to follow {redact(url)} outside {self.base_url}", permanent=True)
        if self.rate_remaining == 0 and self.rate_reset and self.rate_reset > time.time():
            raise GitHubError(
                f"GitHub rate limit exhausted until {time.strftime('%H:%M:%S', time.gmtime(self.rate_reset))} UTC",
                status=403,
                retry_after=self.rate_reset - time.time(),
            )
        full_name = self.repository_of(url)
        if method.upper() != "GET" and json is not None:
            # The last wall: nothing TAC-X writes to the forge carries a secret's value.
            try:
                publish_guard.check_post(method.upper(), path if not path.startswith("http") else url[len(self.base_url) :], json, repository=full_name or "")
            except PublishBlocked as exc:
                raise GitHubPublishBlocked(str(exc)) from None
        for attempt in (1, 2):
            try:
                resp = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers={**(headers or {}), **self.auth_headers(full_name)},
                    timeout=self.timeout,
                    allow_redirects=allow_redirects,
                )
            except requests.RequestException as exc:
                raise GitHubError(f"GitHub {method} {path}: {redact(str(exc))}") from None
            if resp.status_code == 401 and self.identity.kind == "app" and attempt == 1:
                # Revoked, or the App was reinstalled: get a new installation token once.
                self.identity.invalidate(full_name)
                continue
            break
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
            answer = resp.json()
            message = str(answer.get("message", ""))
            # 422s say what failed in `errors` ("A pull request already exists for ...").
            details = [str(e.get("message") or e.get("code") or "") for e in answer.get("errors") or [] if isinstance(e, dict)]
            if any(details):
                message = f"{message}: {'; '.join(d for d in details if d)}"
        except (ValueError, AttributeError):
            message = resp.text[:200]
        retry_after = None
        if resp.status_code in (403, 429):
            if "Retry-After" in resp.headers:
                try:
                    retry_after = float(resp.headers["Retry-After"])
                except ValueError:
                    retry_after = 60.0
            elif resp.headers.get("X-RateLimit-Remaining") == "0":
                retry_after = max(0.0, float(resp.headers.get("X-RateLimit-Reset", time.time())) - time.time())
            elif "rate limit" in message.lower():
                # A secondary limit without Retry-After: GitHub asks for at least a minute.
                retry_after = 60.0
        permanent = resp.status_code in (400, 401, 404, 410, 422) or (resp.status_code == 403 and retry_after is None)
        raise GitHubError(
            f"GitHub {method} {path} answered {resp.status_code}: {redact(message)}",
            status=resp.status_code,
            permanent=permanent,
            retry_after=retry_after,
        )

    @property
    def is_app(self) -> bool:
        return self.identity.kind == "app"

    def repository_of(self, url: str) -> str | None:
        """owner/name of a /repos/{owner}/{name}/... URL (whose installation token it needs)."""
        match = _REPO_PATH.match(url[len(self.base_url) :])
        return match.group(1) if match else None

    def auth_headers(self, full_name: str | None) -> dict[str, str]:
        try:
            token = self.identity.token_for(full_name)
        except GitHubAuthError as exc:
            # No status: GitHub's answer about the App must not read as an answer about the
            # resource (a 404 "not installed" is not "user is not a collaborator").
            raise GitHubError(str(exc), permanent=exc.permanent) from None
        return {"Authorization": f"Bearer {token}"} if token else {}

    MAX_PAGES = 30  # of wrapped lists (check runs, statuses): 3,000 items
    MAX_PAGES = 30  # of wrapped lists (check runs, statuses): 3,000 items

    def paginate_wrapped(self, path: str, key: str, *, params: dict | None = None) -> list:
        """Every item of a list GitHub wraps in an object ({total_count, <key>: [...]}), following
        `Link: rel="next"` (100 a page)."""
        return self.paginate(path, params=params, max_pages=self.MAX_PAGES, key=key)

    def paginate(self, path: str, *, params: dict | None = None, max_pages: int = 10, key: str = "") -> list:
        """Every item of a list endpoint (of the list under `key` when GitHub wraps it in an
        object), following `Link: rel="next"` up to `max_pages` pages."""
        items: list = []
        url: str | None = path
        query = {"per_page": 100, **(params or {})}
        for _ in range(max_pages):
            if url is None:
                break
            resp = self.request("GET", url, params=query)
            if key:
                items.extend((resp.data if isinstance(resp.data, dict) else {}).get(key) or [])
            else:
                items.extend(resp.data or [])
            url = next_link(resp.headers)
            query = None  # the next link carries the query already
        return items

    LOG_MAX_BYTES = 2 * 1024 * 1024  # of a job log's end kept while downloading it
    def download_text(self, url: str) -> str:
        """A signed download URL's text (its last LOG_MAX_BYTES), fetched with no credentials."""
        try:
            with requests.get(url, timeout=self.timeout, stream=True, headers={"User-Agent": "tac-x"}) as resp:
                if resp.status_code in (404, 410):
                    return ""
                if not 200 <= resp.status_code < 300:
                    raise GitHubError(f"job log download answered {resp.status_code}", status=resp.status_code)
                tail = b""
                for chunk in resp.iter_content(65536):
                    tail = (tail + chunk)[-self.LOG_MAX_BYTES :]
        except requests.RequestException as exc:
            raise GitHubError(f"job log download: {redact(str(exc))}") from None
        return tail.decode("utf-8", "replace")


def header(headers: dict[str, str], name: str) -> str:
    """A response header by name, case-insensitively ("" when absent)."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return ""


def _same_origin(url: str, base_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def next_link(headers: dict[str, str]) -> str | None:
    """The `rel="next"` URL of a paginated answer, or None on the last page."""
    link = header(headers, "Link")
    if not link:
        return None
    for part in requests.utils.parse_header_links(link):
        if part.get("rel") == "next":
            return part.get("url")
    return None
