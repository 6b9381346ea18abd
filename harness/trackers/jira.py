"""A stand-in for Jira Cloud's REST API v3 on loopback (the endpoints TAC-X uses, in Jira's
documented shapes):

  GET  /rest/api/3/search/jql?jql=&fields=&maxResults=&nextPageToken=   {issues, nextPageToken, isLast}
  GET  /rest/api/3/issue/{key}                                            404 {errorMessages} when unknown
  GET  /rest/api/3/issue/{key}/changelog                                  {values: [{author, created, items}], isLast}
  GET  /rest/api/3/issue/{key}/comment                                    {comments, total, ...}
  POST /rest/api/3/issue/{key}/comment                                    201; the body must be ADF
  PUT  /rest/api/3/issue/{key}/comment/{id}                               200; the body must be ADF
  POST /rest/api/3/issue/{key}/remotelink                                 201 new, 200 same globalId
  GET  /rest/api/3/user/permission/search?accountId=&projectKey=&permissions=
  GET  /rest/api/3/user?accountId=

Authentication: HTTP Basic `email:api token` (401 otherwise). JQL: clauses joined by AND, each
`project`, `labels`, `assignee`, `status` or `statusCategory` with `=` or `!=` and a value
(quoted or not), optionally `ORDER BY ...` (ignored); anything else is Jira's 400 "Error in the
JQL Query". Permissions are granted per (account, project) with `grant(...)`.

`webhook(event, issue, ...)` builds an admin-webhook delivery as Jira Cloud sends it:
`X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>` with the webhook's secret and
`X-Atlassian-Webhook-Identifier` (the same on a retry of the same delivery).

Not covered: the rest of JQL (OR, IN, functions, text search), changelog paging (one page),
issue transitions, ADF beyond paragraphs/text/links/mentions, webhooks of Connect or OAuth apps
(JWT-signed, not supported by TAC-X), Jira's own webhook retries, and rate limits (scripted with
`fail_next(429, ..., {"Retry-After": "5"})`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid

from .base import StandIn

CLAUSE = re.compile(r'^\s*(\w+)\s*(!=|=)\s*("([^"]*)"|\'([^\']*)\'|([\w.@:-]+))\s*$')
CATEGORIES = {"To Do": "new", "In Progress": "indeterminate", "Done": "done"}


def jira_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}+0000"


class JiraStandIn(StandIn):
    name = "jira-standin"

    def __init__(self, *, email: str = "tacx@example.com", token: str = "jira-standin-token"):
        super().__init__()
        self.email, self.token = email, token
        self.projects: dict[str, dict] = {}
        self.users: dict[str, dict] = {}
        self.issues: dict[str, dict] = {}
        self.comments: dict[str, list[dict]] = {}
        self.remote_links: dict[str, list[dict]] = {}
        self.changelogs: dict[str, list[dict]] = {}
        self.grants: set[tuple[str, str, str]] = set()  # (accountId, project key, permission)
        self.me = self.add_user("TAC-X", account_type="app")

    def add_project(self, key: str) -> dict:
        project = {"id": str(self.next_id()), "key": key, "name": key, "count": 0}
        self.projects[key] = project
        return project

    def add_user(self, name: str, *, account_type: str = "atlassian", active: bool = True) -> dict:
        user = {
            "accountId": f"5b10ac8d82e05b22cc7d{self.next_id():04d}",
            "displayName": name,
            "accountType": account_type,
            "active": active,
        }
        self.users[user["accountId"]] = user
        return user

    def grant(self, user: dict, project: dict, *permissions: str) -> None:
        for permission in permissions:
            self.grants.add((user["accountId"], project["key"], permission))

    def add_issue(
        self,
        project: dict,
        title: str,
        *,
        description: str = "",
        labels: tuple[str, ...] = (),
        status: str = "To Do",
        assignee: dict | None = None,
        reporter: dict | None = None,
    ) -> dict:
        project["count"] += 1
        key = f"{project['key']}-{project['count']}"
        issue = {
            "reporter": (reporter or self.me)["accountId"],
            "created": jira_now(),
            "id": str(self.next_id()),
            "key": key,
            "project": project["key"],
            "summary": title,
            "description": description,
            "labels": list(labels),
            "status": status,
            "assignee": assignee["accountId"] if assignee else None,
            "updated": jira_now(),
        }
        self.issues[key] = issue
        self.comments[key] = []
        self.changelogs[key] = []
        return issue

    def set_labels(self, issue: dict, labels: tuple[str, ...], *, by: dict) -> list[dict]:
        """Change the labels as `by` would; the changelog items (for the matching webhook)."""
        items = [
            {
                "field": "labels",
                "fieldtype": "jira",
                "fieldId": "labels",
                "from": None,
                "fromString": " ".join(issue["labels"]),
                "to": None,
                "toString": " ".join(labels),
            }
        ]
        issue["labels"] = list(labels)
        return self._changed(issue, by, items)

    def assign(self, issue: dict, user: dict | None, *, by: dict) -> list[dict]:
        before = self.users.get(issue["assignee"] or "")
        items = [
            {
                "field": "assignee",
                "fieldtype": "jira",
                "fieldId": "assignee",
                "from": issue["assignee"],
                "fromString": before["displayName"] if before else None,
                "to": user["accountId"] if user else None,
                "toString": user["displayName"] if user else None,
            }
        ]
        issue["assignee"] = user["accountId"] if user else None
        return self._changed(issue, by, items)

    def _changed(self, issue: dict, by: dict, items: list[dict]) -> list[dict]:
        time.sleep(0.002)
        issue["updated"] = jira_now()
        self.changelogs[issue["key"]].append(
            {"id": str(self.next_id()), "author": by, "created": issue["updated"], "items": items}
        )
        return items

    # --- shapes ---------------------------------------------------------------------------------

    def issue_json(self, issue: dict) -> dict:
        project = self.projects[issue["project"]]
        description = {
            "type": "doc",
            "version": 1,
            "content": [
                {"type": "paragraph", "content": [{"type": "text", "text": line}]}
                for line in issue["description"].splitlines()
                if line
            ],
        }
        return {
            "id": issue["id"],
            "key": issue["key"],
            "self": f"{self.url}/rest/api/3/issue/{issue['id']}",
            "fields": {
                "summary": issue["summary"],
                "description": description if issue["description"] else None,
                "labels": issue["labels"],
                "status": {
                    "name": issue["status"],
                    "statusCategory": {"key": CATEGORIES.get(issue["status"], "new"), "name": issue["status"]},
                },
                "project": {"id": project["id"], "key": project["key"], "name": project["name"]},
                "assignee": self.users.get(issue["assignee"] or ""),
                "reporter": self.users.get(issue["reporter"] or ""),
                "created": issue["created"],
                "updated": issue["updated"],
            },
        }

    def _matches(self, issue: dict, field: str, op: str, value: str) -> bool:
        have = {
            "project": [issue["project"]],
            "labels": issue["labels"],
            "assignee": [issue["assignee"] or ""],
            "status": [issue["status"]],
            "statuscategory": [
                {"new": "To Do", "indeterminate": "In Progress", "done": "Done"}[CATEGORIES.get(issue["status"], "new")]
            ],
        }[field.lower()]
        found = any(h.casefold() == value.casefold() for h in have)
        return found if op == "=" else not found

    def search(self, jql: str) -> list[dict] | None:
        jql = re.split(r"\s+ORDER\s+BY\s+", jql, flags=re.IGNORECASE)[0]
        clauses = []
        for part in re.split(r"\s+AND\s+", jql, flags=re.IGNORECASE) if jql.strip() else []:
            match = CLAUSE.match(part)
            if not match or match.group(1).lower() not in ("project", "labels", "assignee", "status", "statuscategory"):
                return None
            clauses.append((match.group(1), match.group(2), next(g for g in match.groups()[3:] if g is not None)))
        return [i for i in self.issues.values() if all(self._matches(i, *c) for c in clauses)]

    # --- HTTP -----------------------------------------------------------------------------------

    def handle(self, method, path, query, headers, body):
        expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        if headers.get("authorization") != expected:
            return (
                401,
                {
                    "errorMessages": ["You are not authenticated. Authentication required to perform this operation."],
                    "errors": {},
                },
                {},
            )
        if not path.startswith("/rest/api/3/"):
            return 404, {"errorMessages": ["Not found"], "errors": {}}, {}
        parts = path[len("/rest/api/3/") :].strip("/").split("/")
        with self.lock:
            if parts == ["search", "jql"] and method == "GET":
                found = self.search(query.get("jql", ""))
                if found is None:
                    return (
                        400,
                        {
                            "errorMessages": [f"Error in the JQL Query: the stand-in cannot read {query.get('jql', '')!r}"],
                            "errors": {},
                        },
                        {},
                    )
                size = int(query.get("maxResults") or 50)
                start = int(query.get("nextPageToken") or 0)
                page = found[start : start + size]
                last = start + size >= len(found)
                answer = {"issues": [self.issue_json(i) for i in page], "isLast": last}
                if not last:
                    answer["nextPageToken"] = str(start + size)
                return 200, answer, {}
            if parts[:1] == ["user"]:
                return self._users(parts, query)
            if parts[:1] != ["issue"] or len(parts) < 2 or parts[1] not in self.issues:
                return 404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}}, {}
            issue = self.issues[parts[1]]
            if len(parts) == 2 and method == "GET":
                return 200, self.issue_json(issue), {}
            data = json.loads(body) if body else {}
            if parts[2:] == ["changelog"] and method == "GET":
                values = self.changelogs[issue["key"]]
                return 200, {"startAt": 0, "maxResults": 100, "total": len(values), "isLast": True, "values": values}, {}
            if parts[2:] == ["comment"] and method == "GET":
                comments = self.comments[issue["key"]]
                return 200, {"startAt": 0, "maxResults": 100, "total": len(comments), "comments": comments}, {}
            if parts[2:3] == ["comment"] and method in ("POST", "PUT"):
                if not isinstance(data.get("body"), dict) or data["body"].get("type") != "doc":
                    return (
                        400,
                        {
                            "errorMessages": [],
                            "errors": {
                                "comment": "Comment body is not valid! Operation value must be an Atlassian Document (see the Atlassian Document Format)"
                            },
                        },
                        {},
                    )
                if method == "POST":
                    comment = {
                        "id": str(self.next_id()),
                        "body": data["body"],
                        "author": self.me,
                        "created": jira_now(),
                        "updated": jira_now(),
                        "history": [],
                    }
                    self.comments[issue["key"]].append(comment)
                    return 201, comment, {}
                comment = next((c for c in self.comments[issue["key"]] if c["id"] == (parts[3:4] or [""])[0]), None)
                if comment is None:
                    return 404, {"errorMessages": ["Can not find a comment for the id."], "errors": {}}, {}
                comment["history"].append(comment["body"])
                comment.update(body=data["body"], updated=jira_now())
                return 200, comment, {}
            if parts[2:] == ["remotelink"] and method == "POST":
                links = self.remote_links.setdefault(issue["key"], [])
                for link in links:
                    if data.get("globalId") and link["globalId"] == data["globalId"]:
                        link["object"] = data.get("object") or {}
                        return (
                            200,
                            {"id": link["id"], "self": f"{self.url}/rest/api/3/issue/{issue['key']}/remotelink/{link['id']}"},
                            {},
                        )
                link = {"id": self.next_id(), "globalId": data.get("globalId", ""), "object": data.get("object") or {}}
                links.append(link)
                return 201, {"id": link["id"], "self": f"{self.url}/rest/api/3/issue/{issue['key']}/remotelink/{link['id']}"}, {}
        return 405, {"errorMessages": [f"{method} is not supported here"], "errors": {}}, {}

    def _users(self, parts, query):
        if parts == ["user"]:
            user = self.users.get(query.get("accountId", ""))
            return (
                (200, user, {})
                if user
                else (
                    404,
                    {"errorMessages": ["Specified user does not exist or you do not have required permissions"], "errors": {}},
                    {},
                )
            )
        if parts == ["user", "permission", "search"]:
            if not query.get("permissions"):
                return 400, {"errorMessages": ["The 'permissions' parameter is required."], "errors": {}}, {}
            wanted = [p.strip() for p in query["permissions"].split(",") if p.strip()]
            account = query.get("accountId", "")
            users = [
                u
                for u in self.users.values()
                if (not account or u["accountId"] == account)
                and all((u["accountId"], query.get("projectKey", ""), p) in self.grants for p in wanted)
            ]
            return 200, users, {}
        return 404, {"errorMessages": ["Not found"], "errors": {}}, {}

    # --- webhooks ---------------------------------------------------------------------------------

    def webhook(
        self,
        event: str,
        issue: dict,
        *,
        secret: str,
        user: dict | None = None,
        changelog: list[dict] | None = None,
        comment_text: str = "",
        identifier: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        payload: dict = {"timestamp": int(time.time() * 1000), "webhookEvent": event, "issue": self.issue_json(issue)}
        if event.startswith("jira:"):
            payload["issue_event_type_name"] = "issue_created" if event == "jira:issue_created" else "issue_generic"
            payload["user"] = {
                **(user or self.me),
                "self": f"{self.url}/rest/api/3/user?accountId={(user or self.me)['accountId']}",
            }
            if changelog is not None:
                payload["changelog"] = {"id": str(self.next_id()), "items": changelog}
        else:
            author = user or self.me
            payload["comment"] = {
                "id": str(self.next_id()),
                "self": f"{self.url}/rest/api/3/issue/{issue['id']}/comment/1",
                "author": author,
                "updateAuthor": author,
                "created": jira_now(),
                "updated": jira_now(),
                "body": {
                    "type": "doc",
                    "version": 1,
                    "content": [{"type": "paragraph", "content": [{"type": "text", "text": comment_text}]}],
                },
            }
        body = json.dumps(payload).encode()
        return body, sign_headers(body, secret, identifier)


def sign_headers(body: bytes, secret: str, identifier: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        "X-Hub-Signature": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "X-Atlassian-Webhook-Identifier": identifier or str(uuid.uuid4()),
    }
