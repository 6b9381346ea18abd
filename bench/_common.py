"""What the bench scripts share: the stack's processes started and stopped by name, a private
PostgreSQL, waiting for a condition, a signed webhook POST, percentiles.

Not a bench script itself: it has no `--smoke` run, and tests/test_bench_smoke.py passes over
modules whose name starts with `_`. The scripts import it as `_common` (Python puts a script's
own folder first on `sys.path`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ.get("TACX_DRILL_PG_BIN", "/usr/lib/postgresql/15/bin"))
# What the bench's own process needs to reach the stack's database, var directory and forge.
SHARED_SETTINGS = ("DATABASE_URL", "TACX_VAR_DIR", "TACX_WORKTREE_ROOT", "GITHUB_API_URL", "GITHUB_TOKEN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], **kwargs) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs).stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def latency_figures(values: list[float], target: float) -> str:
    """`n=…  p50 …  p95 …  max …  (target p95 <= T: met|MISSED)`, in seconds."""
    p95 = percentile(values, 0.95)
    return (
        f"n={len(values)}  p50 {statistics.median(values):.3f}  p95 {p95:.3f}  max {max(values):.3f}"
        f"  (target p95 <= {target:g}: {'met' if p95 <= target else 'MISSED'})"
    )


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError as exc:
        return exc.code == 405  # GET is not allowed: the server is up
    except OSError:
        return False
    return True


def python_readable() -> str:
    """`TACX_SANDBOX_ALLOW_READ` for agents that are this Python: its installation (as in the tests)."""
    return os.pathsep.join(dict.fromkeys([sys.prefix, sys.base_prefix, os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)]))


# --- processes ------------------------------------------------------------------------------------


class Process:
    """One process of the stack in a session of its own, restartable; its output goes to
    `<logs>/<name>-<n>.log` for its n-th start."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path):
        self.name, self.argv, self.env, self.logs = name, argv, env, logs
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        out = (self.logs / f"{self.name}-{self.starts}.log").open("w")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def members(self) -> list[int]:
        """Processes of its process group other than the leader."""
        if not self.proc:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == self.proc.pid and int(entry) != self.proc.pid:
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids


