"""GitHub's REST endpoints TAC-X uses: issues, comments, reviews, checks and statuses, pull
requests. The transport (auth, rate limit, pagination, the publish guard) is `transport.Transport`."""

from __future__ import annotations

from dataclasses import dataclass

import requests

from .transport import GitHubError, Transport, _same_origin, header, next_link


class GitHubClient(Transport):
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

    def pull_requests_closed(self, *, full_name: str, max_pages: int = 10) -> list[dict]:
        """Closed pull requests (merged or not), most recently updated first (100 a page)."""
        params = {"state": "closed", "sort": "updated", "direction": "desc"}
        return self.paginate(f"/repos/{full_name}/pulls", params=params, max_pages=max_pages)

    def issue(self, *, full_name: str, number: int) -> dict:
        return self.request("GET", f"/repos/{full_name}/issues/{int(number)}").data or {}

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
