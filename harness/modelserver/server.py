"""The scripted model server: a stdlib HTTP server on loopback that plays a script.

Contracts:

* Binds loopback only (``ValueError`` for any other host); ``port=0`` picks a free port.
* ``requests`` is a snapshot of one record per request received, in arrival order::

      {"time": time.time() at arrival, "api": "anthropic" | "openai" | "openai-chat" | "gemini" | "unknown",
       "method": "POST", "path": "/v1/messages" (query string dropped),
       "conversation": name | None, "turn": int | None, "status": int | None (None = hang),
       "auxiliary": bool, "overrun": bool}

  Records are added when the request has been read, before any scripted ``delay`` or ``hang``,
  so ``time`` is the arrival time. With ``request_log`` each record is also appended to that
  file as one JSON line (flushed at once, for readers in other processes).
* Request headers are never logged or recorded (they carry API keys); unknown routes are
  logged (method and path only) at WARNING on the ``harness.modelserver`` logger.
* Streamed answers are sent with ``Connection: close`` and end when the connection closes,
  which both CLIs accept. A ``hang`` turn sends nothing and keeps the connection open until
  the client goes away or the server stops.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from . import anthropic, gemini, openai_chat, openai_responses
from .exchange import AUXILIARY, Reply
from .script import Script, load_script

logger = logging.getLogger("harness.modelserver")



class ScriptedModelServer:
    """Serves a :class:`~harness.modelserver.script.Script` over the Anthropic and OpenAI APIs.

    Use as ``with ScriptedModelServer(script) as server: ... server.url ...`` or call
    :meth:`start` / :meth:`stop`. ``script`` is anything :func:`load_script` accepts.
    """

    def __init__(
        self,
        script: Script | dict[str, Any] | str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        request_log: str | Path | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(
                f"host: the scripted model server binds loopback only, not {host!r}"
            )
        self.script = load_script(script)
        self.host = host
        self.port = port
        self.request_log = Path(request_log) if request_log else None
        self.stopping = threading.Event()
        self._records: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self.stopping.clear()
        self._httpd = _HTTPServer((self.host, self.port), _Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns within ~50 ms
            name=f"modelserver:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging and delayed requests are released and their sockets closed."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL without ``/v1`` (Claude Code appends ``/v1/messages`` itself)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- records ---------------------------------------------------------------------------
    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the records so far (see the module docstring)."""
        with self._changed:
            return [dict(r) for r in self._records]

    def wait_for_requests(
        self, n: int, timeout: float = 10.0, **match: Any
    ) -> list[dict[str, Any]]:
        """Block until at least ``n`` records (with fields equal to ``match``) exist.

        Returns those records; raises ``TimeoutError`` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [
                    dict(r)
                    for r in self._records
                    if all(r.get(k) == v for k, v in match.items())
                ]
                if len(found) >= n:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"got {len(found)} of {n} requests matching {match!r} in {timeout}s"
                    )
                self._changed.wait(remaining)

    def record(self, record: dict[str, Any]) -> None:
        """Store one request record (and append it to ``request_log``)."""
        with self._changed:
            self._records.append(record)
            if self.request_log is not None:
                with self.request_log.open("a", encoding="utf-8") as log:
                    log.write(json.dumps(record) + "\n")
            self._changed.notify_all()

    # -- dispatch --------------------------------------------------------------------------
    def answer(
        self, method: str, path: str, body: bytes, *, client_api: str
    ) -> tuple[str, Reply]:
        """Route one request to its API module; returns ``(api, reply)``.

        ``client_api`` is the API the client is guessed to speak (from its User-Agent), used
        for requests outside both APIs' routes.
        """
        route = path.split("?", 1)[0]
        if route.startswith("/v1/messages"):
            return anthropic.API, anthropic.handle(method, path, body, self.script)
        if route.startswith("/v1/chat/completions"):
            return openai_chat.API, openai_chat.handle(method, path, body, self.script)
        if gemini.is_route(route):
            return gemini.API, gemini.handle(method, path, body, self.script)
        if route.startswith(("/v1/responses", "/v1/models")):
            return openai_responses.API, openai_responses.handle(
                method, path, body, self.script
            )
        if method == "HEAD" and route == "/":
            # Claude Code warms the connection up with `HEAD /` at start-up.
            return client_api, Reply(status=200, decision=AUXILIARY)
        logger.warning("scripted model server: unknown request %s %s", method, route)
        module = openai_responses if client_api == openai_responses.API else anthropic
        reply = module.error_reply(404, f"Not found: {method} {route}")
        reply.decision = AUXILIARY
        return client_api, reply


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The body of the request ``handler`` is serving: ``Content-Length`` bytes, or the chunks of
    a ``Transfer-Encoding: chunked`` body joined."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hanging request must never keep the process alive
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type, owner: ScriptedModelServer
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines only (never headers), and only when someone asks for debug logs.
        logger.debug("scripted model server: " + format, *args)

    def _serve(self, method: str) -> None:
        owner = self.server.owner
        body = read_body(self)
        api, reply = owner.answer(
            method, self.path, body, client_api=self._client_api()
        )
        decision = reply.decision
        turn = decision.turn if decision else None
        if turn is not None and turn.retry_after is not None and reply.status >= 400:
            # How long the CLI should wait before retrying, as real APIs say it on 429/503.
            reply.headers["retry-after"] = f"{turn.retry_after:g}"
            reply.headers["retry-after-ms"] = str(int(turn.retry_after * 1000))
        owner.record(
            {
                "time": time.time(),
                "api": api,
                "method": method,
                "path": self.path.split("?", 1)[0],
                "conversation": decision.conversation if decision else None,
                "turn": decision.turn_index if decision else None,
                "status": None if reply.hang else reply.status,
                "auxiliary": decision.auxiliary if decision else True,
                "overrun": decision.overrun if decision else False,
            }
        )
        try:
            self._send(reply, owner.stopping)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the CLI was killed mid-answer: nothing to do

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            pass  # the CLI closed a keep-alive connection (or was killed): not an error

    def _client_api(self) -> str:
        # Only the User-Agent is looked at; no header is ever stored or logged.
        agent = self.headers.get("User-Agent", "").lower()
        if "anthropic-version" in self.headers or "claude" in agent:
            return anthropic.API
        if "codex" in agent or "openai" in agent:
            return openai_responses.API
        return "unknown"

    def _send(self, reply: Reply, stopping: threading.Event) -> None:
        if reply.hang:
            self._wait(None, stopping)
            self.close_connection = True
            return
        if reply.delay and not self._wait(reply.delay, stopping):
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.events is None:
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for index, event in enumerate(reply.events):
            if (
                index
                and reply.stream_delay
                and not self._wait(reply.stream_delay, stopping)
            ):
                return
            self.wfile.write(event)
            self.wfile.flush()

    def _wait(self, seconds: float | None, stopping: threading.Event) -> bool:
        """Wait ``seconds`` (forever if None); False if the server stops or the client leaves."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            step = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if step <= 0:
                return True
            if stopping.wait(step) or self._client_gone():
                return False

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
