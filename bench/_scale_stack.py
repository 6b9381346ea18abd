"""The parts of bench/scale.py: a fresh database per run, the stack's processes (run_workers,
run_coordinator, and daphne for live watchers), what TAC-X's processes cost (CPU from
/proc/PID/stat, PSS from /proc/PID/smaps_rollup), and websocket watchers that time live lines."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from live_latency import WebSocket


def sh(cmd: list[str], **kwargs) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs).stdout


def git(cwd: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Database:
    def __init__(self, server: str, name: str):
        import psycopg2

        self.url = f"{server.rstrip('/')}/{name}"
        self.name = name
        self.admin = psycopg2.connect(f"{server.rstrip('/')}/postgres")
        self.admin.autocommit = True
        with self.admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')

    def stats(self) -> dict[str, int]:
        with self.admin.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = %s", [self.name])
            xacts, sessions = cur.fetchone()
        return {"xacts": xacts, "sessions": sessions}

    def query(self, sql: str, args=()) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(self.url) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        conn.close()
        return rows

    def drop(self) -> None:
        with self.admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [self.name],
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
        self.admin.close()


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except OSError:
            pass
    return out


def pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def pss_by_program(pids: list[int]) -> dict[str, float]:
    """PSS (MB) of the given processes grouped by program (python/node/socat/...): where it goes."""
    out: dict[str, float] = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            mb = pss_mb([pid])
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + mb
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


class Stack:
    """The cluster (`manage.py run_workers`, the Procfile's worker) and the coordinator, each in a
    session of its own (their sessions are what is measured), and daphne (not measured) for the
    live watchers."""

    def __init__(self, tree: Path, env: dict[str, str], logs: Path):
        self.tree, self.env, self.logs = tree, env, logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.web: subprocess.Popen | None = None
        self.port = 0

    def manage(self, *args: str, spec: dict | None = None) -> str:
        env = {**self.env, "SCALE_SPEC": json.dumps(spec)} if spec is not None else self.env
        return sh([str(self.tree / ".venv/bin/python"), "manage.py", *args], cwd=self.tree, env=env)

    def start(self, *, web: bool = False) -> None:
        py = str(self.tree / ".venv/bin/python")
        for name, argv in (("cluster", [py, "manage.py", "run_workers"]), ("coordinator", [py, "manage.py", "run_coordinator"])):
            out = (self.logs / f"{name}.log").open("a")
            self.procs[name] = subprocess.Popen(
                argv, cwd=self.tree, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        if web and self.web is None:
            self.port = free_port()
            out = (self.logs / "web.log").open("a")
            argv = [str(self.tree / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(self.port), "tacx_site.asgi:application"]
            self.web = subprocess.Popen(
                argv, cwd=self.tree, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.3)

    def pids(self) -> list[int]:
        return [pid for proc in self.procs.values() for pid in session_pids(proc.pid)]

    def stop(self) -> None:
        procs = [*self.procs.values(), *([self.web] if self.web else [])]
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs, self.web = {}, None


LOGIN = """
from django.contrib.auth import get_user_model
from django.test import Client
User = get_user_model()
user = User.objects.filter(username="scale").first() or User.objects.create_superuser("scale", "scale@example.com", "scale-password")
client = Client()
client.force_login(user)
print("COOKIE sessionid=" + client.cookies["sessionid"].value)
"""


class Watchers:
    """A websocket per watched task (as the task page opens), each timing `LINE <i> <epoch>` lines
    from the agent's print to their arrival here."""

    def __init__(self, port: int, cookie: str, task_ids: list[int], after: int):
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.sockets = []
        for task_id in task_ids:
            ws = WebSocket("127.0.0.1", port, f"/ws/tasks/{task_id}/events/?after={after}", cookie, f"http://127.0.0.1:{port}")
            self.sockets.append(ws)
            threading.Thread(target=self._listen, args=(ws,), daemon=True).start()

    def _listen(self, ws) -> None:
        while True:
            try:
                text = ws.receive()
            except (OSError, ConnectionError, ValueError):
                return
            if text is None:
                return
            now = time.time()
            for event in json.loads(text).get("events", []):
                line = str((event.get("data") or {}).get("text", ""))
                if line.startswith("LINE "):
                    with self.lock:
                        self.latencies.append(now - float(line.split()[2]))

    def close(self) -> list[float]:
        for ws in self.sockets:
            ws.close()
        with self.lock:
            return list(self.latencies)
