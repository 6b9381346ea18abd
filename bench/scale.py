"""Scale: what running stages cost TAC-X's own processes, per process model, at 10/50/100 stages.

    .venv/bin/python bench/scale.py --stages 100        # levels 10, 50, 100; drain 1000; fault 20
    .venv/bin/python bench/scale.py --stages 10 [--rates 5,50] [--seconds 20] [--runs 3]
    .venv/bin/python bench/scale.py --smoke             # CI: one stage, the stage host model

Two process models are measured in the same run, interleaved, on the same machine, each against
a fresh PostgreSQL database (`--database-url`, database `tacx_scale_<pid>_<n>`, dropped at the
end) and Redis (`--redis-url`):

- **stage host** (this tree's default): one stage host process running every attempt, each a
  thread around its agent (`TACX_STAGE_HOST_ATTEMPTS` = the largest level, pipeline/stage_host.py),
  fed by two django-q2 workers that only hand stages to it;
- **per worker** (the previous model, the baseline): one q2 worker process per stage, each with
  its own sandbox server (`TACX_STAGE_HOST_ATTEMPTS=0`, `TACX_Q_WORKERS` = the largest level).

`--baseline-tree DIR` adds another checkout (e.g. the commit before a change), per worker only.

Levels: `--stages N` runs N stages at once, or 10, N/2 and N when N >= 100 (`--levels` to choose).
For each model (the stack started once: `manage.py run_workers`, `manage.py run_coordinator`,
and daphne for the websockets, which is not measured):

1. **Idle**, `--seconds`: transactions/s, new connections/s, TAC-X CPU (the sessions of the
   cluster and the coordinator; agents run in sessions of their own and are not counted).
2. For each level L and rate R: L tasks whose one stage is a sandboxed `command` agent printing
   R lines/s (`--agent-seconds`, 60 by default at N >= 100). Once all L run, for `--seconds`:
   TAC-X CPU and PSS (`/proc/PID/smaps_rollup`) *added per running stage* over idle, and where
   the PSS goes by program; stage hand-off p50/p95 (stage queued -> its attempt started);
   live line -> websocket p95 (`--watch` tasks watched by a websocket client, each line stamped
   with the wall clock when printed); then, once the level's tasks end: lost results (attempts
   without a closed result row), duplicate runs (attempts beyond one) and stuck stages (not
   finished within `--agent-seconds` + 180 s). All three must be 0.
3. **Drain** (`--drain N`): N one-stage tasks (3 lines each): tasks/min, duplicates, hand-off.
4. **Fault** (`--fault F`, stage host only): the host runs F attempts (leases of 15 s); the
   bench kill -9s the host process (run_workers starts a new one); each stage must be re-run exactly once
   (attempts = 2, the first recorded worker_lost) and every result row closed.

Medians of `--runs` runs; `uptime`'s load is printed before and after (a loaded machine inflates
CPU and latency; PSS is not affected). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _scale_stack import LOGIN, Database, Stack, Watchers, cpu_seconds, git, pss_by_program, pss_mb
from _scale_table import print_table

ROOT = Path(__file__).resolve().parent.parent

AGENT = """
import pathlib, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
for i in range(int(rate * seconds)):
    print(f"LINE {i} {time.time():.6f} " + "x" * 60, flush=True)
    time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
pathlib.Path("plan.md").write_text("# Plan\\n")
"""

SETUP = """
import json, os
from pipeline import services
from pipeline.models import Repository
spec = json.loads(os.environ["SCALE_SPEC"])
repo, _ = Repository.objects.get_or_create(kind="local", full_name=spec["name"], defaults={"local_path": spec["path"], "max_concurrent_tasks": 10000})
for n in range(spec["first"], spec["first"] + spec["count"]):
    services.task_create(repository=repo, issue_number=n, title=f"scale {n}", trigger_source="api", workflow_override=spec["workflow"])
