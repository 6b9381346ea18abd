"""Two-machine drill: one of two machines sharing PostgreSQL and Redis dies mid-run.

    .venv/bin/python bench/two_machine_drill.py [--tasks 12] [--kill-after 20] [--lease 10]

What it does (everything real but GitHub, which is tests/github_standin.py on loopback, and the
machines, which are two process sets on this one, each in a UTS namespace of its own):

1. Starts a private PostgreSQL like bench/chaos_drill.py (initdb in a temporary directory, its
   own port, run as `postgres`; `--database-url` uses another server), uses Redis at
   `--redis-url` (its own db number), migrates, registers `drill/app` (a bare origin on disk)
   and files N labelled issues at the stand-in.
2. Starts two "machines", `machine-a` and `machine-b`: each is `manage.py run_workers` (the q2
   cluster) and `manage.py run_coordinator`, each started by
   `unshare --uts -- sh -c 'hostname machine-x && exec …'` (so `socket.gethostname()` differs;
   checked before), with its own TACX_WORKTREE_ROOT and TACX_VAR_DIR (mirrors, locks). The
   agents are bench/chaos_drill.py's: about two seconds of work, logging
   "<worktree> <stage> <id> <t>" into their worktree every 0.1 s.
3. Once `--kill-after` seconds passed and machine-a runs an agent stage: SIGKILL every process
   of machine-a at once (both process sets' UTS namespaces, their descendants, anything working
   in its worktree root), then deletes its worktree root (its agents' logs are kept first).
4. Waits until every task is final, then until the survivor's coordinator removed its worktrees
   (retention `--retention` seconds).

Checks (exit 0 only when all hold): every task final (succeeded) within lease + 60 s of the kill;
0 reviews of a stale head (a reviewing attempt whose base commit is not the head commit of the
building attempt that succeeded last before it); 0 duplicate runs (two agent processes of one
stage of one task alive at once, on either machine, from the agents' logs, matched by worktree
name); 0 duplicate PRs; 0 leaked worktrees (directories left in the survivor's worktree root, and
survivor TaskWorktree rows not marked removed); also the agent processes left alive.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_drill import AGENT, LABEL, REPO, ROOT, PrivatePostgres, Process, run, tear_down  # noqa: E402

HOSTS = ("machine-a", "machine-b")


def in_machine(host: str, argv: list[str]) -> list[str]:
    """`argv` in a new UTS namespace whose hostname is `host`."""
    return ["unshare", "--uts", "--", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *argv]


def uts_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/uts")
    except OSError:
        return None


def machine_pids(namespaces: set[str], tree: Path) -> set[int]:
    """Every process of a machine: in one of its UTS namespaces, a descendant of one, or working
    in its worktree root (sandboxed agents may sit in namespaces and sessions of their own)."""
    parents: dict[int, int] = {}
    found: set[int] = set()
    root = str(tree.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                parents[pid] = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if uts_ns(pid) in namespaces:
            found.add(pid)
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            found.add(pid)
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    found.discard(os.getpid())
    return found


def harvest(tree: Path, into: set[str]) -> None:
    """Collect every line of every worktree's agent.log. The union, because a worktree is
    removed after the retention, and a stage on another machine checks out the branch, whose
    agent.log (committed by a building stage) replaces this machine's copy."""
    for log in tree.glob("*/agent.log"):
        try:
            into.update(log.read_text().splitlines())
        except OSError:
            pass


def overlapping_runs(lines: set[str]) -> tuple[int, int, int]:
    """Pairs of agent runs of one stage of one task (worktree name) whose logged lifetimes
    overlap, across both machines; also the runs and the (task, stage) pairs seen."""
    spans: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(dict)
    for line in lines:
        parts = line.rsplit(" ", 3)
        if len(parts) != 4:
            continue
        cwd, stage, me, at = parts
        span = spans[(Path(cwd).name, stage)].setdefault(me, [float(at), float(at)])
        span[0], span[1] = min(span[0], float(at)), max(span[1], float(at))
    overlaps = 0
    for runs in spans.values():
        ordered = sorted(runs.values())
        for i, (_, end) in enumerate(ordered):
            overlaps += sum(1 for start, _ in ordered[i + 1 :] if start < end)
    return overlaps, sum(len(runs) for runs in spans.values()), len(spans)


