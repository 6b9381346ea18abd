"""The one place TAC-X talks to GitHub's REST API (base URL from GITHUB_API_URL, so tests and
GitHub Enterprise point elsewhere). Errors raise `GitHubError` carrying whether retrying helps."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from . import github_auth, publish_guard
from .github_auth import AppIdentity, GitHubAuthError, TokenIdentity
from .lib.redaction import redact
from .publish_guard import PublishBlocked

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


class GitHubClient:
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

    # --- transport ----------------------------------------------------------------------------

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

    def paginate_wrapped(self, path: str, key: str, *, params: dict | None = None) -> list:
        """Every item of a list GitHub wraps in an object ({total_count, <key>: [...]}), following
        `Link: rel="next"` (100 a page)."""
        items: list = []
        url: str | None = path
        query = {"per_page": 100, **(params or {})}
        for _ in range(self.MAX_PAGES):
            if url is None:
                break
            resp = self.request("GET", url, params=query)
            data = resp.data if isinstance(resp.data, dict) else {}
            items.extend(data.get(key) or [])
            url = next_link(resp.headers)
            query = None
        return items

    def paginate(self, path: str, *, params: dict | None = None, max_pages: int = 10) -> list:
        """Every item of a list endpoint, following `Link: rel="next"` up to `max_pages` pages."""
        items: list = []
        url: str | None = path
        query = {"per_page": 100, **(params or {})}
        for _ in range(max_pages):
            if url is None:
                break
            resp = self.request("GET", url, params=query)
            items.extend(resp.data or [])
            url = next_link(resp.headers)
            query = None  # the next link carries the query already
        return items

    # --- issues -------------------------------------------------------------------------------

    def issues_labelled(self, *, full_name: str, label: str, etag: str = "") -> IssueListing:
        """Open issues (pull requests left out) carrying `label`.

        With `etag` the first page is asked conditionally: GitHub answers 304, which costs no
        rate limit, and `not_modified` is True. The returned `etag` is only set when the whole
        answer fitted in one page: a change on page 2 would not change page 1's ETag.
        """
        return self.issue_listing(full_name=full_name, params={"labels": label, "state": "open", "per_page": 100}, etag=etag)

    def issues_assigned(self, *, full_name: str, login: str, etag: str = "") -> IssueListing:
        """Open issues (pull requests left out) assigned to `login`; `etag` as for issues_labelled."""
        return self.issue_listing(full_name=full_name, params={"assignee": login, "state": "open", "per_page": 100}, etag=etag)

    def issue_listing(self, *, full_name: str, params: dict, etag: str = "") -> IssueListing:
        path = f"/repos/{full_name}/issues"
        resp = self.request("GET", path, params=params, headers={"If-None-Match": etag} if etag else None)
        if resp.status == 304:
            return IssueListing(not_modified=True, issues=[], etag=etag)
        items = list(resp.data or [])
        url = next_link(resp.headers)
        new_etag = "" if url else header(resp.headers, "ETag")
        pages = 1
        while url and pages < 20:
            more = self.request("GET", url)
            items.extend(more.data or [])
            url = next_link(more.headers)
            pages += 1
        issues = [i for i in items if isinstance(i, dict) and "pull_request" not in i]
        return IssueListing(not_modified=False, issues=issues, etag=new_etag)

    def issue_events(self, *, full_name: str, number: int) -> list[dict]:
        """The issue's events, oldest first (GitHub's order)."""
        return self.paginate(f"/repos/{full_name}/issues/{int(number)}/events")

    def latest_label_event(self, *, full_name: str, number: int, label: str) -> dict | None:
        """The most recent `labeled` event that applied `label` (names compared like GitHub:
        case-insensitively), or None."""
        wanted = label.casefold()
        found = None
        for event in self.issue_events(full_name=full_name, number=number):
            if event.get("event") == "labeled" and str((event.get("label") or {}).get("name", "")).casefold() == wanted:
                found = event
        return found

    def latest_assign_event(self, *, full_name: str, number: int, login: str) -> dict | None:
        """The most recent `assigned` event that assigned the issue to `login` (compared
        case-insensitively, like GitHub's logins), or None. Its `actor` is who assigned it."""
        wanted = login.casefold()
        found = None
        for event in self.issue_events(full_name=full_name, number=number):
            if event.get("event") == "assigned" and str((event.get("assignee") or {}).get("login", "")).casefold() == wanted:
                found = event
        return found

    def collaborator_permission(self, *, full_name: str, login: str) -> str:
        """The user's role on the repository: admin, maintain, write, triage, read or none.

        `role_name` is preferred (it tells maintain and triage apart); `permission` is the
        older field. A user who is not a collaborator answers 404: "none".
        """
        try:
            data = self.request("GET", f"/repos/{full_name}/collaborators/{login}/permission").data or {}
        except GitHubError as exc:
            if exc.status == 404:
                return "none"
            raise
        return str(data.get("role_name") or data.get("permission") or "none").lower()

    # --- comments -----------------------------------------------------------------------------

    def issue_comments(self, *, full_name: str, number: int) -> list[dict]:
        return self.paginate(f"/repos/{full_name}/issues/{int(number)}/comments")

    def issue_comment_create(self, *, full_name: str, number: int, body: str) -> dict:
        return self.request("POST", f"/repos/{full_name}/issues/{int(number)}/comments", json={"body": body}).data

    def issue_comment_update(self, *, full_name: str, comment_id: int, body: str) -> dict:
        return self.request("PATCH", f"/repos/{full_name}/issues/comments/{int(comment_id)}", json={"body": body}).data

    def issue_comment(self, *, full_name: str, comment_id: int) -> dict:
        return self.request("GET", f"/repos/{full_name}/issues/comments/{int(comment_id)}").data or {}

    def issue_comments_since(self, *, full_name: str, number: int, since: str = "") -> list[dict]:
        """Comments of an issue or PR conversation, oldest first, updated at or after `since`."""
        return self.paginate(f"/repos/{full_name}/issues/{int(number)}/comments", params={"since": since} if since else None)

    def review_comment_reply(self, *, full_name: str, number: int, comment_id: int, body: str) -> dict:
        """A reply in the thread of inline review comment `comment_id` (a top-level one: GitHub
        does not take replies to replies) of pull request `number`."""
        return self.request("POST", f"/repos/{full_name}/pulls/{int(number)}/comments/{int(comment_id)}/replies", json={"body": body}).data

    def pull_review_comments(self, *, full_name: str, number: int) -> list[dict]:
        """Every inline review comment of pull request `number` (replies included)."""
        return self.paginate(f"/repos/{full_name}/pulls/{int(number)}/comments")

    def reaction_create(self, *, full_name: str, comment_id: int, content: str = "eyes", review_comment: bool = False) -> dict:
        """React to an issue comment (or a pull request review comment); GitHub answers 200
        when the same reaction is already there, so this is safe to repeat."""
        kind = "pulls/comments" if review_comment else "issues/comments"
        return self.request("POST", f"/repos/{full_name}/{kind}/{int(comment_id)}/reactions", json={"content": content}).data or {}

    # --- reviews and checks ------------------------------------------------------------------

    def pull_request(self, *, full_name: str, number: int) -> dict:
        return self.request("GET", f"/repos/{full_name}/pulls/{int(number)}").data or {}

    def pull_request_review(self, *, full_name: str, number: int, review_id: int) -> dict:
        return self.request("GET", f"/repos/{full_name}/pulls/{int(number)}/reviews/{int(review_id)}").data or {}

    def review_comments(self, *, full_name: str, number: int, review_id: int) -> list[dict]:
        """The inline comments of one review (path, line, body)."""
        return self.paginate(f"/repos/{full_name}/pulls/{int(number)}/reviews/{int(review_id)}/comments")

    def check_runs(self, *, full_name: str, sha: str) -> list[dict]:
        """Every check run of a commit, all pages (GitHub wraps each page: {total_count, check_runs})."""
        return self.paginate_wrapped(f"/repos/{full_name}/commits/{sha}/check-runs", "check_runs")

    def check_runs_for_suite(self, *, full_name: str, check_suite_id: int) -> list[dict]:
        """Every check run of a check suite, all pages."""
        return self.paginate_wrapped(f"/repos/{full_name}/check-suites/{int(check_suite_id)}/check-runs", "check_runs")

    def combined_status(self, *, full_name: str, sha: str) -> dict:
        """The combined commit status ({state, statuses, total_count}) — CI systems that use
        statuses. GitHub pages `statuses` (100 at most a page): every page is read, and `state`
        is the first page's (GitHub computes it over all of them)."""
        path = f"/repos/{full_name}/commits/{sha}/status"
        first = self.request("GET", path, params={"per_page": 100})
        data = dict(first.data) if isinstance(first.data, dict) else {}
        statuses = list(data.get("statuses") or [])
        url = next_link(first.headers)
        for _ in range(self.MAX_PAGES - 1):
            if url is None:
                break
            more = self.request("GET", url)
            statuses += list((more.data or {}).get("statuses") or []) if isinstance(more.data, dict) else []
            url = next_link(more.headers)
        data["statuses"] = statuses
        return data

    LOG_MAX_BYTES = 2 * 1024 * 1024  # of a job log's end kept while downloading it

    def job_log_tail(self, *, full_name: str, job_id: int, lines: int = 60, max_chars: int = 6000) -> str:
        """The last lines of a GitHub Actions job's log ("" when there is none).

        GitHub answers with a 302 to a short-lived signed download URL on another host. The
        redirect is followed here, not by requests: a URL on another origin than the API is
        fetched with no Authorization header (and none of the session's), one on the API's own
        origin through `request` (with it)."""
        try:
            first = self.request("GET", f"/repos/{full_name}/actions/jobs/{int(job_id)}/logs", ok=(301, 302, 303, 307, 308), allow_redirects=False)
        except GitHubError as exc:
            if exc.status in (404, 410):
                return ""
            raise
        if first.status in (301, 302, 303, 307, 308):
            location = requests.compat.urljoin(f"{self.base_url}/", header(first.headers, "Location"))
            inside = _same_origin(location, self.base_url) and location.startswith(f"{self.base_url}/")
            text = self.request("GET", location).data if inside else self.download_text(location)
        else:
            text = first.data
        text = text if isinstance(text, str) else ""
        return "\n".join(text.splitlines()[-lines:])[-max_chars:]

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

    # --- pull requests ------------------------------------------------------------------------

    def pull_requests_open(self, *, full_name: str, head: str) -> list[dict]:
        """Open PRs whose head is `head` (a branch of this repository)."""
        owner = full_name.split("/")[0]
        return self.request("GET", f"/repos/{full_name}/pulls", params={"head": f"{owner}:{head}", "state": "open"}).data or []

    def pull_request_open_or_update(self, *, full_name: str, head: str, base: str, title: str, body: str, draft: bool) -> dict:
        """Open a PR for `head`, or update the open one if it exists (never a second PR).

        GitHub refuses a second open PR for one head with 422; that happens when an earlier
        attempt opened it but died before recording it, so the 422 is answered by updating.
        """
        for _ in range(2):
            existing = self.pull_requests_open(full_name=full_name, head=head)
            if existing:
                number = existing[0]["number"]
                return self.request("PATCH", f"/repos/{full_name}/pulls/{number}", json={"title": title, "body": body}).data
            try:
                return self.request(
                    "POST", f"/repos/{full_name}/pulls", json={"title": title, "body": body, "head": head, "base": base, "draft": draft}
                ).data
            except GitHubError as exc:
                if exc.status != 422 or "already exists" not in str(exc):
                    raise
        raise GitHubError(f"GitHub keeps refusing a pull request for {head} that it does not list", status=422)

    def pull_request_reviews(self, *, full_name: str, number: int) -> list[dict]:
        return self.paginate(f"/repos/{full_name}/pulls/{int(number)}/reviews")

    # --- checks and commit statuses -------------------------------------------------------------

    def check_run_create(self, *, full_name: str, head_sha: str, name: str, fields: dict) -> dict:
        """A check run on `head_sha` (GitHub App identity only). `fields`: status, conclusion,
        started_at, completed_at, details_url, external_id, output {title, summary, text}."""
        return self.request("POST", f"/repos/{full_name}/check-runs", json={"name": name, "head_sha": head_sha, **fields}).data

    def check_run_update(self, *, full_name: str, check_run_id: int, fields: dict) -> dict:
        return self.request("PATCH", f"/repos/{full_name}/check-runs/{int(check_run_id)}", json=fields).data

    def check_runs_for_ref(self, *, full_name: str, ref: str) -> list[dict]:
        return self.check_runs(full_name=full_name, sha=ref)

    def commit_status_create(self, *, full_name: str, sha: str, state: str, context: str, description: str = "", target_url: str = "") -> dict:
        """A commit status (error | failure | pending | success); GitHub keeps the latest per context."""
        payload = {"state": state, "context": context, "description": description[:140]}
        if target_url:
            payload["target_url"] = target_url
        return self.request("POST", f"/repos/{full_name}/statuses/{sha}", json=payload).data


@dataclass
class IssueListing:
    not_modified: bool
    issues: list[dict]
    etag: str


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
