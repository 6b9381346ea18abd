"""The GitHub stand-in itself: its state, its lifecycle on loopback, and the HTTP handler."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlsplit

from harness.modelserver.server import read_body

from .answering import Answering
from .arranging import Arranging
from .common import PlainText, RepoState, ScriptedFailure
from .routes import Routes


class GitHubStandIn(Arranging, Answering, Routes):
    def __init__(
        self,
        *,
        token: str = "",
        rate_limit: int = 5000,
        page_size_cap: int = 100,
        app_id: int | None = None,
        app_public_key: str = "",
        token_lifetime: int = 3600,
        clock=time.time,
        git_root: str | Path | None = None,
    ):
        self.token = token
        self.git_root = Path(git_root) if git_root else None
        self.git_requests: list[dict] = []
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.installations: dict[int, dict] = {}  # id -> {"account": login, "repos": {lower names}}
        self.installation_tokens: dict[str, dict] = {}  # token -> {"installation": id, "expires_at": epoch}
        self.jwts_seen = 0
        self._local = threading.local()  # the identity of the request this thread answers
        self.check_runs: dict[int, dict] = {}
        self.statuses: list[dict] = []
        self.reviews: dict[tuple[str, int], list[dict]] = {}
        self.rate_limit = rate_limit
        self.rate_remaining = rate_limit
        self.rate_reset = int(time.time()) + 3600
        self.page_size_cap = page_size_cap
        self.lock = threading.RLock()
        self.repos: dict[str, RepoState] = {}
        self.issues: dict[str, dict[int, dict]] = {}
        self.events: dict[str, dict[int, list[dict]]] = {}
        self.comments: dict[int, dict] = {}
        self.pulls: dict[str, dict[int, dict]] = {}
        self.review_index: dict[int, dict] = {}  # review id -> review (with its pull request)
        self.review_comments: dict[int, dict] = {}
        self.job_logs: dict[int, str] = {}
        self.requests: list[dict] = []
        self.failures: list[ScriptedFailure] = []
        self._ids = 1000
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        # Job logs are downloaded from another host, as on GitHub (its blob storage).
        self.blob_server: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> GitHubStandIn:
        standin = self

        class Handler(_Handler):
            owner = standin

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-standin", daemon=True)
        self.thread.start()
        self.blob_server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.blob_server.daemon_threads = True
        threading.Thread(target=self.blob_server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-standin-blobs", daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self.server, self.blob_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        self.server = self.blob_server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def blob_url(self) -> str:
        assert self.blob_server is not None
        host, port = self.blob_server.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    owner: GitHubStandIn
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (40 ms a request on Linux).
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:  # quiet
        pass

    def _serve(self) -> None:
        body = read_body(self)
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path.startswith("/git/"):
            status, extra, raw = self.owner.handle_git(self.command, self.path, headers, body)
            self.send_response(status)
            self.send_header("Content-Length", str(len(raw)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)
            return
        status, data, extra = self.owner.handle(self.command, self.path, headers, body)
        with self.owner.lock:
            extra = {**extra, **self.owner.rate_headers(counted=status != 304)}
            parts = urlsplit(self.path)
            self.owner.requests.append(
                {
                    "method": self.command,
                    "path": parts.path,
                    "query": {k: v[-1] for k, v in parse_qs(parts.query).items()},
                    "status": status,
                    "if_none_match": headers.get("if-none-match", ""),
                    "authorization": headers.get("authorization", ""),
                    "host": headers.get("host", ""),
                    "identity": getattr(self.owner._local, "identity", ""),
                    "time": time.time(),
                }
            )
        plain = isinstance(data, PlainText)
        raw = b"" if status in (204, 304) or data is None else data.encode() if plain else json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if plain else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if raw:
            self.wfile.write(raw)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve
