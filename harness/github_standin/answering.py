"""The GitHub stand-in: answering a request (rate limit, scripted failures, authentication),
git over HTTP, the GitHub App and the checks API, as a mixin of `GitHubStandIn`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .common import PlainText, github_now, user


class Answering:
    # --- answering -------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_path)
        path, query = parts.path.rstrip("/"), {k: v[-1] for k, v in parse_qs(parts.query).items()}
        on_blob_host = self.blob_server is not None and headers.get("host", "") == self.blob_url.removeprefix("http://")
        if on_blob_host or path.startswith("/_blob/"):
            # The download host serves signed URLs only, and needs (and wants) no credentials.
            blob = re.fullmatch(r"/_blob/job-logs/(\d+)", path)
            if not (on_blob_host and blob and method == "GET"):
                return 404, {"message": "Not Found"}, {}
            with self.lock:
                text = self.job_logs.get(int(blob.group(1)))
            return (200, PlainText(text), {}) if text is not None else (404, {"message": "Not Found"}, {})
        with self.lock:
            auth = headers.get("authorization", "")
            self._local.identity = ""
            if path.startswith("/app/") or re.fullmatch(r"/repos/[^/]+/[^/]+/installation", path):
                problem = self.verify_jwt(auth)
                if problem:
                    return 401, {"message": problem, "documentation_url": "https://docs.github.com/rest"}, {}
                self._local.identity = "jwt"
            elif self.token or self.app_id is not None:
                identity = self.authenticate(auth, path)
                if identity is None:
                    return 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}, {}
                if identity == "forbidden":
                    return 403, {"message": "Resource not accessible by integration", "documentation_url": "https://docs.github.com/rest"}, {}
                self._local.identity = identity
            for failure in self.failures:
                if failure.method == method and failure.path_pattern.search(path) and failure.times > 0:
                    failure.times -= 1
                    return failure.status, {"message": failure.message, "documentation_url": "https://docs.github.com/rest"}, dict(failure.headers)
            if self.rate_remaining <= 0:
                return 403, {"message": "API rate limit exceeded for user.", "documentation_url": "https://docs.github.com/rest"}, {}
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                return 400, {"message": "Problems parsing JSON"}, {}
            return self.route(method, path, query, headers, payload)

    # --- git over HTTP --------------------------------------------------------------------------

    def handle_git(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        import base64
        import subprocess

        parts = urlsplit(raw_path)
        m = re.fullmatch(r"/git/([^/]+)/([^/]+?)(?:\.git)?(/.*)", parts.path)
        if self.git_root is None or not m:
            return 404, {}, b"Not Found"
        owner, name, rest = m.group(1), m.group(2), m.group(3)
        auth = headers.get("authorization", "")
        identity = None
        if auth.startswith("Basic "):
            try:
                login, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                login, secret = "", ""
            with self.lock:
                identity = self.authenticate(f"Bearer {secret}", f"/repos/{owner}/{name}") if login == "x-access-token" else None
        with self.lock:
            self.git_requests.append({"method": method, "path": parts.path, "query": parts.query, "identity": identity or "", "authorization": auth})
        if identity is None or identity == "forbidden":
            return 401, {"WWW-Authenticate": 'Basic realm="GitHub"'}, b"Invalid username or token."
        repo_dir = next((p for p in (self.git_root / owner / name, self.git_root / owner / f"{name}.git") if p.is_dir()), None)
        if repo_dir is None:
            return 404, {}, b"Repository not found."
        env = {
            "PATH": "/usr/bin:/bin",
            "GIT_PROJECT_ROOT": str(repo_dir.parent),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{repo_dir.name}{rest}",
            "QUERY_STRING": parts.query,
            "REQUEST_METHOD": method,
            "CONTENT_TYPE": headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": identity,  # an authenticated user may push (http.receivepack)
            "REMOTE_ADDR": "127.0.0.1",
        }
        if headers.get("content-encoding"):
            env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]
        if headers.get("git-protocol"):
            env["GIT_PROTOCOL"] = headers["git-protocol"]
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _ and b"\n\n" in proc.stdout:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status, out_headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                out_headers[key.strip()] = value.strip()
        return status, out_headers, payload

    # --- the GitHub App ---------------------------------------------------------------------------

    def verify_jwt(self, auth: str) -> str:
        """"" when `auth` carries a valid App JWT, else GitHub's message."""
        import jwt

        if self.app_id is None or not auth.startswith("Bearer "):
            return "A JSON web token could not be decoded"
        self.jwts_seen += 1
        try:
            claims = jwt.decode(
                auth[len("Bearer ") :],
                self.app_public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return "A JSON web token could not be decoded"
        now = self.clock()
        if str(claims["iss"]) != str(self.app_id):
            return "Integration not found"
        if claims["iat"] > now + 5:
            return "'Issued at' claim ('iat') must be an Integer representing a time in the past"
        if claims["exp"] <= now:
            return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
        if claims["exp"] > now + 600 + 5:
            return "'Expiration time' claim ('exp') is too far in the future"
        return ""

    def authenticate(self, auth: str, path: str) -> str | None:
        """"token", "installation:<id>", "forbidden" (a token of another installation), or
        None (bad or expired credentials)."""
        if self.token and auth == f"Bearer {self.token}":
            return "token"
        if not auth.startswith(("Bearer ", "token ")):
            return None
        info = self.installation_tokens.get(auth.split(" ", 1)[1])
        if info is None or info["expires_at"] <= self.clock():
            return None
        m = re.match(r"/repos/([^/]+/[^/]+)", path)
        if m and m.group(1).lower() not in self.installations[info["installation"]]["repos"]:
            return "forbidden"
        return f"installation:{info['installation']}"

    def route_app(self, method: str, path: str) -> tuple[int, Any, dict[str, str]] | None:
        if (m := re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)) and method == "POST":
            installation = int(m.group(1))
            if installation not in self.installations:
                return 404, {"message": "Not Found"}, {}
            import secrets

            token = "ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36]
            expires_at = int(self.clock()) + self.token_lifetime
            self.installation_tokens[token] = {"installation": installation, "expires_at": expires_at}
            return 201, {
                "token": token,
                "expires_at": datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": {"checks": "write", "contents": "write", "issues": "write", "pull_requests": "write", "statuses": "write"},
                "repository_selection": "selected",
            }, {}
        if m := re.fullmatch(r"/repos/([^/]+/[^/]+)/installation", path):
            for installation, info in self.installations.items():
                if m.group(1).lower() in info["repos"]:
                    return 200, {
                        "id": installation,
                        "account": user(info["account"], "Organization"),
                        "app_id": self.app_id,
                        "app_slug": "tac-x",
                        "target_type": "Organization",
                        "repository_selection": "selected",
                        "access_tokens_url": f"https://api.github.com/app/installations/{installation}/access_tokens",
                        "repositories_url": "https://api.github.com/installation/repositories",
                        "html_url": f"https://github.com/organizations/{info['account']}/settings/installations/{installation}",
                        "permissions": {"checks": "write", "contents": "write", "issues": "write", "pull_requests": "write", "statuses": "write"},
                        "events": ["issues", "issue_comment", "pull_request", "pull_request_review", "check_run"],
                        "created_at": github_now(),
                        "updated_at": github_now(),
                    }, {}
            return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app"}, {}
        return None

    # --- checks and statuses ----------------------------------------------------------------------

    def route_checks(self, method: str, full_name: str, rest: str, query: dict, payload: Any) -> tuple[int, Any, dict[str, str]] | None:
        key = full_name.lower()
        if rest == "check-runs" and method == "POST":
            if not self._local.identity.startswith("installation:"):
                return 403, {"message": "You must authenticate via a GitHub App.", "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run"}, {}
            if not isinstance(payload, dict) or not payload.get("name") or not re.fullmatch(r"[0-9a-f]{40}", str(payload.get("head_sha", ""))):
                return 422, {"message": "Validation Failed", "errors": [{"resource": "CheckRun", "code": "invalid", "field": "head_sha"}]}, {}
            run = {"id": self.next_id(), "head_sha": payload["head_sha"], "name": payload["name"], "status": "queued", "conclusion": None,
                   "started_at": None, "completed_at": None, "output": {"title": None, "summary": None, "text": None, "annotations_count": 0},
                   "details_url": None, "external_id": None, "app": {"id": self.app_id, "slug": "tac-x"}, "_repo": key, "history": []}
            problem = self.apply_check(run, payload)
            if problem:
                return 422, {"message": problem}, {}
            run["html_url"] = f"https://github.com/{full_name}/runs/{run['id']}"
            self.check_runs[run["id"]] = run
            return 201, self.public_check(run), {}
        if (m := re.fullmatch(r"check-runs/(\d+)", rest)) and method == "PATCH":
            run = self.check_runs.get(int(m.group(1)))
            if run is None or run["_repo"] != key:
                return 404, {"message": "Not Found"}, {}
            if not self._local.identity.startswith("installation:"):
                return 403, {"message": "You must authenticate via a GitHub App."}, {}
            problem = self.apply_check(run, payload if isinstance(payload, dict) else {})
            if problem:
                return 422, {"message": problem}, {}
            return 200, self.public_check(run), {}
        if (m := re.fullmatch(r"commits/([^/]+)/check-runs", rest)) and method == "GET":
            found = [self.public_check(c) for c in self.check_runs.values() if c["_repo"] == key and c["head_sha"] == m.group(1)]
            return self.paginated_wrapped(f"/repos/{full_name}/{rest}", "check_runs", found, query)
        if (m := re.fullmatch(r"check-suites/(\d+)/check-runs", rest)) and method == "GET":
            found = [self.public_check(c) for c in self.check_runs.values() if c["_repo"] == key and (c.get("check_suite") or {}).get("id") == int(m.group(1))]
            return self.paginated_wrapped(f"/repos/{full_name}/{rest}", "check_runs", found, query)
        if (m := re.fullmatch(r"statuses/([0-9a-f]{40})", rest)) and method == "POST":
            if not isinstance(payload, dict) or payload.get("state") not in ("error", "failure", "pending", "success"):
                return 422, {"message": "Validation Failed", "errors": [{"resource": "Status", "code": "custom", "field": "state"}]}, {}
            if len(str(payload.get("description") or "")) > 140:
                return 422, {"message": "Validation Failed", "errors": [{"resource": "Status", "code": "custom", "field": "description", "message": "description is too long (maximum is 140 characters)"}]}, {}
            status = {"id": self.next_id(), "state": payload["state"], "description": payload.get("description"), "target_url": payload.get("target_url"),
                      "context": payload.get("context") or "default", "created_at": github_now(), "updated_at": github_now(),
                      "creator": user("tacx-bot[bot]", "Bot"), "_repo": key, "_sha": m.group(1)}
            self.statuses.append(status)
            return 201, {k: v for k, v in status.items() if not k.startswith("_")}, {}
        if (m := re.fullmatch(r"commits/([^/]+)/statuses", rest)) and method == "GET":
            found = [{k: v for k, v in st.items() if not k.startswith("_")} for st in reversed(self.statuses) if st["_repo"] == key and st["_sha"] == m.group(1)]
            return 200, found, {}
        if (m := re.fullmatch(r"pulls/(\d+)/reviews", rest)) and method == "GET":
            return self.paginated(f"/repos/{full_name}/{rest}", list(self.reviews.get((key, int(m.group(1))), [])), query)
        return None

    @staticmethod
    def apply_check(run: dict, payload: dict) -> str:
        for name in ("name", "details_url", "external_id", "started_at", "completed_at"):
            if name in payload:
                run[name] = payload[name]
        if "status" in payload:
            if payload["status"] not in ("queued", "in_progress", "completed"):
                return f"Invalid status {payload['status']!r}"
            run["status"] = payload["status"]
        if "conclusion" in payload:
            if payload["conclusion"] not in ("action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out"):
                return f"Invalid conclusion {payload['conclusion']!r}"
            run["conclusion"], run["status"] = payload["conclusion"], "completed"
        if run["status"] == "completed" and not run["conclusion"]:
            return "Conclusion is required when status is completed"
        if "output" in payload:
            output = payload["output"] or {}
            if not output.get("title") or not output.get("summary"):
                return "output needs title and summary"
            if len(output["summary"]) > 65535:
                return "output.summary is too long (maximum is 65535 characters)"
            run["output"] = {"title": output["title"], "summary": output["summary"], "text": output.get("text"), "annotations_count": 0}
        run["history"].append((run["status"], run["conclusion"]))
        return ""

    @staticmethod
    def public_check(run: dict) -> dict:
        return {k: v for k, v in run.items() if not k.startswith("_") and k != "history"}
