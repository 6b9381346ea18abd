"""Scale: what a running stage and an idle machine cost TAC-X on PostgreSQL + Redis.

    .venv/bin/python bench/scale.py [--stages 4] [--rates 5,50] [--seconds 20] [--runs 3]
                                    [--baseline-tree DIR] [--drain 0]

For each tree (this one, and with `--baseline-tree` another checkout, e.g. the commit before a
change, measured in the same run on the same machine), against a fresh database on the
PostgreSQL of `--database-url` (default postgres://postgres@127.0.0.1:5432, database
`tacx_scale_<pid>`, dropped at the end) and Redis at `--redis-url`:

1. Starts the stack as separate processes (`manage.py qcluster` with `--stages` workers and
   `manage.py run_coordinator`), each in its own session, with the tree's own defaults.
2. **Idle**: for `--seconds`, nothing to do: transactions (`pg_stat_database.xact_commit`;
   TAC-X runs in autocommit, so one per statement outside explicit transactions) and new
   connections (`sessions`) per second, and the CPU of TAC-X's processes.
3. **Lines**, for each rate R of `--rates`: `--stages` tasks whose one stage is a `command`
   agent printing R lines/s (sandboxed, as always). Once every stage runs, for `--seconds`:
   TAC-X's CPU (the sessions of the qcluster and the coordinator: q2 sentinel, workers and the
   sandbox servers they start; the agents live in sessions of their own and are not counted)
   above the idle figure, as % of a core per running stage and ms per line; transactions above
   idle per line; new connections per second; PSS memory of TAC-X's processes
   (`/proc/PID/smaps_rollup`), in all and added per running stage over idle (idle q2 workers
   already exist, so this is what running a stage adds to a waiting worker).
4. **Drain** (`--drain N`): N one-stage tasks (agent prints 3 lines) through the cluster;
   duplicates (attempts beyond one per stage) and the hand-off time (stage queued -> its attempt
   started) p50/p95.

Each measurement is repeated `--runs` times; the median is printed. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

AGENT = """
import pathlib, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
for i in range(int(rate * seconds)):
    print(f"line {i} " + "x" * 80, flush=True)
    time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
pathlib.Path("plan.md").write_text("# Plan\\n")
"""

SETUP = """
import json, sys
from pipeline import services
from pipeline.models import Repository
import os
spec = json.loads(os.environ["SCALE_SPEC"])
repo, _ = Repository.objects.get_or_create(kind="local", full_name=spec["name"], defaults={"local_path": spec["path"], "max_concurrent_tasks": 10000})
for n in range(spec["first"], spec["first"] + spec["count"]):
    services.task_create(repository=repo, issue_number=n, title=f"scale {n}", trigger_source="api",
                         workflow_override=spec["workflow"])
