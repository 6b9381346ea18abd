"""Linear's GraphQL API (https://api.linear.app/graphql), through `gql` over `requests`.

Why `gql`: it parses every query before anything is sent (a typo is an error here, not a 400
from Linear), turns GraphQL `errors` into `TransportQueryError` with Linear's extension codes
(`RATELIMITED`, `AUTHENTICATION_ERROR`, `FORBIDDEN`, `INVALID_INPUT`), and its requests transport
is synchronous, like the coordinator. Errors here are `LinearError(permanent=..., retry_after=...)`,
the shape of `GitHubError`, so the coordinator backs off the same way.

Authentication: a personal API key is sent as `Authorization: <key>`; an OAuth access token
(`LINEAR_API_KEY` starting with `Bearer `) as given. Every write passes the publish guard first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportError, TransportQueryError, TransportServerError
from gql.transport.requests import RequestsHTTPTransport

from .. import publish_guard
from ..publish_guard import PublishBlocked
from .secrets import SecretMissing, secret_value

ISSUE_FIELDS = """
fragment IssueFields on Issue {
  id identifier title description url updatedAt
  state { name type }
  team { id key }
  labels { nodes { id name } }
  assignee { id name displayName }
  delegate { id name displayName }
}
"""

ISSUES = (
    """
query TriggeredIssues($filter: IssueFilter, $after: String) {
  issues(filter: $filter, first: 50, after: $after) {
    nodes { ...IssueFields }
    pageInfo { hasNextPage endCursor }
  }
}
"""
    + ISSUE_FIELDS
)

ISSUE = "query Issue($id: String!) { issue(id: $id) { ...IssueFields } }" + ISSUE_FIELDS

ISSUE_COMMENTS = """
query IssueComments($id: String!) {
  issue(id: $id) { id comments(first: 100) { nodes { id body user { id } } } }
}
"""

MEMBER = """
query Member($id: String!) {
  user(id: $id) {
    id name displayName active admin guest app
    teamMemberships(first: 250) { nodes { team { id key } } }
  }
}
"""

# Who applied a label or assigned the issue, and when: the poll's answer to "who triggered it".
ISSUE_HISTORY = """
query IssueHistory($id: String!) {
  issue(id: $id) {
    id
    history(first: 100) { nodes { createdAt actorId addedLabelIds removedLabelIds fromAssigneeId toAssigneeId } }
  }
}
"""

VIEWER = "query Viewer { viewer { id name displayName } organization { id urlKey } }"

COMMENT_CREATE = """
mutation CommentCreate($input: CommentCreateInput!) {
  commentCreate(input: $input) { success comment { id url } }
}
"""

COMMENT_UPDATE = """
mutation CommentUpdate($id: String!, $input: CommentUpdateInput!) {
  commentUpdate(id: $id, input: $input) { success comment { id } }
}
"""

ATTACHMENT_LINK = """
mutation AttachmentLinkURL($issueId: String!, $url: String!, $title: String) {
  attachmentLinkURL(issueId: $issueId, url: $url, title: $title) { success attachment { id url } }
}
"""

CLOSED_STATES = ["completed", "canceled"]
PERMANENT_CODES = {"AUTHENTICATION_ERROR", "FORBIDDEN", "INVALID_INPUT", "GRAPHQL_VALIDATION_FAILED", "ENTITY_NOT_FOUND"}


class LinearError(Exception):
    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None, code: str = ""):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.code = code


@dataclass(frozen=True)
class LinearIssue:
    """What TAC-X uses of a Linear issue (untrusted text: the title and the description)."""

    id: str
    identifier: str  # "ENG-123"
    title: str
    description: str
    url: str
    updated_at: str
    state_type: str  # triage | backlog | unstarted | started | completed | canceled
    state_name: str
    team_id: str
    team_key: str
    labels: tuple[str, ...] = ()
    assignee_id: str = ""
    delegate_id: str = ""
    label_ids: tuple[str, ...] = ()  # in the order of `labels`

    @property
    def is_open(self) -> bool:
        return self.state_type not in CLOSED_STATES

    @classmethod
    def of(cls, node: dict) -> LinearIssue:
        state, team = node.get("state") or {}, node.get("team") or {}
        return cls(
            id=str(node["id"]),
            identifier=str(node.get("identifier") or ""),
            title=str(node.get("title") or ""),
            description=str(node.get("description") or ""),
            url=str(node.get("url") or ""),
            updated_at=str(node.get("updatedAt") or ""),
            state_type=str(state.get("type") or ""),
            state_name=str(state.get("name") or ""),
            team_id=str(team.get("id") or ""),
            team_key=str(team.get("key") or ""),
            labels=tuple(str(n.get("name") or "") for n in ((node.get("labels") or {}).get("nodes") or [])),
            assignee_id=str((node.get("assignee") or {}).get("id") or ""),
            delegate_id=str((node.get("delegate") or {}).get("id") or ""),
            label_ids=tuple(str(n.get("id") or "") for n in ((node.get("labels") or {}).get("nodes") or [])),
        )


@dataclass(frozen=True)
class LinearMember:
    id: str
    name: str
    active: bool
    admin: bool
    guest: bool
    app: bool
    team_keys: frozenset[str] = field(default_factory=frozenset)


def api_key() -> str:
    try:
        return secret_value("LINEAR_API_KEY")
    except SecretMissing as exc:
        raise LinearError(str(exc), permanent=True) from None


class LinearClient:
    def __init__(self, *, url: str | None = None, key: str | None = None, timeout: float = 20.0):
        self.url = url or settings.LINEAR_API_URL
        key = key if key is not None else api_key()
        self.transport = RequestsHTTPTransport(
            url=self.url, headers={"Authorization": key, "User-Agent": "tac-x"}, timeout=timeout, retries=0
        )
        self.client = Client(transport=self.transport, fetch_schema_from_transport=False)

    def execute(self, document: str, variables: dict[str, Any] | None = None, *, write: bool = False) -> dict:
        if write:
            try:
                publish_guard.check_post("POST", "linear graphql", variables, repository="")
            except PublishBlocked as exc:
                raise LinearError(str(exc), permanent=True) from None
        try:
            return self.client.execute(GraphQLRequest(document, variable_values=variables))
        except TransportQueryError as exc:
            errors = exc.errors or []
            first = errors[0] if errors and isinstance(errors[0], dict) else {}
            code = str((first.get("extensions") or {}).get("code") or "")
            message = str(first.get("message") or exc)
            if code == "RATELIMITED":
                headers = self.transport.response_headers or {}
                reset = headers.get("X-RateLimit-Requests-Reset") or ""
                retry = max(1.0, (int(reset) / 1000.0) - time.time()) if reset.isdigit() else 60.0
                raise LinearError(f"Linear rate limit: {message}", retry_after=retry, code=code) from None
            if message.startswith("Entity not found"):
                code = "ENTITY_NOT_FOUND"  # Linear says so with INVALID_INPUT; the message tells
            raise LinearError(f"Linear: {message} ({code or 'error'})", permanent=code in PERMANENT_CODES, code=code) from None
        except TransportServerError as exc:
            permanent = exc.code in (401, 403)
            raise LinearError(f"Linear answered HTTP {exc.code}: {exc}", permanent=permanent) from None
        except (TransportError, OSError) as exc:
            raise LinearError(f"Linear cannot be reached: {exc}") from None

    # --- reading -----------------------------------------------------------------------------------

    def issues(
        self, *, label: str = "", team_key: str = "", state_name: str = "", assignee_id: str = "", limit: int = 500
    ) -> list[LinearIssue]:
        """Open issues carrying `label` (case-insensitive), of the team `team_key`, in the
        workflow state `state_name` and assigned to `assignee_id` when given, at most `limit`."""
        flt: dict[str, Any] = {"state": {"type": {"nin": CLOSED_STATES}}}
        if assignee_id:
            flt["assignee"] = {"id": {"eq": assignee_id}}
        if label:
            flt["labels"] = {"name": {"eqIgnoreCase": label}}
        if team_key:
            flt["team"] = {"key": {"eq": team_key}}
        if state_name:
            flt["state"]["name"] = {"eqIgnoreCase": state_name}
        found: list[LinearIssue] = []
        after = None
        while len(found) < limit:
            page = self.execute(ISSUES, {"filter": flt, "after": after})["issues"]
            found.extend(LinearIssue.of(n) for n in page["nodes"])
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        return found[:limit]

    def issue(self, id_or_identifier: str) -> LinearIssue | None:
        try:
            node = self.execute(ISSUE, {"id": id_or_identifier})["issue"]
        except LinearError as exc:
            if exc.code == "ENTITY_NOT_FOUND":
                return None
            raise
        return LinearIssue.of(node) if node else None

    def history(self, issue_id: str) -> list[dict]:
        """The issue's history entries (newest first, as Linear returns them)."""
        node = self.execute(ISSUE_HISTORY, {"id": issue_id})["issue"] or {}
        return list((node.get("history") or {}).get("nodes") or [])

    def comments(self, issue_id: str) -> list[dict]:
        node = self.execute(ISSUE_COMMENTS, {"id": issue_id})["issue"] or {}
        return list((node.get("comments") or {}).get("nodes") or [])

    def member(self, user_id: str) -> LinearMember | None:
        try:
            node = self.execute(MEMBER, {"id": user_id})["user"]
        except LinearError as exc:
            if exc.code == "ENTITY_NOT_FOUND":
                return None
            raise
        if not node:
            return None
        teams = frozenset(
            str((m.get("team") or {}).get("key") or "") for m in (node.get("teamMemberships") or {}).get("nodes") or []
        )
        return LinearMember(
            id=str(node["id"]),
            name=str(node.get("displayName") or node.get("name") or ""),
            active=bool(node.get("active")),
            admin=bool(node.get("admin")),
            guest=bool(node.get("guest")),
            app=bool(node.get("app")),
            team_keys=teams,
        )

    def viewer(self) -> dict:
        return self.execute(VIEWER)

    # --- writing -----------------------------------------------------------------------------------

    def comment_create(self, *, issue_id: str, body: str) -> str:
        result = self.execute(COMMENT_CREATE, {"input": {"issueId": issue_id, "body": body}}, write=True)["commentCreate"]
        if not result.get("success"):
            raise LinearError("Linear did not create the comment")
        return str(result["comment"]["id"])

    def comment_update(self, *, comment_id: str, body: str) -> None:
        result = self.execute(COMMENT_UPDATE, {"id": comment_id, "input": {"body": body}}, write=True)["commentUpdate"]
        if not result.get("success"):
            raise LinearError("Linear did not update the comment")

    def attach_link(self, *, issue_id: str, url: str, title: str) -> str:
        """Attach `url` (the pull request) to the issue: Linear shows it in the issue's sidebar.
        Attaching the same URL again updates the attachment (Linear dedupes by URL)."""
        result = self.execute(ATTACHMENT_LINK, {"issueId": issue_id, "url": url, "title": title}, write=True)["attachmentLinkURL"]
        if not result.get("success"):
            raise LinearError("Linear did not attach the link")
        return str(result["attachment"]["id"])
