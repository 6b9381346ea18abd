"""Chaos drill: the whole stack on PostgreSQL under kill -9 and a database restart.

    .venv/bin/python bench/chaos_drill.py [--tasks 12] [--faults-for 45] [--seed 1]

What it does (everything real but GitHub, which is tests/github_standin.py on loopback):

1. Starts a private PostgreSQL (initdb in a temporary directory, its own port, run as the
   `postgres` user) so the restart touches nobody else; `--database-url` uses an existing server
   instead (then pass `--no-postgres-restart`, or the restart is skipped).
2. Migrates, registers a GitHub repository `drill/app` whose clone URL is a bare origin on disk,
   and files N issues carrying the trigger label, labelled by a writer.
3. Starts the stack as separate processes, each in its own session: `manage.py qcluster`
   (django-q2, ORM broker) and `manage.py run_coordinator` (polling, dispatch, reaping). The
   coordinator's poller turns the issues into tasks; every agent stage is a small program (the
   `command` provider) that works for about two seconds and logs "<worktree> <stage> <pid> <t>"
   every 0.1 s.
4. For `--faults-for` seconds: kill -9 the q2 worker process running a stage (chosen at
   random), kill -9 the whole q2 cluster once (its agents are orphaned) and restart it,
   kill -9 the coordinator and restart it, and restart PostgreSQL once (`pg_ctl restart -m
   immediate`).
5. Waits until every task is final or lease + 60 s (+ a margin) after the last fault passed.

It prints: tasks finished by status and stuck (still active); StageResults lost (claims without
an attempt row, and attempts left "running" in a finished task); overlapping runs (two agent
processes of one stage of one task alive at once, from the agents' own log); duplicate PRs (more
than one pull request per branch at the stand-in); orphan processes (agent processes still
alive at the end); and the recovery time (the last task's finish minus the last fault). The exit
code is 0 when stuck, lost, overlaps, duplicates and orphans are all zero and recovery is within
lease + 60 s.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

from _common import ROOT, PrivatePostgres, Process, django_on, drill_main, processes_inside, run

REPO = "drill/app"
LABEL = "rpi-auto"

# The agent runs in the agent sandbox: it can write only its worktree, so it logs there (the
# drill reads every worktree's log), under a random id (its pid is the sandbox's own).
AGENT = """
import os, pathlib, sys, time
stage = sys.argv[1]
me = os.urandom(6).hex()
log = open("agent.log", "a", buffering=1)
for i in range(20):
    log.write(f"{os.getcwd()} {stage} {me} {time.time()}\\n")
    try:
        print(f"{stage} working {i}", flush=True)
    except BrokenPipeError:
        pass
    time.sleep(0.1)
if stage == "planning":
    pathlib.Path("plan.md").write_text("# Plan\\n\\nWrite NOTES.md.\\n")
elif stage == "building":
    with open("NOTES.md", "a") as fh:
        fh.write(f"built by {os.getpid()}\\n")
else:
    print("VERDICT: APPROVE", flush=True)
"""


def drill_forge(tasks: int):
    """The GitHub stand-in with the drill's repository and `tasks` issues labelled by a writer."""
    # tests/ is on sys.path by now (drill()).
    from github_standin import TOKEN, GitHubStandIn

    standin = GitHubStandIn(token=TOKEN).start()
    standin.add_repo(REPO, permissions={"alice": "write"})
    for number in range(1, tasks + 1):
        standin.add_issue(REPO, number=number, title=f"Drill issue {number}", body="Write NOTES.md.", labels=(LABEL,), labeled_by="alice")
    return standin


def drill_origin(base: Path) -> Path:
    """A bare origin whose main branch has the drill's workflow: planning, building and reviewing
    by `base/agent/agent.py` (AGENT), then pr_creation, 20 attempts each."""
    (base / "agent").mkdir()
    (base / "agent" / "agent.py").write_text(AGENT)
    origin = base / "origin.git"
    clone = base / "clone"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)])
    run(["git", "init", "-q", "-b", "main", str(clone)])
    stages = []
    for name in ("planning", "building", "reviewing"):
        argv = [sys.executable, str(base / "agent" / "agent.py"), name]
        stages.append(
            f"  - name: {name}\n    provider: command\n    timeout: 120\n    max_attempts: 20\n"
            f"    options:\n      argv: {argv!r}\n"
        )
    (clone / ".tac").mkdir()
    (clone / ".tac" / "workflow.yaml").write_text("version: 1\nstages:\n" + "".join(stages) + "  - name: pr_creation\n    max_attempts: 20\n")
    (clone / "README.md").write_text("drill\n")
    git_env = {**os.environ, "GIT_AUTHOR_NAME": "d", "GIT_AUTHOR_EMAIL": "d@x", "GIT_COMMITTER_NAME": "d", "GIT_COMMITTER_EMAIL": "d@x"}
    for cmd in (["add", "-A"], ["commit", "-q", "-m", "drill"], ["remote", "add", "origin", str(origin)], ["push", "-q", "origin", "main"]):
        run(["git", *cmd], cwd=clone, env=git_env)
    return origin