"""

MODELS = {"host": "stage host", "worker": "per worker (previous)"}


def workflow(argv: list[str], attempts: int = 1) -> str:
    return (
        "publish: none\nstages:\n  - name: planning\n    provider: command\n    timeout: 600\n"
        f"    max_attempts: {attempts}\n    options:\n      argv: {json.dumps(argv)}\n"
    )


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) > 1 else (values[0] if values else float("nan"))


def issues(first: int, count: int) -> list[int]:
    return list(range(first, first + count))


def window(stack: Stack, db: Database, seconds: float, count_lines=None) -> dict[str, float]:
    pids = stack.pids()
    s0, c0, l0, t0 = db.stats(), cpu_seconds(pids), count_lines() if count_lines else 0, time.monotonic()
    time.sleep(seconds / 2)
    now = stack.pids()
    pss, by_program = pss_mb(now), pss_by_program(now)
    time.sleep(seconds / 2)
    s1, c1, l1, t1 = db.stats(), cpu_seconds(pids), count_lines() if count_lines else 0, time.monotonic()
    elapsed = t1 - t0
    return {
        "cpu": sum(c1[p] - c0[p] for p in c1 if p in c0) / elapsed,
        "xacts": (s1["xacts"] - s0["xacts"]) / elapsed,
        "sessions": (s1["sessions"] - s0["sessions"]) / elapsed,
        "lines": (l1 - l0) / elapsed,
        "pss": pss,
        "by_program": by_program,
    }


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def correctness(db: Database, ids: list[int]) -> dict[str, float]:
    """Lost results, duplicate runs and stuck stages of the given issues' tasks."""
    ((attempts, results, open_results, dup, stuck),) = db.query(
        "SELECT coalesce(sum(s.attempts), 0), (SELECT count(*) FROM pipeline_stageresult r JOIN pipeline_task t2 ON t2.id = r.task_id WHERE t2.issue_number = ANY(%s)), "
        "(SELECT count(*) FROM pipeline_stageresult r JOIN pipeline_task t2 ON t2.id = r.task_id WHERE t2.issue_number = ANY(%s) AND r.outcome = 'running'), "
        "coalesce(sum(greatest(s.attempts - 1, 0)), 0), count(*) FILTER (WHERE s.status IN ('queued', 'running')) "
        "FROM pipeline_stage s JOIN pipeline_task t ON t.id = s.task_id WHERE t.issue_number = ANY(%s)",
        [ids, ids, ids],
    )
    return {"lost": int(attempts) - int(results) + int(open_results), "duplicates": int(dup), "stuck": int(stuck)}


def handoffs(db: Database, ids: list[int]) -> list[float]:
    return sorted(
        float(r[0])
        for r in db.query(
            "SELECT EXTRACT(EPOCH FROM (r.started_at - e.created_at)) FROM pipeline_stageresult r JOIN pipeline_task t ON t.id = r.task_id "
            "JOIN LATERAL (SELECT created_at FROM pipeline_agentevent WHERE task_id = t.id AND kind = 'status' AND data->>'message' LIKE 'stage planning queued%%' ORDER BY id LIMIT 1) e ON true "
            "WHERE t.issue_number = ANY(%s) AND r.attempt = 1",
            [ids],
        )
    )


def running(db: Database, ids: list[int]) -> int:
    sql = "SELECT count(*) FROM pipeline_stage s JOIN pipeline_task t ON t.id = s.task_id WHERE s.status = 'running' AND t.issue_number = ANY(%s)"
    return db.query(sql, [ids])[0][0]


def model_env(model: str, args) -> dict[str, str]:
    top = max(args.levels)
    if model == "host":
        return {"TACX_Q_WORKERS": "2", "TACX_STAGE_HOST_ATTEMPTS": str(max(top, args.fault))}
    return {"TACX_Q_WORKERS": str(top), "TACX_STAGE_HOST_ATTEMPTS": "0"}


