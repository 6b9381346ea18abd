"""A stand-in for Linear's GraphQL API on loopback, run by graphql-core over a subset of Linear's
schema (the types, fields, inputs and filter comparators TAC-X uses, named as Linear names them):

  Query     issues(filter: IssueFilter, first, after) · issue(id: String!) (an id or an identifier
            such as "ENG-12") · user(id) · viewer · organization
  Mutation  commentCreate(input: {issueId, body}) · commentUpdate(id, input: {body})
            · attachmentLinkURL(issueId, url, title)
  Filters   IssueFilter.labels.name, .team.key, .state.type and .state.name with the
            StringComparator keys eq, eqIgnoreCase, in, nin.

Authentication as Linear's: `Authorization: <api key>` (or `Bearer <oauth token>`); a wrong key
is HTTP 400 with an `AUTHENTICATION_ERROR` GraphQL error. An unknown entity is an error "Entity
not found" with code `INVALID_INPUT`, as Linear answers. `rate_limit(n)` makes the n+1th request a
`RATELIMITED` error with `X-RateLimit-Requests-Reset`.

`webhook(type, action, data, ...)` builds a delivery as Linear signs it: the JSON body with
`webhookTimestamp` (ms) and `webhookId`, the `Linear-Signature` header (hex HMAC-SHA256 of the raw
body with the webhook's signing secret), `Linear-Delivery` (a UUID) and `Linear-Event`.

Not covered: pagination beyond `first` (every page is one page), the rest of Linear's schema
(projects, cycles, agent sessions and activities), OAuth, complexity-based rate limits,
comment threads (`parentId`), and webhook retries (a test re-sends a delivery itself).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from graphql import GraphQLError, build_schema, graphql_sync

from .base import StandIn

SDL = """
scalar DateTime
type Query {
  issues(filter: IssueFilter, first: Int, after: String): IssueConnection!
  issue(id: String!): Issue!
  user(id: String!): User!
  viewer: User!
  organization: Organization!
}
type Mutation {
  commentCreate(input: CommentCreateInput!): CommentPayload!
  commentUpdate(id: String!, input: CommentUpdateInput!): CommentPayload!
  attachmentLinkURL(issueId: String!, url: String!, title: String): AttachmentPayload!
}
input StringComparator { eq: String, eqIgnoreCase: String, in: [String!], nin: [String!] }
input IssueLabelCollectionFilter { name: StringComparator }
input TeamFilter { key: StringComparator }
input WorkflowStateFilter { type: StringComparator, name: StringComparator }
input IDComparator { eq: ID, in: [ID!] }
input NullableUserFilter { id: IDComparator }
input IssueFilter {
  labels: IssueLabelCollectionFilter, team: TeamFilter, state: WorkflowStateFilter, assignee: NullableUserFilter
}
input CommentCreateInput { issueId: String!, body: String! }
input CommentUpdateInput { body: String }
type PageInfo { hasNextPage: Boolean!, endCursor: String }
type IssueConnection { nodes: [Issue!]!, pageInfo: PageInfo! }
type IssueLabel { id: ID!, name: String! }
type IssueLabelConnection { nodes: [IssueLabel!]! }
type WorkflowState { id: ID!, name: String!, type: String! }
type Team { id: ID!, key: String!, name: String! }
type TeamMembership { team: Team! }
type TeamMembershipConnection { nodes: [TeamMembership!]! }
type User {
  id: ID!, name: String!, displayName: String!, active: Boolean!, admin: Boolean!, guest: Boolean!, app: Boolean!
  teamMemberships(first: Int): TeamMembershipConnection!
}
type Organization { id: ID!, urlKey: String! }
type Comment { id: ID!, body: String!, url: String!, user: User }
type CommentConnection { nodes: [Comment!]! }
type Attachment { id: ID!, url: String!, title: String! }
type Issue {
  id: ID!, identifier: String!, title: String!, description: String, url: String!, updatedAt: DateTime!
  state: WorkflowState!, team: Team!, labels(first: Int): IssueLabelConnection!
  assignee: User, delegate: User, comments(first: Int): CommentConnection!, history(first: Int): IssueHistoryConnection!
}
type IssueHistory {
  id: ID!, createdAt: DateTime!, actorId: String, addedLabelIds: [String!], removedLabelIds: [String!]
  fromAssigneeId: String, toAssigneeId: String
}
type IssueHistoryConnection { nodes: [IssueHistory!]! }
type CommentPayload { success: Boolean!, comment: Comment! }
type AttachmentPayload { success: Boolean!, attachment: Attachment! }
"""

SCHEMA = build_schema(SDL)
STATES = {
    "triage": "Triage",
    "backlog": "Backlog",
    "unstarted": "Todo",
    "started": "In Progress",
    "completed": "Done",
    "canceled": "Canceled",
}


def linear_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _matches(value: str, comparator: dict | None) -> bool:
    if not comparator:
        return True
    if "eq" in comparator and comparator["eq"] is not None and value != comparator["eq"]:
        return False
    if comparator.get("eqIgnoreCase") is not None and value.casefold() != comparator["eqIgnoreCase"].casefold():
        return False
    if comparator.get("in") is not None and value not in comparator["in"]:
        return False
    return not (comparator.get("nin") is not None and value in comparator["nin"])


class NotFound(GraphQLError):
    def __init__(self, what: str):
        super().__init__(
            "Entity not found", extensions={"code": "INVALID_INPUT", "userPresentableMessage": f"Entity not found: {what}"}
        )


class LinearStandIn(StandIn):
    name = "linear-standin"

    def __init__(self, *, key: str = "lin_api_standin", org_key: str = "acme"):
        super().__init__()
        self.key = key
        self.org = {"id": str(uuid.uuid4()), "urlKey": org_key}
        self.teams: dict[str, dict] = {}
        self.users: dict[str, dict] = {}
        self.issues: dict[str, dict] = {}
        self.comments: dict[str, dict] = {}
        self.attachments: dict[str, dict] = {}
        self.viewer_id = self.add_user("TAC-X", app=True)["id"]
        self.requests_left: int | None = None

    # --- arranging ---------------------------------------------------------------------------------

    def add_team(self, key: str, name: str = "") -> dict:
        team = {"id": str(uuid.uuid4()), "key": key, "name": name or key, "number": 0}
        self.teams[team["id"]] = team
        return team

    def add_user(
        self,
        name: str,
        *,
        admin: bool = False,
        guest: bool = False,
        app: bool = False,
        active: bool = True,
        teams: tuple[dict, ...] = (),
    ) -> dict:
        user = {
            "id": str(uuid.uuid4()),
            "name": name,
            "displayName": name.lower(),
            "active": active,
            "admin": admin,
            "guest": guest,
            "app": app,
            "team_ids": [t["id"] for t in teams],
        }
        self.users[user["id"]] = user
        return user

    def add_issue(
        self,
        team: dict,
        title: str,
        *,
        description: str = "",
        labels: tuple[str, ...] = (),
        state: str = "unstarted",
        assignee: dict | None = None,
        delegate: dict | None = None,
    ) -> dict:
        team["number"] += 1
        identifier = f"{team['key']}-{team['number']}"
        issue = {
            "id": str(uuid.uuid4()),
            "identifier": identifier,
            "title": title,
            "description": description,
            "url": f"https://linear.app/{self.org['urlKey']}/issue/{identifier.lower()}",
            "updatedAt": linear_now(),
            "state_type": state,
            "team_id": team["id"],
            "labels": [{"id": str(uuid.uuid4()), "name": n} for n in labels],
            "assignee_id": assignee["id"] if assignee else None,
            "delegate_id": delegate["id"] if delegate else None,
            "createdAt": linear_now(),
            "history": [],
        }
        self.issues[issue["id"]] = issue
        return issue

    def set_labels(self, issue: dict, labels: tuple[str, ...], *, by: dict | None = None) -> dict:
        """Change the issue's labels as `by` would in Linear's app (recorded in its history);
        returns `updatedFrom` for the matching webhook."""
        before = [label["id"] for label in issue["labels"]]
        keep = {label["name"]: label for label in issue["labels"]}
        issue["labels"] = [keep.get(n) or {"id": str(uuid.uuid4()), "name": n} for n in labels]
        after = [label["id"] for label in issue["labels"]]
        return self._changed(
            issue,
            by,
            {"labelIds": before},
            addedLabelIds=[i for i in after if i not in before],
            removedLabelIds=[i for i in before if i not in after],
        )

    def set_state(self, issue: dict, state_type: str, *, by: dict | None = None) -> dict:
        """Move the issue to the workflow state of `state_type` (one state per type here)."""
        before = issue["state_type"]
        issue["state_type"] = state_type
        return self._changed(issue, by, {"stateId": before})

    def assign(self, issue: dict, user: dict | None, *, by: dict | None = None, role: str = "assignee") -> dict:
        """Assign (or with None unassign) the issue, or delegate it with `role="delegate"`."""
        before = issue[f"{role}_id"]
        issue[f"{role}_id"] = user["id"] if user else None
        extra = {"fromAssigneeId": before, "toAssigneeId": issue["assignee_id"]} if role == "assignee" else {}
        return self._changed(issue, by, {f"{role}Id": before}, **extra)

    def _changed(self, issue: dict, by: dict | None, updated_from: dict, **history) -> dict:
        previous = issue["updatedAt"]
        time.sleep(0.002)  # Linear's times have milliseconds; keep each change later than the last
        issue["updatedAt"] = linear_now()
        issue["history"].append(
            {"id": str(uuid.uuid4()), "createdAt": issue["updatedAt"], "actorId": by["id"] if by else None, **history}
        )
        return {"updatedAt": previous, **updated_from}

    def rate_limit(self, requests_left: int) -> None:
        self.requests_left = requests_left

    # --- shapes as the API returns them -----------------------------------------------------------

    def user_node(self, user_id: str | None) -> dict | None:
        user = self.users.get(user_id or "")
        if user is None:
            return None
        memberships = [{"team": self.teams[t]} for t in user["team_ids"]]
        return {**user, "teamMemberships": lambda info, **_: {"nodes": memberships}}

    def issue_node(self, issue: dict) -> dict:
        comments = [self.comment_node(c) for c in self.comments.values() if c["issue_id"] == issue["id"]]
        return {
            **issue,
            "state": {"id": issue["state_type"], "name": STATES[issue["state_type"]], "type": issue["state_type"]},
            "team": self.teams[issue["team_id"]],
            "labels": lambda info, **_: {"nodes": issue["labels"]},
            "assignee": self.user_node(issue["assignee_id"]),
            "delegate": self.user_node(issue["delegate_id"]),
            "comments": lambda info, **_: {"nodes": comments},
            "history": lambda info, **_: {"nodes": list(reversed(issue["history"]))},
        }

    def comment_node(self, comment: dict) -> dict:
        return {**comment, "user": self.user_node(comment["user_id"])}

    def find_issue(self, id_or_identifier: str) -> dict:
        for issue in self.issues.values():
            if id_or_identifier in (issue["id"], issue["identifier"]):
                return issue
        raise NotFound("Issue")

    # --- resolvers (root fields) -------------------------------------------------------------------

    def root(self) -> dict:
        return {
            "issues": self._issues,
            "issue": lambda info, id: self.issue_node(self.find_issue(id)),
            "user": lambda info, id: self.user_node(id) or _raise(NotFound("User")),
            "viewer": lambda info: self.user_node(self.viewer_id),
            "organization": lambda info: self.org,
            "commentCreate": self._comment_create,
            "commentUpdate": self._comment_update,
            "attachmentLinkURL": self._attachment_link,
        }

    def _issues(self, info, filter: dict | None = None, first: int = 50, after: str | None = None) -> dict:
        f = filter or {}
        found = []
        for issue in sorted(self.issues.values(), key=lambda i: i["createdAt"], reverse=True):
            team = self.teams[issue["team_id"]]
            state = f.get("state") or {}
            if not (
                _matches(issue["state_type"], state.get("type")) and _matches(STATES[issue["state_type"]], state.get("name"))
            ):
                continue
            if not _matches(team["key"], (f.get("team") or {}).get("key")):
                continue
            if not _matches(issue["assignee_id"] or "", ((f.get("assignee") or {}).get("id"))):
                continue
            label_filter = (f.get("labels") or {}).get("name")
            if label_filter and not any(_matches(label["name"], label_filter) for label in issue["labels"]):
                continue
            found.append(self.issue_node(issue))
        return {"nodes": found[: first or 50], "pageInfo": {"hasNextPage": False, "endCursor": None}}

    def _comment_create(self, info, input: dict) -> dict:
        issue = self.find_issue(input["issueId"])
        comment = {
            "id": str(uuid.uuid4()),
            "issue_id": issue["id"],
            "body": input["body"],
            "user_id": self.viewer_id,
            "url": f"{issue['url']}#comment-{self.next_id()}",
            "history": [],
        }
        self.comments[comment["id"]] = comment
        return {"success": True, "comment": self.comment_node(comment)}

    def _comment_update(self, info, id: str, input: dict) -> dict:
        comment = self.comments.get(id) or _raise(NotFound("Comment"))
        comment["history"].append(comment["body"])
        comment["body"] = input.get("body") or comment["body"]
        return {"success": True, "comment": self.comment_node(comment)}

    def _attachment_link(self, info, issueId: str, url: str, title: str | None = None) -> dict:
        issue = self.find_issue(issueId)
        for attachment in self.attachments.values():
            if attachment["issue_id"] == issue["id"] and attachment["url"] == url:
                attachment["title"] = title or url
                return {"success": True, "attachment": attachment}
        attachment = {"id": str(uuid.uuid4()), "issue_id": issue["id"], "url": url, "title": title or url}
        self.attachments[attachment["id"]] = attachment
        return {"success": True, "attachment": attachment}

    # --- HTTP -------------------------------------------------------------------------------------

    def handle(self, method, path, query, headers, body):
        if method != "POST" or path != "/graphql":
            return 404, {"errors": [{"message": "Not found"}]}, {}
        key = headers.get("authorization", "")
        if key.removeprefix("Bearer ") != self.key:
            return (
                400,
                {
                    "errors": [
                        {"message": "Authentication required, not authenticated", "extensions": {"code": "AUTHENTICATION_ERROR"}}
                    ]
                },
                {},
            )
        with self.lock:
            if self.requests_left is not None:
                if self.requests_left <= 0:
                    reset = str(int((time.time() + 30) * 1000))
                    return (
                        400,
                        {"errors": [{"message": "Rate limit exceeded", "extensions": {"code": "RATELIMITED"}}]},
                        {"X-RateLimit-Requests-Reset": reset},
                    )
                self.requests_left -= 1
            try:
                request = json.loads(body)
            except ValueError:
                return 400, {"errors": [{"message": "Body is not JSON", "extensions": {"code": "BAD_USER_INPUT"}}]}, {}
            result = graphql_sync(
                SCHEMA,
                request.get("query", ""),
                root_value=self.root(),
                variable_values=request.get("variables"),
                operation_name=request.get("operationName"),
            )
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [e.formatted for e in result.errors]
            if result.data is None:
                return 400, answer, {}
        return 200, answer, {}

    # --- webhooks ---------------------------------------------------------------------------------

    def webhook(
        self,
        type_: str,
        action: str,
        data: dict,
        *,
        secret: str,
        actor: dict | None = None,
        updated_from: dict | None = None,
        timestamp_ms: int | None = None,
        delivery: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """A delivery as Linear sends it: (raw body, headers)."""
        payload = {
            "action": action,
            "type": type_,
            "createdAt": linear_now(),
            "data": data,
            "url": data.get("url", ""),
            "organizationId": self.org["id"],
            "webhookTimestamp": timestamp_ms or int(time.time() * 1000),
            "webhookId": str(uuid.uuid4()),
        }
        if actor is not None:
            payload["actor"] = {"id": actor["id"], "name": actor["name"], "type": "user"}
        if updated_from is not None:
            payload["updatedFrom"] = updated_from
        body = json.dumps(payload).encode()
        return body, sign_headers(body, secret, type_, delivery)

    def issue_data(self, issue: dict) -> dict:
        """The `data` of an Issue webhook: the issue as Linear serialises it there (ids, not nodes)."""
        team = self.teams[issue["team_id"]]
        return {
            "id": issue["id"],
            "identifier": issue["identifier"],
            "title": issue["title"],
            "description": issue["description"],
            "url": issue["url"],
            "number": int(issue["identifier"].rsplit("-", 1)[1]),
            "teamId": team["id"],
            "team": {"id": team["id"], "key": team["key"], "name": team["name"]},
            "state": {"id": issue["state_type"], "name": STATES[issue["state_type"]], "type": issue["state_type"]},
            "labelIds": [label["id"] for label in issue["labels"]],
            "labels": [{"id": label["id"], "name": label["name"]} for label in issue["labels"]],
            "assigneeId": issue["assignee_id"],
            "delegateId": issue["delegate_id"],
            "createdAt": issue["createdAt"],
            "updatedAt": issue["updatedAt"],
        }


def sign_headers(body: bytes, secret: str, event: str, delivery: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        "Linear-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "Linear-Delivery": delivery or str(uuid.uuid4()),
        "Linear-Event": event,
    }


def _raise(exc: Exception):
    raise exc
