"""Jira Cloud's REST API v3 (`https://<site>.atlassian.net/rest/api/3/...`), over `requests`.

Why not the `jira` package (it installs here): its client speaks REST v2 by default and hands back
v2-shaped resources; v3 wants comment and description bodies in the Atlassian Document Format,
which it neither builds nor reads; its session sleeps and retries inside a call on 429 (the
coordinator wants the `Retry-After` to back off itself, as for GitHub); and the two calls TAC-X
needs most (the enhanced JQL search `search/jql` and "find users with permissions" for the
actor) would go through its private `_get_json`. Five plain calls on `requests` are shorter.

Authentication: HTTP Basic with the account's e-mail (`JIRA_EMAIL`) and an API token
(`JIRA_API_TOKEN` or `JIRA_API_TOKEN_FILE`). Errors are `JiraError(permanent=, retry_after=)`.
Every write passes the publish guard first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

from .. import publish_guard
from ..publish_guard import PublishBlocked
from .secrets import SecretMissing, secret_value

FIELDS = "summary,description,labels,status,project,assignee,reporter,created,updated"
URL = re.compile(r"https?://[^\s<>\"]+")


class JiraError(Exception):
    def __init__(self, message: str, *, status: int | None = None, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.permanent = permanent
        self.retry_after = retry_after


def adf_text(node: Any) -> str:
    """The plain text of an Atlassian Document Format value (a description or a comment body):
    paragraphs and list items on their own lines, mentions as `@name`, everything else's text."""
    if isinstance(node, str):
        return node
    if not isinstance(node, dict):
        return ""
    kind = node.get("type")
    if kind == "text":
        return str(node.get("text") or "")
    if kind == "mention":
        return str((node.get("attrs") or {}).get("text") or "")
    if kind == "hardBreak":
        return "\n"
    inner = "".join(adf_text(child) for child in node.get("content") or [] if isinstance(child, dict))
    if kind in ("paragraph", "heading", "listItem", "codeBlock", "blockquote", "rule"):
        return inner.rstrip("\n") + "\n"
    return inner


def adf_document(text: str) -> dict:
    """`text` as an ADF document: a paragraph per line, URLs as links."""
    paragraphs = []
    for line in text.splitlines() or [""]:
        content: list[dict] = []
        at = 0
        for match in URL.finditer(line):
            if match.start() > at:
                content.append({"type": "text", "text": line[at : match.start()]})
            content.append(
                {"type": "text", "text": match.group(0), "marks": [{"type": "link", "attrs": {"href": match.group(0)}}]}
            )
            at = match.end()
        if at < len(line):
            content.append({"type": "text", "text": line[at:]})
        paragraphs.append({"type": "paragraph", "content": content} if content else {"type": "paragraph"})
    return {"type": "doc", "version": 1, "content": paragraphs}


@dataclass(frozen=True)
class JiraIssue:
    id: str
    key: str  # "OPS-7"
    project_key: str
    title: str
    description: str  # plain text of the ADF description (untrusted)
    url: str  # the browse URL a person opens
    status_category: str  # new | indeterminate | done
    labels: tuple[str, ...] = ()
    assignee_id: str = ""
    updated: str = ""
    reporter_id: str = ""
    created: str = ""

    @property
    def is_open(self) -> bool:
        return self.status_category != "done"

    @classmethod
    def of(cls, data: dict, *, base_url: str) -> JiraIssue:
        fields = data.get("fields") or {}
        status = fields.get("status") or {}
        key = str(data.get("key") or "")
        return cls(
            id=str(data.get("id") or ""),
            key=key,
            project_key=str((fields.get("project") or {}).get("key") or key.rsplit("-", 1)[0]),
            title=str(fields.get("summary") or ""),
            description=adf_text(fields.get("description")).strip(),
            url=f"{base_url.rstrip('/')}/browse/{key}",
            status_category=str((status.get("statusCategory") or {}).get("key") or ""),
            labels=tuple(str(label) for label in fields.get("labels") or []),
            assignee_id=str((fields.get("assignee") or {}).get("accountId") or ""),
            updated=str(fields.get("updated") or ""),
            reporter_id=str((fields.get("reporter") or {}).get("accountId") or ""),
            created=str(fields.get("created") or ""),
        )