def measure(tree: Path, model: str, args, run: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix="tacx-scale-"))
    db = Database(args.database_url, f"tacx_scale_{os.getpid()}_{run}_{model}")
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
        "TACX_MAX_CONCURRENT_TASKS": str(max(args.levels)),
        "TACX_SANDBOX_ALLOW_READ": os.pathsep.join([sys.prefix, sys.base_prefix, str(agent)]),  # not base: it holds the worktrees
        "TACX_Q_LOG_LEVEL": "WARNING",
        "LOG_LEVEL": "WARNING",
        "TACX_POLL_INTERVAL": "3600",
        **model_env(model, args),
    }
    stack = Stack(tree, env, base)
    result: dict = {"tree": str(tree), "model": model}
    first = 1
    try:
        stack.manage("migrate", "-v", "0")
        cookie = stack.manage("shell", "-c", LOGIN).split("COOKIE ", 1)[1].strip()
        stack.start(web=args.watch > 0)
        time.sleep(8)  # workers spawned, first cycles done
        result["idle"] = window(stack, db, args.seconds)
        for level in args.levels:
            for rate in args.rates:
                ids = issues(first, level)
                first += level
                spec = {
                    "name": "scale",
                    "path": str(clone),
                    "first": ids[0],
                    "count": level,
                    "workflow": workflow([sys.executable, str(agent), str(rate), str(args.agent_seconds)]),
                }
                after = db.query("SELECT coalesce(max(id), 0) FROM pipeline_agentevent")[0][0]
                stack.manage("shell", "-c", SETUP, spec=spec)
                watched = [
                    r[0]
                    for r in db.query(
                        "SELECT id FROM pipeline_task WHERE issue_number = ANY(%s) ORDER BY id LIMIT %s", [ids, args.watch]
                    )
                ]
                watchers = Watchers(stack.port, cookie, watched, after) if args.watch else None

                all_running = wait_until(lambda ids=ids: running(db, ids) == len(ids), 120 + level)
                time.sleep(3)
                w = window(
                    stack,
                    db,
                    args.seconds,
                    lambda: db.query("SELECT count(*) FROM pipeline_agentevent WHERE kind IN ('message', 'output')")[0][0],
                )
                idle = result["idle"]
                cpu = max(0.0, w["cpu"] - idle["cpu"])
                done = wait_until(
                    lambda ids=ids: (
                        not db.query(
                            "SELECT count(*) FROM pipeline_task WHERE status IN ('queued', 'running') AND issue_number = ANY(%s)",
                            [ids],
                        )[0][0]
                    ),
                    args.agent_seconds + 180,
                )
                live = watchers.close() if watchers else []
                hand = handoffs(db, ids)
                result[f"L{level}_r{rate:g}"] = {
                    "all_running": all_running,
                    "finished": done,
                    "cpu_per_stage_pct": 100 * cpu / level,
                    "cpu_ms_per_line": 1000 * cpu / max(w["lines"], 1e-9),
                    "xacts_per_line": max(0.0, w["xacts"] - idle["xacts"]) / max(w["lines"], 1e-9),
                    "sessions_per_s": w["sessions"],
                    "pss_total_mb": w["pss"],
                    "pss_per_stage_mb": max(0.0, w["pss"] - idle["pss"]) / level,
                    "pss_by_program": w["by_program"],
                    "lines_per_s": w["lines"],
                    "handoff_p50": statistics.median(hand) if hand else float("nan"),
                    "handoff_p95": p95(hand),
                    "live_p95_ms": 1000 * p95(live),
                    "live_lines": len(live),
                    **correctness(db, ids),
                }
        if args.drain:
            result["drain"] = drain(stack, db, clone, args, first)
            first += args.drain
        if args.fault and model == "host":
            stack.stop()
            result["fault"] = fault(tree, env, base, db, clone, agent, args, first)
    finally:
        stack.stop()
        db.drop()
        shutil.rmtree(base, ignore_errors=True)
    return result


def drain(stack: Stack, db: Database, clone: Path, args, first: int) -> dict:
    script = "import pathlib; print(1); print(2); print(3); pathlib.Path('plan.md').write_text('#')"
    stack.manage(
        "shell",
        "-c",
        SETUP,
        spec={
            "name": "scale",
            "path": str(clone),
            "first": first,
            "count": args.drain,
            "workflow": workflow([sys.executable, "-c", script]),
        },
    )
    ids = issues(first, args.drain)
    started = time.monotonic()
    wait_until(
        lambda: not db.query("SELECT count(*) FROM pipeline_task WHERE status IN ('queued', 'running', 'waiting')")[0][0], 3600
    )
    elapsed = time.monotonic() - started
    hand = handoffs(db, ids)
    return {
        "tasks": args.drain,
        "seconds": elapsed,
        "tasks_per_min": 60 * args.drain / elapsed,
        **correctness(db, ids),
        "queued_to_start_p50": statistics.median(hand),
        "queued_to_start_p95": p95(hand),
    }