"""


def sh(cmd: list[str], **kwargs) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs).stdout


def git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


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
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [self.name])
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


class Stack:
    def __init__(self, tree: Path, env: dict[str, str], logs: Path):
        self.tree, self.env, self.logs = tree, env, logs
        self.procs: dict[str, subprocess.Popen] = {}

    def manage(self, *args: str, spec: dict | None = None) -> str:
        env = {**self.env, "SCALE_SPEC": json.dumps(spec)} if spec is not None else self.env
        return sh([str(self.tree / ".venv/bin/python"), "manage.py", *args], cwd=self.tree, env=env)

    def start(self) -> None:
        py = str(self.tree / ".venv/bin/python")
        for name, argv in (("cluster", [py, "manage.py", "qcluster"]), ("coordinator", [py, "manage.py", "run_coordinator"])):
            out = (self.logs / f"{name}.log").open("a")
            self.procs[name] = subprocess.Popen(argv, cwd=self.tree, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def pids(self) -> list[int]:
        return [pid for proc in self.procs.values() for pid in session_pids(proc.pid)]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def window(stack: Stack, db: Database, seconds: float, count_lines=None) -> dict[str, float]:
    pids = stack.pids()
    s0, c0, l0, t0 = db.stats(), cpu_seconds(pids), count_lines() if count_lines else 0, time.monotonic()
    time.sleep(seconds / 2)
    pss = pss_mb(stack.pids())
    time.sleep(seconds / 2)
    s1, c1, l1, t1 = db.stats(), cpu_seconds(pids), count_lines() if count_lines else 0, time.monotonic()
    elapsed = t1 - t0
    cpu = sum(c1[p] - c0[p] for p in c1 if p in c0)
    return {
        "cpu": cpu / elapsed,
        "xacts": (s1["xacts"] - s0["xacts"]) / elapsed,
        "sessions": (s1["sessions"] - s0["sessions"]) / elapsed,
        "lines": (l1 - l0) / elapsed,
        "pss": pss,
    }


def measure_tree(tree: Path, args, run: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix="tacx-scale-"))
    name = f"tacx_scale_{os.getpid()}_{run}"
    db = Database(args.database_url, name)
    agent = base / "agent.py"
    agent.write_text(AGENT)
    origin, clone = base / "origin.git", base / "repo"
    git(base, "init", "-q", "--bare", "-b", "main", str(origin))
    git(base, "init", "-q", "-b", "main", str(clone))
    (clone / "README.md").write_text("scale\n")
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "init")
    git(clone, "remote", "add", "origin", str(origin))
    git(clone, "push", "-q", "origin", "main")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TACX_")},
        "DATABASE_URL": db.url,
        "REDIS_URL": args.redis_url,
        "TACX_VAR_DIR": str(base / "var"),
        "TACX_WORKTREE_ROOT": str(base / "trees"),
        "TACX_Q_WORKERS": str(args.stages),
        "TACX_MAX_CONCURRENT_TASKS": str(args.stages),
        "TACX_SANDBOX_ALLOW_READ": os.pathsep.join([sys.prefix, sys.base_prefix, str(agent)]),  # not base: it holds the worktrees
        "TACX_Q_LOG_LEVEL": "WARNING",
        "LOG_LEVEL": "WARNING",
        "TACX_POLL_INTERVAL": "3600",
    }
    stack = Stack(tree, env, base)
    result: dict = {"tree": str(tree)}
    try:
        stack.manage("migrate", "-v", "0")
        stack.start()
        time.sleep(8)  # workers spawned, first cycles done
        result["idle"] = window(stack, db, args.seconds)
        first = 1
        for rate in args.rates:
            seconds = args.seconds + 25
            workflow = (
                "publish: none\nstages:\n  - name: planning\n    provider: command\n    timeout: 600\n    max_attempts: 1\n    options:\n"
                f"      argv: {json.dumps([sys.executable, str(agent), str(rate), str(seconds)])}\n"
            )
            spec = {"name": "scale", "path": str(clone), "first": first, "count": args.stages, "workflow": workflow}
            stack.manage("shell", "-c", SETUP, spec=spec)
            ids = range(first, first + args.stages)
            first += args.stages
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                running = db.query(
                    "SELECT count(*) FROM pipeline_stage s JOIN pipeline_task t ON t.id = s.task_id WHERE s.status = 'running' AND t.issue_number = ANY(%s)",
                    [list(ids)],
                )[0][0]
                if running == args.stages:
                    break
                time.sleep(0.5)
            time.sleep(3)

            def lines() -> int:
                return db.query("SELECT count(*) FROM pipeline_agentevent WHERE kind IN ('message', 'output')")[0][0]

            w = window(stack, db, args.seconds, lines)
            n, idle = args.stages, result["idle"]
            # What the running stages add to the idle machine (same processes, same window length).
            cpu = max(0.0, w["cpu"] - idle["cpu"])
            result[f"rate{rate:g}"] = {
                "cpu_per_stage_pct": 100 * cpu / n,
                "cpu_ms_per_line": 1000 * cpu / max(w["lines"], 1e-9),
                "xacts_per_line": max(0.0, w["xacts"] - idle["xacts"]) / max(w["lines"], 1e-9),
                "sessions_per_s": w["sessions"],
                "pss_total_mb": w["pss"],
                "pss_per_stage_mb": max(0.0, w["pss"] - idle["pss"]) / n,
                "lines_per_s": w["lines"],
            }
            while db.query("SELECT count(*) FROM pipeline_task WHERE status IN ('queued', 'running')")[0][0]:
                time.sleep(1)
        if args.drain:
            result["drain"] = drain(stack, db, clone, args, first)
    finally:
        stack.stop()
        db.drop()
        shutil.rmtree(base, ignore_errors=True)
    return result


def drain(stack: Stack, db: Database, clone: Path, args, first: int) -> dict:
    workflow = (
        "publish: none\nstages:\n  - name: planning\n    provider: command\n    timeout: 600\n    max_attempts: 1\n    options:\n"
        f"      argv: {json.dumps([sys.executable, '-c', 'import pathlib; print(1); print(2); print(3); pathlib.Path(chr(112)+chr(108)+chr(97)+chr(110)+chr(46)+chr(109)+chr(100)).write_text(chr(35))'])}\n"
    )
    stack.manage("shell", "-c", SETUP, spec={"name": "scale", "path": str(clone), "first": first, "count": args.drain, "workflow": workflow})
    started = time.monotonic()
    while db.query("SELECT count(*) FROM pipeline_task WHERE status IN ('queued', 'running', 'waiting')")[0][0]:
        time.sleep(1)
    elapsed = time.monotonic() - started
    dup = db.query("SELECT count(*) FROM pipeline_stageresult WHERE attempt > 1")[0][0]
    handoff = [
        float(r[0])
        for r in db.query(
            "SELECT EXTRACT(EPOCH FROM (r.started_at - e.created_at)) FROM pipeline_stageresult r JOIN pipeline_task t ON t.id = r.task_id "
            "JOIN LATERAL (SELECT created_at FROM pipeline_agentevent WHERE task_id = t.id AND kind = 'status' AND data->>'message' LIKE 'stage planning queued%%' ORDER BY id LIMIT 1) e ON true "
            "WHERE t.issue_number >= %s",
            [first],
        )
    ]
    handoff.sort()
    q = statistics.quantiles(handoff, n=20) if len(handoff) > 1 else [0] * 19
    return {"tasks": args.drain, "seconds": elapsed, "tasks_per_min": 60 * args.drain / elapsed, "duplicates": dup, "queued_to_start_p50": statistics.median(handoff), "queued_to_start_p95": q[18]}


def median_of(runs: list[dict], *path: str) -> float:
    values = []
    for r in runs:
        v = r
        for key in path:
            v = v[key]
        values.append(float(v))
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--rates", default="5,50")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--drain", type=int, default=0)
    parser.add_argument("--baseline-tree", type=Path)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): smallest sizes, one run")
    args = parser.parse_args()
    if args.smoke:
        args.stages, args.rates, args.seconds, args.runs, args.drain = 1, "5", 2.0, 1, 2
    args.rates = [float(r) for r in args.rates.split(",") if r]
    trees = [("this tree", ROOT)] + ([("baseline", args.baseline_tree.resolve())] if args.baseline_tree else [])
    results: dict[str, list[dict]] = {label: [] for label, _ in trees}
    for run in range(args.runs):
        for label, tree in trees:  # interleaved, so both see the same machine load
            results[label].append(measure_tree(tree, args, run))
            print(f"run {run + 1}/{args.runs} {label}: {json.dumps(results[label][-1], default=float)}", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    print(f"\n{args.stages} concurrent stages, {args.runs} runs (median), {args.seconds:g} s windows\n")
    print("| figure | " + " | ".join(label for label, _ in trees) + " |")
    print("|---|" + "---|" * len(trees))
    rows = [("idle: transactions/s", ("idle", "xacts"), 1), ("idle: new connections/s", ("idle", "sessions"), 1), ("idle: TAC-X CPU (% of a core)", ("idle", "cpu"), 100)]
    for rate in args.rates:
        key = f"rate{rate:g}"
        rows += [
            (f"{rate:g} lines/s: TAC-X CPU per running stage (% of a core)", (key, "cpu_per_stage_pct"), 1),
            (f"{rate:g} lines/s: TAC-X CPU per line (ms)", (key, "cpu_ms_per_line"), 1),
            (f"{rate:g} lines/s: transactions per line", (key, "xacts_per_line"), 1),
            (f"{rate:g} lines/s: new connections/s", (key, "sessions_per_s"), 1),
            (f"{rate:g} lines/s: TAC-X PSS, all processes (MB)", (key, "pss_total_mb"), 1),
            (f"{rate:g} lines/s: TAC-X PSS added per running stage (MB)", (key, "pss_per_stage_mb"), 1),
        ]
    if args.drain:
        rows += [("drain: tasks/min", ("drain", "tasks_per_min"), 1), ("drain: duplicate attempts", ("drain", "duplicates"), 1),
                 ("drain: queued -> started p50 (s)", ("drain", "queued_to_start_p50"), 1), ("drain: queued -> started p95 (s)", ("drain", "queued_to_start_p95"), 1)]
    for title, path, scale in rows:
        print(f"| {title} | " + " | ".join(f"{scale * median_of(results[label], *path):.2f}" for label, _ in trees) + " |")


if __name__ == "__main__":
    main()