def drill_settings(base: Path, standin, *, database_url: str, lease: int, workers: int, max_tasks: int, retention_hours: str) -> dict[str, str]:
    """The stack's settings in a drill: short leases and heartbeats, 20 attempts per stage,
    quick polling, quiet logs."""
    return {
        "DATABASE_URL": database_url,
        "GITHUB_API_URL": standin.url,
        "GITHUB_TOKEN": standin.token,
        "TACX_LEASE_SECONDS": str(lease),
        "TACX_HEARTBEAT_SECONDS": "1",
        "TACX_LOST_JOB_SECONDS": str(lease),
        "TACX_KILL_GRACE_SECONDS": "1",
        "TACX_MAX_CONCURRENT_TASKS": str(max_tasks),
        "TACX_Q_WORKERS": str(workers),
        "TACX_Q_TIMEOUT": "600",
        "TACX_Q_POLL": "0.2",
        "TACX_POLL_INTERVAL": "1",
        "TACX_MAX_ATTEMPTS": "20",
        "TACX_WORKTREE_RETENTION_HOURS": retention_hours,
        "LOG_LEVEL": "WARNING",
        # The sandboxed agent is this Python running agent.py: it may read those, nothing else.
        "TACX_SANDBOX_ALLOW_READ": os.pathsep.join([sys.prefix, sys.base_prefix, str(base / "agent")]),
    }


def drill_repository(origin: Path, *, max_concurrent_tasks: int) -> None:
    """Register the drill's repository (Django is set up by now: django_on)."""
    from django.db import connection

    from pipeline import services
    from pipeline.models import Repository

    services.repository_add(full_name=REPO, kind=Repository.Kind.GITHUB, clone_url=str(origin), trigger_label=LABEL, max_concurrent_tasks=max_concurrent_tasks)
    connection.close()