class Deployment:
    """`manage.py` commands by name, all with one environment (plus each one's extra settings)."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp = tmp
        self.env = env
        self.procs: dict[str, Process] = {}

    def start(self, name: str, *args: str, **env: str) -> None:
        self.procs[name] = Process(name, [sys.executable, "manage.py", *args], {**self.env, **env}, self.tmp)
        self.procs[name].start()

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            proc.stop()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def processes_inside(roots: list[Path]) -> int:
    """Processes whose working directory is one of `roots` or below it."""
    resolved = [str(root.resolve()) for root in roots]
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if any(cwd == root or cwd.startswith(root + os.sep) for root in resolved):
            count += 1
    return count


# --- a private PostgreSQL -----------------------------------------------------------------------


class PrivatePostgres:
    def __init__(self, base: Path):
        self.dir = base / "pg"
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> str:
        self.dir.mkdir()
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir.parent, 0o755)
        run([*self.as_postgres, str(PG_BIN / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        self.ctl("start", "-w", "-l", str(self.dir / "log"), "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off")
        run([*self.as_postgres, str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "tacx"])
        return f"postgres://postgres@127.0.0.1:{self.port}/tacx"

    def ctl(self, *args: str) -> None:
        run([*self.as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), *args])

    def restart(self) -> None:
        self.ctl("restart", "-w", "-m", "immediate", "-l", str(self.dir / "log"), "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self) -> None:
        try:
            self.ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass


def tear_down(processes: list[Process], pg: PrivatePostgres | None, base: Path, *, keep: bool) -> None:
    """Stop the stack and the private PostgreSQL; remove the drill's directory unless kept."""
    for proc in processes:
        proc.stop()
    if pg is not None:
        pg.stop()
    if keep:
        print(f"kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)


def drill_main(args, prefix: str, drill: Callable[[Path, str, PrivatePostgres | None, list[Process]], int]) -> int:
    """`drill(base, database_url, pg, processes)` in a new temporary directory `base` (with
    `base/logs`), on a private PostgreSQL unless `args.database_url` names one; then the
    processes it started and the PostgreSQL are stopped and `base` removed (unless `args.keep`)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    (base / "logs").mkdir()
    pg = None if args.database_url else PrivatePostgres(base)
    processes: list[Process] = []
    try:
        database_url = args.database_url or pg.start()
        return drill(base, database_url, pg, processes)
    finally:
        tear_down(processes, pg, base, keep=args.keep)


# --- a deployment on loopback -------------------------------------------------------------------


def django_on(env: dict[str, str], keys: tuple[str, ...] = SHARED_SETTINGS) -> None:
    """Set Django up in this process on the deployment's database (and its other `keys`)."""
    os.environ.update({k: env[k] for k in keys})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")
    import django

    django.setup()


TOKEN = "ghp_benchToken000000000000000000000000"  # the GitHub stand-in's
WEBHOOK_SECRET = "bench-webhook-secret"
# The first act of a latency bench's agent: note the time, on stdout (the sandbox lets an agent
# write only its worktree); the line comes back as a transcript event of its attempt.
START_MARK = """
import pathlib, time
started = time.time()
print(f"bench-start {started!r}", flush=True)
"""


def marked_start(events) -> float | None:
    """The time a START_MARK agent noted, from its events (an AgentEvent queryset), if it has yet."""
    line = events.filter(kind="output", data__text__startswith="bench-start ").values_list("data__text", flat=True).first()
    return float(line.split()[1]) if line else None


class LoopbackStack:
    """A web server, a q2 cluster and a coordinator on loopback sharing one database, against the
    GitHub stand-in at `github_url`, with limits far above the load and agents that are this
    Python. `extra` settings are added to (or replace) the stack's."""

    def __init__(self, tmp: Path, database_url: str, *, github_url: str, **extra: str):
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "TACX_VAR_DIR": str(tmp / "var"),
            "TACX_WORKTREE_ROOT": str(tmp / "trees"),
            "GITHUB_API_URL": github_url,
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "TACX_MAX_CONCURRENT_TASKS": "100",
            "TACX_DASHBOARD_URL": "http://127.0.0.1",
            "TACX_SANDBOX_ALLOW_READ": python_readable(),
            **extra,
        }
        self.port = free_port()
        self.deployment = Deployment(tmp, self.env)

    def django(self) -> None:
        """Set Django up in this process on the stack's database."""
        django_on(self.env, (*SHARED_SETTINGS, "GITHUB_WEBHOOK_SECRET"))

    def start(self, *, poll_interval: str) -> None:
        """Start the three; back once the coordinator beats and the webhook answers."""
        # Django is set up by now (self.django()): the coordinator's modules need it.
        from coordinator.heartbeat import coordinator_heartbeat_age

        self.deployment.start("web", "runserver", f"127.0.0.1:{self.port}", "--noreload")
        self.deployment.start("qcluster", "qcluster")
        self.deployment.start("coordinator", "run_coordinator", TACX_POLL_INTERVAL=poll_interval)
        wait_for(lambda: coordinator_heartbeat_age() is not None, 60, "the coordinator")
        wait_for(lambda: http_ok(f"http://127.0.0.1:{self.port}/webhooks/github"), 60, "the web server")

    def post_webhook(self, *, event: str, delivery: str, body: bytes) -> float:
        """POST a signed GitHub delivery to the web server; the time just before it was sent."""
        from coordinator.webhooks import signature_for  # after self.django(), as above

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/webhooks/github",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": signature_for(WEBHOOK_SECRET, body),
            },
        )
        t0 = time.time()
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202, response.status
        return t0

    def stop(self) -> None:
        self.deployment.stop_all()
