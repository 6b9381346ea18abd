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
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, START_MARK, TOKEN, LoopbackStack, latency_figures, marked_start, wait_for

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")

FULL_NAME = "bench/sample"

AGENT = START_MARK + 'pathlib.Path("plan.md").write_text("# Plan\\n")\n'


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
    stack = LoopbackStack(tmp, database_url, github_url=standin.url)
    stack.django()
    from conftest import make_origin_and_clone
    from django.core.management import call_command

    from pipeline.models import AgentEvent, Repository

    call_command("migrate", verbosity=0)
    agent_argv = [sys.executable, "-c", AGENT]
    workflow = "\n".join(
        ["version: 1", "publish: none", "stages:", "  - name: planning", "    provider: command", "    timeout: 60", "    options:"]
        + [f"      argv: {json.dumps(agent_argv)}", ""]
    )
    origin, _ = make_origin_and_clone(tmp, "sample", {"README.md": "bench\n", ".tac/workflow.yaml": workflow})
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name=FULL_NAME, clone_url=str(origin), max_concurrent_tasks=100)

    template = json.loads((ROOT / "tests" / "fixtures" / "github-webhooks" / "issues.labeled.json").read_text())
    number = 0

    def new_issue() -> int:
        nonlocal number
        number += 1
        standin.add_issue(FULL_NAME, number=number, title=f"Bench issue {number}", body="Make it faster.")
        return number

    def agent_started(n: int) -> float | None:
        return marked_start(AgentEvent.objects.filter(task__issue_number=n, task__repository__full_name=FULL_NAME))

    def webhook(n: int) -> float:
        standin.label(FULL_NAME, n, "rpi-auto", actor="alice")
        payload = json.loads(json.dumps(template))
        issue = standin.issues[FULL_NAME][n]
        payload["repository"]["full_name"] = FULL_NAME
        payload["issue"].update({k: issue[k] for k in ("number", "title", "body", "html_url", "state", "labels", "updated_at")})
        payload["label"]["name"] = "rpi-auto"
        payload["sender"].update({"login": "alice", "type": "User"})
        return stack.post_webhook(event="issues", delivery=f"bench-{n}", body=json.dumps(payload).encode())

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
        stack.start(poll_interval="3600")
        time.sleep(2)  # let the cluster's workers come up

        print(f"webhook -> agent start, {args.issues} issues:", flush=True)
        results["webhook"] = measure(webhook, args.issues, "webhook")

        if not args.skip_polling:
            stack.deployment.stop("coordinator")
            stack.deployment.start("coordinator", "run_coordinator", TACX_POLL_INTERVAL=str(args.poll_interval))

            def labelled(n: int) -> float:
                time.sleep(random.uniform(0, args.poll_interval))  # any moment of the poll cycle
                t0 = time.time()
                standin.label(FULL_NAME, n, "rpi-auto", actor="alice")
                return t0

            print(f"label -> agent start by polling only (interval {args.poll_interval:g} s), {args.issues} issues:", flush=True)
            results["polling"] = measure(labelled, args.issues, "polling")
    finally:
        stack.stop()
        standin.stop()

    engine = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    print(f"\nTrigger latency ({engine}, q2 poll 0.2 s, coordinator tick 0.2 s), seconds:")
    for name, values in results.items():
        print(f"  {name:8} " + latency_figures(values, 1.0 if name == "webhook" else args.poll_interval + 1.0))


if __name__ == "__main__":
    main()