def drill_parser(doc: str) -> argparse.ArgumentParser:
    """The options both drills have (this one and two_machine_drill.py)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--lease", type=int, default=10)
    parser.add_argument("--database-url", default="", help="use this PostgreSQL instead of a private one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): smallest sizes, one run")
    return parser


def main() -> int:
    parser = drill_parser(__doc__)
    parser.add_argument("--faults-for", type=float, default=45.0, help="seconds of faults")
    parser.add_argument("--worker-kills", type=int, default=8)
    parser.add_argument("--coordinator-kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-postgres-restart", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.faults_for, args.worker_kills, args.coordinator_kills = 4, 10.0, 2, 1
    rng = random.Random(args.seed)
    return drill_main(args, "tacx-drill-", lambda base, database_url, pg, processes: drill(args, rng, base, base / "logs", pg, database_url, processes))


def drill(args, rng: random.Random, base: Path, logs: Path, pg: PrivatePostgres | None, database_url: str, processes: list[Process]) -> int:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    standin = drill_forge(args.tasks)
    origin = drill_origin(base)
    lease = args.lease
    env = {
        **os.environ,
        **drill_settings(base, standin, database_url=database_url, lease=lease, workers=4, max_tasks=4, retention_hours="1000"),
        "TACX_VAR_DIR": str(base / "var"),
        "TACX_WORKTREE_ROOT": str(base / "trees"),
    }
    run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env)
    django_on(env)
    from django.db import close_old_connections, connection

    from pipeline.models import Stage, StageResult, Task, Worker

    drill_repository(origin, max_concurrent_tasks=4)

    cluster = Process("qcluster", [sys.executable, "manage.py", "qcluster"], env, logs)
    coordinator = Process("coordinator", [sys.executable, "manage.py", "run_coordinator"], env, logs)
    processes += [cluster, coordinator]
    cluster.start()
    coordinator.start()
    started = time.time()

    def db(query):
        """Run `query()` against the database, riding out a restart."""
        for _ in range(60):
            try:
                close_old_connections()
                return query()
            except Exception:
                connection.close()
                time.sleep(0.5)
        raise RuntimeError("the database did not come back")

    # --- faults ---------------------------------------------------------------------------------
    kinds = ["worker"] * args.worker_kills + ["coordinator"] * args.coordinator_kills + ["cluster"]
    if pg is not None and not args.no_postgres_restart:
        kinds.append("postgres")
    rng.shuffle(kinds)
    # Spread over the window, the first after the stack had a few seconds to start work.
    moments = sorted(started + 5 + rng.random() * (args.faults_for - 5) for _ in kinds)
    done_faults: list[tuple[float, str]] = []
    for moment, kind in zip(moments, kinds, strict=True):
        time.sleep(max(0.0, moment - time.time()))
        if kind == "worker":
            busy = db(lambda: list(Worker.objects.filter(kind=Worker.Kind.AGENT, exited_at__isnull=True).values_list("pid", flat=True)))
            members = set(cluster.members())
            pids = [p for p in busy if p in members]
            if not pids:
                continue
            pid = rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            what = f"kill -9 q2 worker {pid}"
        elif kind == "cluster":
            cluster.kill9()
            time.sleep(rng.uniform(0.5, 2.0))
            cluster.start()
            what = "kill -9 the whole q2 cluster, restarted"
        elif kind == "coordinator":
            coordinator.kill9()
            time.sleep(rng.uniform(0.5, 3.0))
            coordinator.start()
            what = "kill -9 the coordinator, restarted"
        else:
            pg.restart()
            what = "PostgreSQL restarted (immediate)"
        done_faults.append((time.time(), what))
        print(f"{time.time() - started:6.1f} s  {what}", flush=True)
    last_fault = done_faults[-1][0] if done_faults else time.time()

    # --- recovery -------------------------------------------------------------------------------
    bound = lease + 60
    deadline = last_fault + bound + 60
    expected = args.tasks
    while time.time() < deadline:
        counts = db(lambda: (Task.objects.count(), Task.objects.filter(status__in=Task.ACTIVE).count()))
        if counts[0] >= expected and counts[1] == 0:
            break
        time.sleep(1.0)
    time.sleep(2.0)  # let the reaper and orphan killer finish their last scan

    # --- the report -----------------------------------------------------------------------------
    statuses = db(lambda: defaultdict(int, {s: Task.objects.filter(status=s).count() for s in Task.Status.values}))
    tasks = db(lambda: list(Task.objects.values("pk", "status", "finished_at", "worktree_path", "branch")))
    stuck = sum(1 for t in tasks if t["status"] in Task.ACTIVE) + max(0, expected - len(tasks))
    claims = db(lambda: list(Stage.objects.values_list("pk", "attempts")))
    result_counts = db(lambda: defaultdict(int, {s: n for s, n in _count_results(StageResult)}))
    lost = sum(max(0, attempts - result_counts[pk]) for pk, attempts in claims)
    open_attempts = db(lambda: StageResult.objects.filter(outcome=StageResult.Outcome.RUNNING).exclude(task__status__in=Task.ACTIVE).count())
    overlaps = _overlapping_runs(base / "trees")
    heads = defaultdict(int)
    for pull in standin.pulls.get(REPO, {}).values():
        heads[pull["head"]["ref"]] += 1
    duplicates = sum(n - 1 for n in heads.values() if n > 1)
    orphans = processes_inside([base / "trees"])  # still working inside a worktree
    finished = [t["finished_at"].timestamp() for t in tasks if t["finished_at"]]
    recovery = (max(finished) - last_fault) if finished else float("nan")
    attempts = db(lambda: StageResult.objects.count())
    worker_lost = db(lambda: StageResult.objects.filter(outcome=StageResult.Outcome.WORKER_LOST).count())
    standin.stop()

    print()
    kinds_done = defaultdict(int)
    for _, what in done_faults:
        kinds_done["q2 worker kills" if "worker" in what else "cluster kills" if "cluster" in what else "coordinator kills" if "coordinator" in what else "PostgreSQL restarts"] += 1
    print(f"tasks: {expected}  faults: {len(done_faults)} ({', '.join(f'{n} {k}' for k, n in kinds_done.items())})")
    print(f"  finished               {sum(statuses[s] for s in Task.FINISHED)}  ({', '.join(f'{s} {n}' for s, n in statuses.items() if n)})")
    print(f"  stuck                  {stuck}")
    print(f"  StageResults lost      {lost + open_attempts}  (claims without an attempt row {lost}, attempts left running {open_attempts})")
    print(f"  overlapping runs       {overlaps}")
    print(f"  duplicate PRs          {duplicates}  ({len(heads)} PRs)")
    print(f"  orphan processes       {orphans}")
    print(f"  attempts               {attempts}  (worker lost {worker_lost})")
    print(f"  recovery               {recovery:.1f} s after the last fault (bound: lease {lease} s + 60 s = {bound} s)")
    ok = stuck == 0 and lost + open_attempts == 0 and overlaps == 0 and duplicates == 0 and orphans == 0 and recovery <= bound
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def _count_results(StageResult):
    from django.db.models import Count

    return StageResult.objects.values("stage_id").annotate(n=Count("id")).values_list("stage_id", "n")


def agent_spans(lines, key=lambda cwd: cwd) -> dict[tuple[str, str], dict[str, list[float]]]:
    """The first and last time each agent run logged ("<cwd> <stage> <run id> <time>" lines), by
    (`key(cwd)`, stage) and run id."""
    spans: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(dict)
    for line in lines:
        parts = line.rsplit(" ", 3)
        if len(parts) != 4:
            continue
        cwd, stage, me, at = parts
        span = spans[(key(cwd), stage)].setdefault(me, [float(at), float(at)])
        span[0], span[1] = min(span[0], float(at)), max(span[1], float(at))
    return spans


def _overlapping_runs(trees: Path) -> int:
    """Pairs of agent processes of one stage of one task whose logged lifetimes overlap (each
    worktree's agent.log)."""
    lines = [line for log in trees.glob("*/agent.log") for line in log.read_text().splitlines()]
    overlaps = 0
    for runs in agent_spans(lines).values():
        ordered = sorted(runs.values())
        for (_, end), (start, _) in zip(ordered, ordered[1:], strict=False):
            if start < end:
                overlaps += 1
    return overlaps


if __name__ == "__main__":
    sys.exit(main())