class JiraClient:
    def __init__(self, *, base_url: str | None = None, email: str | None = None, token: str | None = None, timeout: float = 20.0):
        self.base_url = (base_url or settings.JIRA_BASE_URL).rstrip("/")
        if not self.base_url:
            raise JiraError("JIRA_BASE_URL is not set", permanent=True)
        if token is None:
            try:
                token = secret_value("JIRA_API_TOKEN")
            except SecretMissing as exc:
                raise JiraError(str(exc), permanent=True) from None
        self.session = requests.Session()
        self.session.auth = (email if email is not None else settings.JIRA_EMAIL, token)
        self.session.headers.update({"Accept": "application/json", "User-Agent": "tac-x"})
        self.timeout = timeout

    def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None, ok: tuple[int, ...] = ()) -> Any:
        if method != "GET":
            try:
                publish_guard.check_post(method, path, json, repository="")
            except PublishBlocked as exc:
                raise JiraError(str(exc), permanent=True) from None
        try:
            response = self.session.request(
                method, f"{self.base_url}/rest/api/3/{path}", params=params, json=json, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise JiraError(f"Jira cannot be reached: {exc}") from None
        if response.status_code in ok:
            return None
        if response.status_code >= 400:
            retry = response.headers.get("Retry-After", "")
            try:
                body = response.json()
                detail = "; ".join(body.get("errorMessages") or []) or str(body.get("errors") or "") or response.reason
            except ValueError:
                detail = response.reason
            raise JiraError(
                f"Jira answered {response.status_code} to {method} {path}: {detail}",
                status=response.status_code,
                permanent=response.status_code in (400, 401, 403, 404),
                retry_after=float(retry) if retry.isdigit() else (60.0 if response.status_code == 429 else None),
            )
        return response.json() if response.content else None

    # --- reading -----------------------------------------------------------------------------------

    def search(self, jql: str, *, limit: int = 500) -> list[JiraIssue]:
        """Issues matching `jql` (the enhanced search, `search/jql`, paged by `nextPageToken`)."""
        found: list[JiraIssue] = []
        token = None
        while len(found) < limit:
            params = {"jql": jql, "fields": FIELDS, "maxResults": 50}
            if token:
                params["nextPageToken"] = token
            page = self.request("GET", "search/jql", params=params)
            found.extend(JiraIssue.of(i, base_url=self.base_url) for i in page.get("issues") or [])
            token = page.get("nextPageToken")
            if page.get("isLast", True) or not token:
                break
        return found[:limit]

    def issue(self, key: str) -> JiraIssue | None:
        data = self.request("GET", f"issue/{key}", params={"fields": FIELDS}, ok=(404,))
        return JiraIssue.of(data, base_url=self.base_url) if data else None

    def comments(self, key: str) -> list[dict]:
        data = self.request("GET", f"issue/{key}/comment", params={"maxResults": 100}) or {}
        return [
            {"id": str(c.get("id")), "body": adf_text(c.get("body")), "author": (c.get("author") or {}).get("accountId", "")}
            for c in data.get("comments") or []
        ]

    def changelog(self, key: str) -> list[dict]:
        """The issue's change history, newest first: [{author, created, items}]."""
        data = self.request("GET", f"issue/{key}/changelog", params={"maxResults": 100}) or {}
        return list(reversed(data.get("values") or []))

    def has_permissions(self, *, account_id: str, project_key: str, permissions: str) -> bool:
        """Whether the account holds every one of `permissions` (comma-separated keys such as
        EDIT_ISSUES,TRANSITION_ISSUES) in the project ("find users with permissions")."""
        users = self.request(
            "GET",
            "user/permission/search",
            params={"accountId": account_id, "projectKey": project_key, "permissions": permissions},
        )
        return any(isinstance(u, dict) and u.get("accountId") == account_id and u.get("active", True) for u in users or [])

    def user(self, account_id: str) -> dict | None:
        return self.request("GET", "user", params={"accountId": account_id}, ok=(404,))

    # --- writing -----------------------------------------------------------------------------------

    def comment_add(self, key: str, text: str) -> str:
        data = self.request("POST", f"issue/{key}/comment", json={"body": adf_document(text)})
        return str(data["id"])

    def comment_update(self, key: str, comment_id: str, text: str) -> None:
        self.request("PUT", f"issue/{key}/comment/{comment_id}", json={"body": adf_document(text)})

    def remote_link(self, key: str, *, url: str, title: str) -> str:
        """Link the pull request from the issue; `globalId` = the URL, so linking it again
        updates the link instead of adding a second one (Jira's documented behaviour)."""
        data = self.request("POST", f"issue/{key}/remotelink", json={"globalId": url, "object": {"url": url, "title": title}})
        return str(data.get("id"))