def fault(tree: Path, env: dict, base: Path, db: Database, clone: Path, agent: Path, args, first: int) -> dict:
    """One host of `args.fault` slots runs that many attempts; kill -9 it; each must run again once."""
    env = {
        **env,
        "TACX_STAGE_HOST_ATTEMPTS": str(args.fault),
        "TACX_LEASE_SECONDS": "15",
        "TACX_HEARTBEAT_SECONDS": "2",
    }
    stack = Stack(tree, env, base)
    ids = issues(first, args.fault)
    try:
        stack.start()
        spec = {
            "name": "scale",
            "path": str(clone),
            "first": first,
            "count": args.fault,
            "workflow": workflow([sys.executable, str(agent), "5", "20"], attempts=3),
        }
        stack.manage("shell", "-c", SETUP, spec=spec)
        if not wait_until(lambda: running(db, ids) == args.fault, 180):
            return {"error": "the attempts did not all start"}
        time.sleep(2)
        pids = [r[0] for r in db.query("SELECT DISTINCT pid FROM pipeline_worker WHERE kind = 'agent' AND exited_at IS NULL")]
        os.kill(pids[0], signal.SIGKILL)
        killed_at = time.monotonic()
        finished = wait_until(
            lambda: (
                not db.query(
                    "SELECT count(*) FROM pipeline_task WHERE status IN ('queued', 'running') AND issue_number = ANY(%s)", [ids]
                )[0][0]
            ),
            240,
        )
        rows = db.query(
            "SELECT s.attempts, (SELECT string_agg(r.outcome, ',' ORDER BY r.attempt) FROM pipeline_stageresult r WHERE r.stage_id = s.id), t.status "
            "FROM pipeline_stage s JOIN pipeline_task t ON t.id = s.task_id WHERE t.issue_number = ANY(%s)",
            [ids],
        )
        return {
            "attempts_killed": args.fault,
            "host_processes": len(pids),
            "rerun_exactly_once": sum(
                1 for a, outcomes, status in rows if a == 2 and outcomes == "worker_lost,succeeded" and status == "succeeded"
            ),
            "lost": sum(1 for a, outcomes, _ in rows if len((outcomes or "").split(",")) != a or "running" in (outcomes or "")),
            "duplicates": sum(1 for a, _, _ in rows if a > 2),
            "stuck": 0 if finished else len(ids),
            "recovered_seconds": time.monotonic() - killed_at,
        }
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--levels", help="comma-separated stage counts (default: N, or 10,N/2,N when N >= 100)")
    parser.add_argument("--rates", default="5")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--agent-seconds", type=float)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--models", default="host,worker")
    parser.add_argument("--watch", type=int, default=5, help="tasks watched by a websocket client per level (0: no daphne)")
    parser.add_argument("--drain", type=int)
    parser.add_argument("--fault", type=int)
    parser.add_argument("--baseline-tree", type=Path)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--private-postgres",
        type=int,
        default=None,
        help="start a private PostgreSQL with this max_connections instead of --database-url (default 400 at --stages >= 100:"
        " each running stage holds a connection while it writes, and a shared server's 100 are not enough)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): one stage, the stage host model"
    )
    args = parser.parse_args()
    big = args.stages >= 100
    if args.smoke:
        args.stages, args.rates, args.seconds, args.runs, args.drain, args.fault, args.agent_seconds, args.watch = (
            1,
            "5",
            2.0,
            1,
            2,
            0,
            10.0,
            1,
        )
        args.models = "host"
    args.levels = (
        [int(x) for x in args.levels.split(",")]
        if args.levels
        else ([10, args.stages // 2, args.stages] if big else [args.stages])
    )
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.agent_seconds = args.agent_seconds or (60.0 if big else args.seconds + 25)
    args.runs = args.runs or (1 if big else 3)
    args.drain = args.drain if args.drain is not None else (1000 if big else 0)
    args.fault = args.fault if args.fault is not None else (20 if big else 0)
    pg = None
    private = args.private_postgres if args.private_postgres is not None else (400 if big else 0)
    if private:
        from _common import PrivatePostgres

        pg = PrivatePostgres(Path(tempfile.mkdtemp(prefix="tacx-scale-pg-")))
    try:
        if pg is not None:
            conn = psycopg2_connect(pg.start())
            conn.cursor().execute(f"ALTER SYSTEM SET max_connections = {int(private)}")
            conn.close()
            pg.restart()
            args.database_url = f"postgres://postgres@127.0.0.1:{pg.port}"
        run_all(args, big)
    finally:
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.dir.parent, ignore_errors=True)


def psycopg2_connect(url: str):
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def run_all(args, big: bool) -> None:
    models = [m for m in args.models.split(",") if m]
    columns = [(MODELS[m], ROOT, m) for m in models] + (
        [("baseline tree", args.baseline_tree.resolve(), "worker")] if args.baseline_tree else []
    )
    load_before = os.getloadavg()
    results: dict[str, list[dict]] = {label: [] for label, _, _ in columns}
    for run in range(args.runs):
        for label, tree, model in columns:  # interleaved, so all see the same machine load
            results[label].append(measure(tree, model, args, run))
            print(
                f"run {run + 1}/{args.runs} {label}: {json.dumps(results[label][-1], default=float)}", file=sys.stderr, flush=True
            )
    load_after = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    print_table(args, columns, results, load_before, load_after)


if __name__ == "__main__":
    main()
