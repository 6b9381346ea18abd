"""The GitLab stand-in on loopback: the REST v4 endpoints TAC-X uses, answering in GitLab's
documented shapes (https://docs.gitlab.com/api/): `PRIVATE-TOKEN` auth (401 otherwise), projects
named by their URL-encoded path, offset pagination (`page`, `per_page`, `X-Next-Page`), 404
`{"message": "404 Not found"}`, 409 for a second open MR from one source branch.

Not covered (TAC-X does not use them): keyset pagination, numeric project ids, GraphQL, rate
limits (429 only when a test scripts one with `fail_next`), merge request approvals, git over
HTTP (tests push to a bare repository on disk).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from harness.modelserver.server import read_body

from .state import State


class GitLabStandIn(State):
    def __init__(self, *, token: str, web_url: str = "https://gitlab.example"):
        super().__init__(token=token, web_url=web_url)
        self.server: ThreadingHTTPServer | None = None
        self.failures: list[tuple[str, re.Pattern, int]] = []
        self.origins: dict[str, str] = {}  # project path -> its bare repository on disk (MR heads)

    def start(self) -> GitLabStandIn:
        standin = self

        class Handler(_Handler):
            owner = standin

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="gitlab-standin", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, method: str, path_regex: str, *, status: int = 500) -> None:
        self.failures.append((method, re.compile(path_regex), status))

    def requests_to(self, method: str, path_regex: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and re.search(path_regex, r["path"])]

    def mrs_of(self, path: str) -> list[dict]:
        return list(self.mrs[path].values())

    def notes_on(self, path: str, iid: int, *, mr: bool = False) -> list[dict]:
        return [n for n in self.notes.get((path, "merge_requests" if mr else "issues", iid), []) if not n["system"]]

    # --- answering ----------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            self.requests.append(
                {"method": method, "path": unquote(parts.path), "query": query, "body": body.decode("utf-8", "replace")}
            )
            for i, (m, pattern, status) in enumerate(self.failures):
                if m == method and pattern.search(unquote(parts.path)):
                    del self.failures[i]
                    return status, {"message": f"{status} scripted failure"}, {}
        if headers.get("private-token") != self.token:
            return 401, {"message": "401 Unauthorized"}, {}
        if not parts.path.startswith("/api/v4/"):
            return 404, {"message": "404 Not found"}, {}
        segments = parts.path[len("/api/v4/") :].split("/")
        data = json.loads(body) if body else {}
        with self.lock:
            try:
                return self.route(method, segments, query, data)
            except KeyError:
                return 404, {"message": "404 Not found"}, {}

    def page(self, items: list, query: dict) -> tuple[int, Any, dict[str, str]]:
        size, number = min(int(query.get("per_page", 20)), 100), int(query.get("page", 1))
        chunk = items[(number - 1) * size : number * size]
        more = len(items) > number * size
        return 200, chunk, {"X-Next-Page": str(number + 1) if more else "", "X-Page": str(number), "X-Per-Page": str(size)}

    def route(self, method: str, seg: list[str], query: dict, data: dict) -> tuple[int, Any, dict[str, str]]:
        if seg == ["users"]:
            name = query.get("username", "")
            return 200, [self.user(name)] if name in self.users else [], {}
        if seg[0] != "projects" or len(seg) < 3:
            raise KeyError(seg)
        path = unquote(seg[1])
        project = self.projects[path]
        rest = seg[2:]
        key = (method, rest[0], len(rest))
        if key == ("GET", "members", 3) and rest[1] == "all":
            uid = int(rest[2])
            for name, level in project["members"].items():
                if self.users.get(name) == uid:
                    return 200, {**self.user(name), "access_level": level}, {}
            raise KeyError(uid)
        if rest[0] == "issues":
            return self.route_issues(method, path, rest[1:], query, data)
        if rest[0] == "merge_requests":
            return self.route_mrs(method, path, rest[1:], query, data)
        if key == ("POST", "statuses", 2):
            status = {
                "id": self.next_id(),
                "sha": rest[1],
                "status": data["state"],
                "name": data.get("name", "default"),
                "description": data.get("description"),
                "target_url": data.get("target_url"),
            }
            self.statuses.append(status)
            return 201, status, {}
        if key == ("GET", "pipelines", 3) and rest[2] == "jobs":
            jobs = [{k: v for k, v in self.jobs[j].items() if k != "log"} for j in self.pipelines[int(rest[1])]["jobs"]]
            return self.page(jobs, query)
        if key == ("GET", "pipelines", 2):
            p = self.pipelines[int(rest[1])]
            return 200, {k: v for k, v in p.items() if k != "jobs"}, {}
        if key == ("GET", "jobs", 3) and rest[2] == "trace":
            return 200, self.jobs[int(rest[1])]["log"], {"Content-Type": "text/plain"}
        raise KeyError(rest)

    def route_issues(self, method: str, path: str, rest: list[str], query: dict, data: dict) -> tuple[int, Any, dict[str, str]]:
        if not rest and method == "GET":
            items = [i for i in self.issues[path].values() if query.get("state", "opened") in ("all", i["state"])]
            if "labels" in query:
                wanted = {lb.casefold() for lb in query["labels"].split(",")}
                items = [i for i in items if wanted <= {lb.casefold() for lb in i["labels"]}]
            if "assignee_username" in query:
                items = [i for i in items if query["assignee_username"] in {a["username"] for a in i["assignees"]}]
            return self.page(items, query)
        iid = int(rest[0])
        issue = self.issues[path][iid]
        if len(rest) == 1 and method == "GET":
            return 200, issue, {}
        if rest[1:] == ["resource_label_events"]:
            return self.page(self.label_events.get((path, iid), []), query)
        return self.route_notes(method, path, "issues", iid, rest[2:] if rest[1] == "notes" else None, query, data)

    def route_notes(
        self, method: str, path: str, kind: str, iid: int, rest: list[str] | None, query: dict, data: dict
    ) -> tuple[int, Any, dict[str, str]]:
        if rest is None:
            raise KeyError("notes")
        notes = self.notes.setdefault((path, kind, iid), [])
        if not rest and method == "GET":
            return self.page(notes, query)
        if not rest and method == "POST":
            return 201, self.add_note(path, iid, data["body"], author="tacx-bot", mr=kind == "merge_requests"), {}
        note = next(n for n in notes if n["id"] == int(rest[0])) if any(n["id"] == int(rest[0]) for n in notes) else None
        if note is None:
            raise KeyError(rest[0])
        if len(rest) == 1 and method == "PUT":
            note["body"] = data["body"]
            note["updated_at"] = self.now()
            return 200, note, {}
        if rest[1:] == ["award_emoji"] and method == "POST":
            award = {
                "id": self.next_id(),
                "name": data["name"],
                "awardable_id": note["id"],
                "awardable_type": "Note",
                "user": self.user("tacx-bot"),
            }
            self.emoji.append(award)
            return 201, award, {}
        raise KeyError(rest)

    def route_mrs(self, method: str, path: str, rest: list[str], query: dict, data: dict) -> tuple[int, Any, dict[str, str]]:
        mrs = self.mrs[path]
        if not rest and method == "GET":
            items = [m for m in mrs.values() if query.get("state", "all") in ("all", m["state"])]
            if "source_branch" in query:
                items = [m for m in items if m["source_branch"] == query["source_branch"]]
            return self.page(items, query)
        if not rest and method == "POST":
            if any(m["state"] == "opened" and m["source_branch"] == data["source_branch"] for m in mrs.values()):
                return 409, {"message": ["Another open merge request already exists for this source branch"]}, {}
            iid = len(mrs) + 1
            title = data["title"]
            mr = {
                "id": self.next_id(),
                "iid": iid,
                "title": title,
                "description": data.get("description", ""),
                "state": "opened",
                "source_branch": data["source_branch"],
                "target_branch": data["target_branch"],
                "draft": title.lower().startswith("draft:"),
                "web_url": f"{self.web_url}/{path}/-/merge_requests/{iid}",
                "sha": self.branch_head(path, data["source_branch"]),
            }
            mrs[iid] = mr
            return 201, mr, {}
        iid = int(rest[0])
        mr = mrs[iid]
        if len(rest) == 1 and method == "GET":
            mr["sha"] = self.branch_head(path, mr["source_branch"]) or mr["sha"]
            return 200, mr, {}
        if len(rest) == 1 and method == "PUT":
            for field in ("title", "description"):
                if field in data:
                    mr[field] = data[field]
            mr["draft"] = mr["title"].lower().startswith("draft:")
            return 200, mr, {}
        if rest[1] == "discussions" and len(rest) == 4 and rest[3] == "notes" and method == "POST":
            notes = self.notes.setdefault((path, "merge_requests", iid), [])
            if not any(n["discussion_id"] == unquote(rest[2]) for n in notes):
                raise KeyError(rest[2])
            note = self.add_note(path, iid, data["body"], author="tacx-bot", mr=True)
            note["discussion_id"] = unquote(rest[2])
            return 201, note, {}
        return self.route_notes(method, path, "merge_requests", iid, rest[2:] if rest[1] == "notes" else None, query, data)

    def branch_head(self, path: str, branch: str) -> str:
        """The head of `branch` in the project's origin on disk, when a test gave one (`origins`)."""
        origin = self.origins.get(path)
        if not origin:
            return ""
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=origin, capture_output=True, text=True
        )
        return found.stdout.strip()


class _Handler(BaseHTTPRequestHandler):
    owner: GitLabStandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:
        body = read_body(self)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, data, extra = self.owner.handle(self.command, self.path, headers, body)
        raw = data.encode() if isinstance(data, str) else json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", extra.pop("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(raw)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = _serve
