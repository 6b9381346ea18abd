"""Trigger latency: from a label on GitHub to the planning agent starting.

    .venv/bin/python bench/trigger_latency.py [--issues 20] [--poll-interval 2] [--database-url URL]

A real deployment on loopback: the web server (`manage.py runserver`, serving the webhook), a
django-q2 cluster (`manage.py qcluster`, ORM broker) and the coordinator (`manage.py
run_coordinator`), all on one database (a fresh SQLite file, or the scratch database you pass),
against the GitHub stand-in of the tests. The planning agent is the `command` provider running
a Python script whose first act is to note the time, so the figure is TAC-X's own latency, not
an agent CLI's start-up.

* webhook: the label is applied on the stand-in and the signed `issues.labeled` delivery is
  POSTed at t0; latency = agent start - t0. Polling is off (interval 1 h). Targets: p95 <= 1 s.
* polling only: no webhook; the label is applied at t0, at a random moment of the poll cycle.
  Target: p95 <= poll interval + 1 s.

Every issue has a free slot (limits far above the load; each task is one short planning stage).
One warm-up issue per phase is not counted (it clones the mirror, fills the permission cache).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")

SECRET = "bench-webhook-secret"
TOKEN = "ghp_benchToken000000000000000000000000"
FULL_NAME = "bench/sample"

# Notes its start time first, on stdout: the sandbox lets an agent write only its worktree (the
# line comes back as a transcript event of the task).
AGENT = """
import pathlib, time
started = time.time()
print(f"bench-start {started!r}", flush=True)
pathlib.Path("plan.md").write_text("# Plan\\n")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


