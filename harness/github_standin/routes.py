"""The GitHub stand-in: the REST routes for issues, comments, pulls and reviews, and pagination,
as a mixin of `GitHubStandIn`."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import urlencode

from .common import WRITE_ROLES, github_now, user


class Routes:
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
        if (mm := re.fullmatch(r"issues/(\d+)", rest)) and method == "GET":
            issue = self.issues[key].get(int(mm.group(1)))
            return (200, issue, {}) if issue is not None else (404, {"message": "Not Found"}, {})
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
        # GitHub's sort (created or updated) and direction (desc by default for created, asc
        # otherwise), when asked; unasked, the order the pulls were made in.
        sort = query.get("sort", "")
        if sort in ("created", "updated"):
            found.sort(key=lambda p: (p[f"{sort}_at"], p["number"]), reverse=query.get("direction", "desc" if sort == "created" else "asc") == "desc")
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