def agents_alive(trees: list[Path]) -> int:
    roots = [str(t.resolve()) for t in trees]
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if any(cwd == r or cwd.startswith(r + os.sep) for r in roots):
                count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--kill-after", type=float, default=20.0, help="seconds after the start, at the earliest")
    parser.add_argument("--lease", type=int, default=10)
    parser.add_argument("--workers", type=int, default=3, help="q2 workers per machine")
    parser.add_argument("--retention", type=float, default=15.0, help="worktree retention, seconds")
    parser.add_argument("--database-url", default="", help="use this PostgreSQL instead of a private one")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): smallest sizes, one run")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.kill_after, args.workers, args.lease, args.retention = 2, 3.0, 1, 5, 5.0

    base = Path(tempfile.mkdtemp(prefix="tacx-2m-"))
    (base / "logs").mkdir()
    pg = None if args.database_url else PrivatePostgres(base)
    processes: list[Process] = []
    try:
        database_url = args.database_url or pg.start()
        return drill(args, base, database_url, processes)
    finally:
        tear_down(processes, pg, base, keep=args.keep)


def drill(args, base: Path, database_url: str, processes: list[Process]) -> int:
    logs = base / "logs"
    agent_logs: set[str] = set()
    # The machines really have hostnames of their own.
    for host in HOSTS:
        seen = run(in_machine(host, [sys.executable, "-c", "import socket; print(socket.gethostname())"])).strip()
        assert seen == host != socket.gethostname(), (seen, host)
    print(f"hostnames: {', '.join(HOSTS)} (this one: {socket.gethostname()})", flush=True)

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from github_standin import TOKEN, GitHubStandIn

    standin = GitHubStandIn(token=TOKEN).start()
    standin.add_repo(REPO, permissions={"alice": "write"})
    for number in range(1, args.tasks + 1):
        standin.add_issue(
            REPO, number=number, title=f"Drill issue {number}", body="Write NOTES.md.", labels=(LABEL,), labeled_by="alice"
        )

    (base / "agent").mkdir()
    (base / "agent" / "agent.py").write_text(AGENT)
    origin, clone = base / "origin.git", base / "clone"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)])
    run(["git", "init", "-q", "-b", "main", str(clone)])
    stages = []
    for name in ("planning", "building", "reviewing"):
        argv = [sys.executable, str(base / "agent" / "agent.py"), name]
        stages.append(
            f"  - name: {name}\n    provider: command\n    timeout: 120\n    max_attempts: 20\n    options:\n      argv: {argv!r}\n"
        )
    (clone / ".tac").mkdir()
    (clone / ".tac" / "workflow.yaml").write_text(
        "version: 1\nstages:\n" + "".join(stages) + "  - name: pr_creation\n    max_attempts: 20\n"
    )
    (clone / "README.md").write_text("drill\n")
    git_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "d",
        "GIT_AUTHOR_EMAIL": "d@x",
        "GIT_COMMITTER_NAME": "d",
        "GIT_COMMITTER_EMAIL": "d@x",
    }
    for cmd in (
        ["add", "-A"],
        ["commit", "-q", "-m", "drill"],
        ["remote", "add", "origin", str(origin)],
        ["push", "-q", "origin", "main"],
    ):
        run(["git", *cmd], cwd=clone, env=git_env)

    lease = args.lease
    common = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TACX_")},
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis_url,
        "GITHUB_API_URL": standin.url,
        "GITHUB_TOKEN": TOKEN,
        "TACX_LEASE_SECONDS": str(lease),
        "TACX_HEARTBEAT_SECONDS": "1",
        "TACX_LOST_JOB_SECONDS": str(lease),
        "TACX_KILL_GRACE_SECONDS": "1",
        "TACX_MAX_CONCURRENT_TASKS": str(2 * args.workers),
        "TACX_Q_WORKERS": str(args.workers),
        "TACX_Q_TIMEOUT": "600",
        "TACX_Q_POLL": "0.2",
        "TACX_POLL_INTERVAL": "1",
        "TACX_MAX_ATTEMPTS": "20",
        "TACX_WORKTREE_RETENTION_HOURS": str(args.retention / 3600),
        "LOG_LEVEL": "WARNING",
        "TACX_SANDBOX_ALLOW_READ": os.pathsep.join([sys.prefix, sys.base_prefix, str(base / "agent")]),
    }
    trees = {host: base / host / "trees" for host in HOSTS}
    envs = {host: {**common, "TACX_VAR_DIR": str(base / host / "var"), "TACX_WORKTREE_ROOT": str(trees[host])} for host in HOSTS}
    for host in HOSTS:
        (base / host).mkdir()
    os.environ.update(
        {
            k: envs["machine-b"][k]
            for k in ("DATABASE_URL", "TACX_VAR_DIR", "TACX_WORKTREE_ROOT", "GITHUB_API_URL", "GITHUB_TOKEN")
        }
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")
    run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=envs["machine-b"])
    import django

    django.setup()
    from django.db import close_old_connections, connection

    from pipeline import services
    from pipeline.models import Repository, StageResult, Task, TaskWorktree, Worker

    services.repository_add(
        full_name=REPO,
        kind=Repository.Kind.GITHUB,
        clone_url=str(origin),
        trigger_label=LABEL,
        max_concurrent_tasks=2 * args.workers,
    )
    connection.close()

    machines: dict[str, list[Process]] = {}
    for host in HOSTS:
        machines[host] = [
            Process(f"{host}-workers", in_machine(host, [sys.executable, "manage.py", "run_workers"]), envs[host], logs),
            Process(f"{host}-coordinator", in_machine(host, [sys.executable, "manage.py", "run_coordinator"]), envs[host], logs),
        ]
        processes += machines[host]
        for proc in machines[host]:
            proc.start()
    started = time.time()

    def db(query):
        close_old_connections()
        return query()

    # --- the kill -------------------------------------------------------------------------------
    victim, survivor = HOSTS
    namespaces: set[str] = set()
    while True:
        time.sleep(0.5)
        for proc in machines[victim]:
            ns = uts_ns(proc.proc.pid) if proc.proc else None
            if ns:
                namespaces.add(ns)
        harvest(trees[victim], agent_logs)
        harvest(trees[survivor], agent_logs)
        busy = db(lambda: Worker.objects.filter(kind=Worker.Kind.AGENT, host=victim, exited_at__isnull=True).count())
        if time.time() - started >= args.kill_after and busy:
            break
        if (
            time.time() - started > args.kill_after + 120
            or db(lambda: Task.objects.filter(status__in=Task.FINISHED).count()) >= args.tasks
        ):
            print(f"{victim} ran no stage to kill before the tasks were done: no drill (lower --kill-after)", flush=True)
            break
    mine = namespaces - {uts_ns(os.getpid())}
    pids = machine_pids(mine, trees[victim])
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP)  # nobody of it forks or writes on after this
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed_at = time.time()
    killed_running = busy
    for proc in machines[victim]:
        if proc.proc:
            proc.proc.wait()
    time.sleep(0.2)
    left = machine_pids(mine, trees[victim])
    harvest(trees[victim], agent_logs)
    shutil.rmtree(trees[victim], ignore_errors=True)
    counts = db(lambda: (Task.objects.count(), Task.objects.filter(status__in=Task.FINISHED).count()))
    running = db(lambda: Worker.objects.filter(kind=Worker.Kind.AGENT, host=victim, exited_at__isnull=True).count())
    print(
        f"{killed_at - started:6.1f} s  SIGKILL {len(pids)} processes of {victim} ({running} running stages; "
        f"{counts[1]}/{counts[0]} tasks finished so far), its worktree root deleted; {len(left)} left alive",
        flush=True,
    )

    # --- recovery -------------------------------------------------------------------------------
    bound = lease + 60
    deadline = killed_at + bound + 60
    while time.time() < deadline:
        harvest(trees[survivor], agent_logs)
        n, active = db(lambda: (Task.objects.count(), Task.objects.filter(status__in=Task.ACTIVE).count()))
        if n >= args.tasks and active == 0:
            break
        time.sleep(0.5)
    harvest(trees[survivor], agent_logs)
    tasks = db(lambda: list(Task.objects.values("pk", "status", "finished_at", "branch", "head_commit")))
    finished = [t["finished_at"].timestamp() for t in tasks if t["finished_at"]]
    recovery = (max(finished) - killed_at) if finished else float("nan")
    statuses = defaultdict(int)
    for t in tasks:
        statuses[t["status"]] += 1
    not_final = sum(1 for t in tasks if t["status"] in Task.ACTIVE) + max(0, args.tasks - len(tasks))
    not_succeeded = sum(1 for t in tasks if t["status"] != Task.Status.SUCCEEDED) + max(0, args.tasks - len(tasks))

    # Clean-up by the survivor's coordinator: wait for its rows (retention + a margin).
    clean_deadline = time.time() + args.retention + 45
    while time.time() < clean_deadline:
        pending = db(lambda: TaskWorktree.objects.filter(host=survivor, removed_at__isnull=True).count())
        if not pending and not any(p for p in trees[survivor].iterdir() if p.is_dir()):
            break
        time.sleep(1.0)
    leaked_rows = db(lambda: TaskWorktree.objects.filter(host=survivor, removed_at__isnull=True).count())
    leaked_dirs = [p.name for p in trees[survivor].iterdir() if p.is_dir()] if trees[survivor].exists() else []
    victim_rows = db(lambda: TaskWorktree.objects.filter(host=victim, removed_at__isnull=True).count())

    # Stale reviews: a reviewing attempt must start at the head the last successful building
    # attempt before it pushed.
    results = db(lambda: list(StageResult.objects.select_related("stage", "worker").order_by("started_at", "pk")))
    last_build: dict[int, str] = {}
    build_host: dict[int, str] = {}
    stale, reviews, unchecked, elsewhere = [], 0, 0, 0
    per_host = defaultdict(int)
    outcomes = defaultdict(int)
    for r in results:
        outcomes[r.outcome] += 1
        if r.worker is not None:
            per_host[r.worker.host] += 1
        if r.stage.name == "building" and r.outcome == StageResult.Outcome.SUCCEEDED and r.head_commit:
            last_build[r.task_id] = r.head_commit
            build_host[r.task_id] = r.worker.host if r.worker else ""
        elif r.stage.name == "reviewing" and r.base_commit:
            reviews += 1
            expected = last_build.get(r.task_id)
            elsewhere += bool(r.worker and build_host.get(r.task_id) not in ("", r.worker.host))
            if expected is None:
                unchecked += 1
            elif r.base_commit != expected:
                stale.append((r.task_id, r.attempt, r.base_commit[:10], expected[:10]))
    pushed_mismatch = []
    for t in tasks:
        if t["status"] == Task.Status.SUCCEEDED and t["branch"]:
            try:
                at_origin = run(["git", "rev-parse", f"refs/heads/{t['branch']}"], cwd=origin).strip()
            except subprocess.CalledProcessError:
                at_origin = ""
            if at_origin != t["head_commit"]:
                pushed_mismatch.append(t["pk"])

    overlaps, runs_seen, pairs_seen = overlapping_runs(agent_logs)
    heads = defaultdict(int)
    for pull in standin.pulls.get(REPO, {}).values():
        heads[pull["head"]["ref"]] += 1
    duplicates = sum(n - 1 for n in heads.values() if n > 1)
    alive = agents_alive(list(trees.values()))
    standin.stop()

    print()
    print(
        f"tasks: {args.tasks}  machines: {', '.join(HOSTS)} ({args.workers} q2 workers each)  killed: {victim} at {killed_at - started:.1f} s"
    )
    print(
        f"  final                  {args.tasks - not_final}/{args.tasks}  ({', '.join(f'{s} {n}' for s, n in statuses.items())})"
    )
    print(f"  last task final        {recovery:.1f} s after the kill (bound: lease {lease} s + 60 s = {bound} s)")
    print(
        f"  attempts               {len(results)}  ({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}; by host: {', '.join(f'{k} {v}' for k, v in sorted(per_host.items()))})"
    )
    print(
        f"  stale-head reviews     {len(stale)}  (of {reviews} reviewing attempts; {elsewhere} on another machine than their building; {unchecked} without a building head before them){'  ' + str(stale) if stale else ''}"
    )
    print(f"  task head != origin    {len(pushed_mismatch)}{'  ' + str(pushed_mismatch) if pushed_mismatch else ''}")
    print(
        f"  duplicate runs         {overlaps}  ({runs_seen} agent runs logged, {pairs_seen} task stages; {3 * args.tasks} expected)"
    )
    print(f"  duplicate PRs          {duplicates}  ({len(heads)} PRs)")
    print(
        f"  leaked worktrees       {len(leaked_dirs) + leaked_rows}  (dirs on {survivor}: {len(leaked_dirs)}, its TaskWorktree rows not removed: {leaked_rows}; {victim}'s rows left: {victim_rows})"
    )
    print(f"  agent processes alive  {alive}")
    ok = (
        killed_running > 0
        and not_succeeded == 0
        and recovery <= bound
        and not stale
        and unchecked == 0
        and not pushed_mismatch
        and overlaps == 0
        and pairs_seen == 3 * args.tasks
        and duplicates == 0
        and not leaked_dirs
        and leaked_rows == 0
        and alive == 0
        and not left
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