class Deployment:
    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp = tmp
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str, **env: str) -> None:
        log = (self.tmp / f"{name}.log").open("w")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "manage.py", *args], cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--database-url", default="", help="a scratch database (default: a new SQLite file)")
    parser.add_argument("--skip-polling", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI: 1 issue per phase (+ warm-up), poll interval 1 s")
    args = parser.parse_args()
    if args.smoke:
        args.issues, args.poll_interval = 1, 1.0

    tmp = Path(tempfile.mkdtemp(prefix="tacx-bench-trigger-"))
    database_url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"

    from github_standin import GitHubStandIn

    standin = GitHubStandIn(token=TOKEN).start()
    standin.add_repo(FULL_NAME, permissions={"alice": "write"})
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TACX_VAR_DIR": str(tmp / "var"),
        "TACX_WORKTREE_ROOT": str(tmp / "trees"),
        "GITHUB_API_URL": standin.url,
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "TACX_MAX_CONCURRENT_TASKS": "100",
        "TACX_DASHBOARD_URL": "http://127.0.0.1",
        # The agent is this Python: the sandbox may let it read its installation (as in the tests).
        "TACX_SANDBOX_ALLOW_READ": os.pathsep.join(dict.fromkeys([sys.prefix, sys.base_prefix, os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)])),
    }
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "TACX_VAR_DIR", "TACX_WORKTREE_ROOT", "GITHUB_API_URL", "GITHUB_TOKEN", "GITHUB_WEBHOOK_SECRET")})
    import django

    django.setup()
    from conftest import make_origin_and_clone
    from django.core.management import call_command

    from coordinator.heartbeat import coordinator_heartbeat_age
    from coordinator.webhooks import signature_for
    from pipeline.models import AgentEvent, Repository

    call_command("migrate", verbosity=0)
    agent_argv = [sys.executable, "-c", AGENT]
    workflow = "\n".join(
        ["version: 1", "publish: none", "stages:", "  - name: planning", "    provider: command", "    timeout: 60", "    options:"]
        + [f"      argv: {json.dumps(agent_argv)}", ""]
    )
    origin, _ = make_origin_and_clone(tmp, "sample", {"README.md": "bench\n", ".tac/workflow.yaml": workflow})
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name=FULL_NAME, clone_url=str(origin), max_concurrent_tasks=100)

    port = free_port()
    deployment = Deployment(tmp, env)
    template = json.loads((ROOT / "tests" / "fixtures" / "github-webhooks" / "issues.labeled.json").read_text())
    number = 0

    def new_issue() -> int:
        nonlocal number
        number += 1
        standin.add_issue(FULL_NAME, number=number, title=f"Bench issue {number}", body="Make it faster.")
        return number

    def agent_started(n: int) -> float | None:
        line = (
            AgentEvent.objects.filter(task__issue_number=n, task__repository__full_name=FULL_NAME, kind="message", data__text__startswith="bench-start ")
            .values_list("data__text", flat=True)
            .first()
        )
        return float(line.split()[1]) if line else None

    def webhook(n: int) -> float:
        standin.label(FULL_NAME, n, "rpi-auto", actor="alice")
        payload = json.loads(json.dumps(template))
        issue = standin.issues[FULL_NAME][n]
        payload["repository"]["full_name"] = FULL_NAME
        payload["issue"].update({k: issue[k] for k in ("number", "title", "body", "html_url", "state", "labels", "updated_at")})
        payload["label"]["name"] = "rpi-auto"
        payload["sender"].update({"login": "alice", "type": "User"})
        body = json.dumps(payload).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhooks/github",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "issues",
                "X-GitHub-Delivery": f"bench-{n}",
                "X-Hub-Signature-256": signature_for(SECRET, body),
            },
        )
        t0 = time.time()
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202, response.status
        return t0

    def measure(trigger, count: int, label: str) -> list[float]:
        latencies = []
        for i in range(count + 1):
            n = new_issue()
            t0 = trigger(n)
            started = wait_for(lambda n=n: agent_started(n), 60, f"the agent of issue {n}")
            if i:  # the first one warms up
                latencies.append(started - t0)
            print(f"  {label} issue {n}: {started - t0:.3f} s" + ("" if i else " (warm-up, not counted)"), flush=True)
        return latencies

    results = {}
    try:
        deployment.start("web", "runserver", f"127.0.0.1:{port}", "--noreload")
        deployment.start("qcluster", "qcluster")
        deployment.start("coordinator", "run_coordinator", TACX_POLL_INTERVAL="3600")
        wait_for(lambda: coordinator_heartbeat_age() is not None, 60, "the coordinator")
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{port}/webhooks/github"), 60, "the web server")
        time.sleep(2)  # let the cluster's workers come up

        print(f"webhook -> agent start, {args.issues} issues:", flush=True)
        results["webhook"] = measure(webhook, args.issues, "webhook")

        if not args.skip_polling:
            deployment.stop("coordinator")
            deployment.start("coordinator", "run_coordinator", TACX_POLL_INTERVAL=str(args.poll_interval))

            def labelled(n: int) -> float:
                time.sleep(random.uniform(0, args.poll_interval))  # any moment of the poll cycle
                t0 = time.time()
                standin.label(FULL_NAME, n, "rpi-auto", actor="alice")
                return t0

            print(f"label -> agent start by polling only (interval {args.poll_interval:g} s), {args.issues} issues:", flush=True)
            results["polling"] = measure(labelled, args.issues, "polling")
    finally:
        deployment.stop_all()
        standin.stop()

    engine = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    print(f"\nTrigger latency ({engine}, q2 poll 0.2 s, coordinator tick 0.2 s), seconds:")
    for name, values in results.items():
        target = 1.0 if name == "webhook" else args.poll_interval + 1.0
        p95 = percentile(values, 0.95)
        print(
            f"  {name:8} n={len(values)}  p50 {statistics.median(values):.3f}  p95 {p95:.3f}  max {max(values):.3f}"
            f"  (target p95 <= {target:g}: {'met' if p95 <= target else 'MISSED'})"
        )


def _http_ok(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError as exc:
        return exc.code == 405  # GET is not allowed: the server is up
    except OSError:
        return False
    return True


if __name__ == "__main__":
    main()
