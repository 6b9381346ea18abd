"""Two-machine drill: one of two machines sharing PostgreSQL and Redis dies mid-run.

    .venv/bin/python bench/two_machine_drill.py [--tasks 12] [--kill-after 20] [--lease 10] [--smoke]

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

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from _common import ROOT, Process, django_on, drill_main, processes_inside, run
from chaos_drill import REPO, agent_spans, drill_forge, drill_origin, drill_parser, drill_repository, drill_settings

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
    spans = agent_spans(lines, key=lambda cwd: Path(cwd).name)
    overlaps = 0
    for runs in spans.values():
        ordered = sorted(runs.values())
        for i, (_, end) in enumerate(ordered):
            overlaps += sum(1 for start, _ in ordered[i + 1 :] if start < end)
    return overlaps, sum(len(runs) for runs in spans.values()), len(spans)


def main() -> int:
    parser = drill_parser(__doc__)
    parser.add_argument("--kill-after", type=float, default=20.0, help="seconds after the start, at the earliest")
    parser.add_argument("--workers", type=int, default=3, help="q2 workers per machine")
    parser.add_argument("--retention", type=float, default=15.0, help="worktree retention, seconds")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.kill_after, args.workers, args.lease, args.retention = 2, 3.0, 1, 5, 5.0
    return drill_main(args, "tacx-2m-", lambda base, database_url, pg, processes: drill(args, base, database_url, processes))


def drill(args, base: Path, database_url: str, processes: list[Process]) -> int:
    logs = base / "logs"
    agent_logs: set[str] = set()
    # The machines really have hostnames of their own.
    for host in HOSTS:
        seen = run(in_machine(host, [sys.executable, "-c", "import socket; print(socket.gethostname())"])).strip()
        assert seen == host != socket.gethostname(), (seen, host)
    print(f"hostnames: {', '.join(HOSTS)} (this one: {socket.gethostname()})", flush=True)

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    standin = drill_forge(args.tasks)
    origin = drill_origin(base)
    lease = args.lease
    common = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TACX_")},
        **drill_settings(
            base,
            standin,
            database_url=database_url,
            lease=lease,
            workers=args.workers,
            max_tasks=2 * args.workers,
            retention_hours=str(args.retention / 3600),
        ),
        "REDIS_URL": args.redis_url,
    }
    trees = {host: base / host / "trees" for host in HOSTS}
    envs = {host: {**common, "TACX_VAR_DIR": str(base / host / "var"), "TACX_WORKTREE_ROOT": str(trees[host])} for host in HOSTS}
    for host in HOSTS:
        (base / host).mkdir()
    run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=envs["machine-b"])
    django_on(envs["machine-b"])
    from django.db import close_old_connections

    from pipeline.models import StageResult, Task, TaskWorktree, Worker

    drill_repository(origin, max_concurrent_tasks=2 * args.workers)

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
    alive = processes_inside(list(trees.values()))  # agents still working in a worktree
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
