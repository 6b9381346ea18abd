"""Latency from an agent's stdout line to a websocket client, through the real stage runner.

A fake agent (the ``command`` provider, text format) prints lines stamped with the wall clock,
with gaps of 20-150 ms like a real agent's stream. The real ``pipeline.attempt.run_stage`` parses
them, stores them in batches and notifies; daphne (a subprocess) serves the websocket; a plain
RFC 6455 client in this process, logged in with a session cookie, receives the events and
computes ``receive time - print time`` per line.

Two set-ups:

* ``--mode embedded``: SQLite file, no Redis: the consumer polls the table (target p95 500 ms);
* ``--mode redis``: PostgreSQL (database ``tacx_bench_live``, created and dropped) and
  channels_redis at REDIS_URL: the runner's notification wakes the consumer (target p95 100 ms).

    .venv/bin/python bench/live_latency.py --mode embedded
    .venv/bin/python bench/live_latency.py --mode redis --runs 3
    .venv/bin/python bench/live_latency.py --mode redis --batch-seconds 0.05
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAKE_AGENT = r"""
import random, sys, time
random.seed(int(sys.argv[2]))
for i in range(int(sys.argv[1])):
    time.sleep(random.uniform(0.02, 0.15))
    print(f"LINE {i} {time.time():.6f}", flush=True)
"""


# --- a minimal websocket client (text frames from the server; enough for a benchmark) ----------


class WebSocket:
    def __init__(self, host: str, port: int, path: str, cookie: str, origin: str):
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\nCookie: {cookie}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"websocket refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def receive(self) -> str | None:
        """The next text message (None when the server closes)."""
        message = b""
        while True:
            b1, b2 = self._read(2)
            opcode, length = b1 & 0x0F, b2 & 0x7F
            if length == 126:
                length = int.from_bytes(self._read(2), "big")
            elif length == 127:
                length = int.from_bytes(self._read(8), "big")
            payload = self._read(length)
            if opcode == 0x8:
                return None
            if opcode in (0x1, 0x0):
                message += payload
                if b1 & 0x80:
                    return message.decode()

    def close(self) -> None:
        self.sock.close()


# --- the run ------------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def make_repository(base: Path, lines: int, seed: int) -> Path:
    origin, clone = base / "origin.git", base / "repo"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(clone)], check=True)
    (base / "fake_agent.py").write_text(FAKE_AGENT)
    workflow = {
        "version": 1,
        "publish": "none",
        "stages": [
            {
                "name": "streaming",
                "provider": "command",
                "timeout": 600,
                "options": {"argv": [sys.executable, str(base / "fake_agent.py"), str(lines), str(seed)], "format": "text"},
            }
        ],
    }
    (clone / ".tac").mkdir()
    (clone / ".tac" / "workflow.yaml").write_text(json.dumps(workflow))
    (clone / "README.md").write_text("bench\n")
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "init")
    git(clone, "remote", "add", "origin", str(origin))
    git(clone, "push", "-q", "origin", "main")
    return clone


def run_once(args, base: Path, port: int, seed: int) -> list[float]:
    from django.test import Client

    from dashboard import streams
    from pipeline import attempt, services
    from pipeline.models import Repository, Stage

    clone = make_repository(base / f"run-{seed}", args.lines, seed)
    repository = Repository.objects.create(kind="local", full_name=f"bench-{seed}", local_path=str(clone))
    task, _ = services.task_create(repository=repository, issue_number=1, title="stream")
    assert services.task_dispatch(task=task, enqueue=False), task.status_reason
    client = Client()
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(username="bench"))
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    ws = WebSocket(
        "127.0.0.1", port, f"/ws/tasks/{task.pk}/events/?after={streams.latest_id(task_id=task.pk)}", cookie, f"http://127.0.0.1:{port}"
    )
    latencies: list[float] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                text = ws.receive()
            except (OSError, ConnectionError):
                return
            if text is None:
                return
            now = time.time()
            for event in json.loads(text).get("events", []):
                line = (event.get("data") or {}).get("text", "")
                if line.startswith("LINE "):
                    latencies.append((now - float(line.split()[2])) * 1000)
            if len(latencies) >= args.lines:
                done.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)  # the consumer has done its first read
    stage = Stage.objects.get(task=task, status="queued")
    result = attempt.run_stage(stage.pk, enqueue_next=False)
    done.wait(timeout=10)
    ws.close()
    if len(latencies) < args.lines:
        print(f"  warning: received {len(latencies)} of {args.lines} lines (runner: {result})")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-seconds", type=float, default=None, help="TACX_EVENT_BATCH_SECONDS for the runner")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL for --mode redis")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): smallest sizes, one run")
    args = parser.parse_args()
    if args.smoke:
        args.lines, args.runs = 20, 1

    tmp = Path(tempfile.mkdtemp(prefix="tacx-live-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DJANGO_SETTINGS_MODULE="tacx_site.settings", TACX_VAR_DIR=str(tmp / "var"), TACX_WORKTREE_ROOT=str(tmp / "trees"))
    # The fake agent runs in the agent sandbox: it may read this Python and its own script.
    env["TACX_SANDBOX_ALLOW_READ"] = os.pathsep.join([sys.prefix, sys.base_prefix, str(tmp)])
    database = "tacx_bench_live"
    if args.mode == "redis":
        sys.path.insert(0, str(ROOT / "bench"))
        from api_latency import create_database

        create_database(args.server, database)
        env.update(DATABASE_URL=f"{args.server}/{database}", REDIS_URL=args.redis)
    else:
        env.update(DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}")
    if args.batch_seconds is not None:
        env["TACX_EVENT_BATCH_SECONDS"] = str(args.batch_seconds)
    os.environ.clear()
    os.environ.update(env)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from harness.fake_runner import daphne_serving

    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import Permission

    bench_user = get_user_model().objects.create_user("bench", password="bench-password")
    bench_user.user_permissions.add(Permission.objects.get(content_type__app_label="pipeline", codename="view_task"))  # a viewer
    try:
        with daphne_serving(env=env, log_path=tmp / "daphne.log") as base_url:
            port = int(base_url.rsplit(":", 1)[1])
            print(
                f"mode {args.mode}: {'PostgreSQL + Redis' if args.mode == 'redis' else 'SQLite, polling'}; "
                f"runner batch {env.get('TACX_EVENT_BATCH_SECONDS', 'default')} s; {args.lines} lines per run"
            )
            p50s, p95s = [], []
            for run in range(args.runs):
                samples = run_once(args, tmp, port, seed=run)
                p50, p95 = statistics.median(samples), statistics.quantiles(samples, n=20)[-1]
                p50s.append(p50)
                p95s.append(p95)
                print(f"run {run + 1}: p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {max(samples):.0f} ms ({len(samples)} lines)")
            print(f"median over {args.runs} runs: p50 {statistics.median(p50s):.0f} ms, p95 {statistics.median(p95s):.0f} ms")
    finally:
        if args.mode == "redis":
            from api_latency import drop_database
            from django.db import connections

            connections.close_all()
            drop_database(args.server, database)

if __name__ == "__main__":
    main()
