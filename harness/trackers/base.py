"""What both tracker stand-ins share: a threaded HTTP server on 127.0.0.1, the request log, and
scripted failures. A subclass answers `handle(method, path, query, headers, body)` with
(status, JSON data or None, extra headers)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from harness.modelserver.server import read_body


class StandIn:
    name = "standin"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[dict] = []
        # Scripted answers for the next requests: (status, data, headers), taken in order.
        self.failures: list[tuple[int, Any, dict]] = []
        self.server: ThreadingHTTPServer | None = None
        self.errors: list[str] = []  # the stand-in's own crashes (a test asserts there are none)
        self._ids = 1000

    def next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def fail_next(self, status: int, data: Any = None, headers: dict | None = None) -> None:
        self.failures.append((status, data, headers or {}))

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict]:
        raise NotImplementedError

    def start(self) -> Self:
        standin = self

        class Handler(_Handler):
            owner = standin

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    owner: StandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:  # quiet
        pass

    def _serve(self) -> None:
        body = read_body(self)
        headers = {k.lower(): v for k, v in self.headers.items()}
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.owner.lock:
            scripted = self.owner.failures.pop(0) if self.owner.failures else None
        if scripted is not None:
            status, data, extra = scripted
        else:
            try:
                status, data, extra = self.owner.handle(self.command, parts.path, query, headers, body)
            except Exception as exc:  # a bug in the stand-in is a 500, as a server's would be
                status, data, extra = 500, {"message": f"stand-in error: {type(exc).__name__}: {exc}"}, {}
                self.errors.append(repr(exc))
        with self.owner.lock:
            self.owner.requests.append(
                {
                    "method": self.command,
                    "path": parts.path,
                    "query": query,
                    "status": status,
                    "body": body,
                    "authorization": headers.get("authorization", ""),
                    "time": time.time(),
                }
            )
        raw = b"" if data is None else json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if raw:
            self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = _serve
