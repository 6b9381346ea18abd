"""The stage host: one process per machine that runs many attempts at once, fed by q2 jobs.

`manage.py run_workers` starts it (`manage.py run_stage_host`) next to the django-q2 cluster and
starts it again if it dies; its Unix socket (in a private directory, path in
TACX_STAGE_HOST_SOCKET) is how a q2 job hands it a stage (`submit`). An attempt is one thread
around one agent subprocess (its stdout reader and stdin feeder threads aside): the attempt's
own database connection, opened only while it writes (`EventRecorder.release_connection`), its
own lease renewed from its own loop, its own key on the host's one sandbox server (pipeline.sandbox),
so the per-attempt cost is a thread and its objects, not a Python process and a Node process.

Limits: at most `slots.host_attempts()` attempts at once. A stage handed to a full host is
refused (`full`): the q2 job enqueues it again for any host after a short pause, and nothing
waits in this process's memory. The host records its capacity as one stage-slot Worker row
(`slots.SlotHeartbeat`), which is what the coordinator admits against, so a refusal is the
exception (a retry racing the end of the attempt before it).

Guarantees are the attempt's own (pipeline.attempt.run): the claim is a conditional UPDATE, the
attempt row is opened with it, and a host killed with SIGKILL leaves each of its attempts'
stages to the coordinator's reaper once its lease expires, each re-queued once. A SIGTERM stops
the host from taking stages (`stopping`) and it exits when its attempts have finished.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import socketserver
import threading
import time

from django.db import connection

from . import attempt, slots
from .models import Stage

log = logging.getLogger(__name__)

ENV = "TACX_STAGE_HOST_SOCKET"
ANSWERS = ("started", "not_claimed", "full", "stopping")


class Attempts:
    """This process's running attempts (stage id -> thread), at most `capacity` of them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.lock = threading.Lock()
        self.running: dict[int, threading.Thread] = {}

    def start(self, stage_id: int, target=None) -> bool:
        """Start the attempt of `stage_id` in a thread of its own; False when the host is full or
        the stage already runs here (a second delivery of its job)."""
        with self.lock:
            if len(self.running) >= self.capacity or stage_id in self.running:
                return False
            thread = threading.Thread(target=self._run, args=(stage_id, target or run_attempt), name=f"tacx-attempt-{stage_id}")
            self.running[stage_id] = thread
        thread.start()
        return True

    def _run(self, stage_id: int, target) -> None:
        try:
            target(stage_id)
        except Exception:  # the attempt's own finally recorded what it could; the reaper does the rest
            log.exception("stage %s: the attempt thread failed", stage_id)
        finally:
            connection.close()  # this thread's connection: nobody else closes it
            with self.lock:
                self.running.pop(stage_id, None)

    def busy(self) -> int:
        with self.lock:
            return len(self.running)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the running attempts; True when none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.lock:
                threads = list(self.running.values())
            if not threads:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            threads[0].join(None if deadline is None else max(0.0, deadline - time.monotonic()))


def run_attempt(stage_id: int) -> None:
    attempt.run_stage(stage_id)


def answer(attempts: Attempts, stage_id: int, *, stopping: bool = False) -> str:
    """What the host says to a stage handed to it (one of ANSWERS)."""
    if stopping:
        return "stopping"
    if not Stage.objects.filter(pk=stage_id, status=Stage.Status.QUEUED).exists():
        return "not_claimed"  # a second delivery, or no longer queued: no thread for nothing
    try:
        return "started" if attempts.start(stage_id) else "full"
    finally:
        connection.close()  # the handler's thread ends: its connection must not outlive it


class _Handler(socketserver.StreamRequestHandler):
    timeout = 10

    def handle(self) -> None:
        server: Server = self.server  # type: ignore[assignment]
        try:
            stage_id = int(json.loads(self.rfile.readline(200))["stage"])
        except (ValueError, KeyError, TypeError) as exc:
            self.wfile.write(json.dumps({"error": f"not a stage request: {exc}"}).encode() + b"\n")
            return
        self.wfile.write(json.dumps({"answer": answer(server.attempts, stage_id, stopping=server.stopping)}).encode() + b"\n")


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, attempts: Attempts):
        self.attempts = attempts
        self.stopping = False
        super().__init__(path, _Handler)


def serve(path: str) -> None:
    """The host's main loop (`manage.py run_stage_host`): until SIGTERM, then until its attempts end."""
    capacity = max(1, slots.host_attempts())
    attempts = Attempts(capacity)
    if os.path.exists(path):
        os.unlink(path)  # a host killed before: its socket file is left
    server = Server(path, attempts)
    os.chmod(path, 0o600)
    beat = slots.SlotHeartbeat(f"{socket.gethostname()}:{os.getpid()}:stage-host", count=capacity)

    def stop(signum, frame) -> None:
        server.stopping = True
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("stage host %s: up to %d attempts at once on %s", os.getpid(), capacity, path)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        beat.stop()  # no new stage is admitted against this host
        attempts.join()
        server.server_close()
        if os.path.exists(path):
            os.unlink(path)


def submit(stage_id: int, *, timeout: float = 10.0) -> str:
    """Hand a stage to this machine's stage host: one of ANSWERS, or "unreachable"."""
    path = os.environ.get(ENV, "")
    if not path:
        return "unreachable"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps({"stage": stage_id}).encode() + b"\n")
            reply = sock.makefile("rb").readline(200)
        return str(json.loads(reply).get("answer") or "unreachable")
    except (OSError, ValueError) as exc:
        log.warning("stage %s: the stage host at %s did not answer: %s", stage_id, path, exc)
        return "unreachable"
