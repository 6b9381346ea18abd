"""Sandbox cost per agent attempt: the same attempt sandboxed and unsandboxed, in one run.

    .venv/bin/python bench/sandbox_overhead.py [--runs 7]

Two workloads, each run alternately with and without TAC-X's sandbox (so drift hits both):

* ``command`` — a trivial agent (``/bin/true``): the fixed cost per attempt of wrapping the
  command in the (already running) sandbox server and starting and ending bubblewrap;
* ``claude`` — one real planning attempt of the `claude` CLI against the scripted model server
  (Write tool → plan.md), as the runner starts it (argv, scrubbed environment, private HOME).

Reported per workload: median wall time of each side, the added seconds (median of the paired
differences) and the ratio of medians; and the extra memory: peak RSS of the whole process tree
(sampled every 20 ms from /proc) sandboxed minus unsandboxed, median over runs, and the RSS of
the sandbox server itself (one per TAC-X worker process, started by the warm-up attempt). Target:
≤ 0.3 s added per attempt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")

PLAN_SCRIPT = {
    "conversations": [
        {
            "name": "planning",
            "match": "TACX-STAGE: planning",
            "turns": [
                {"text": "Writing the plan.", "tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n\n1. Do it.\n"}}], "usage": {"input_tokens": 100, "output_tokens": 10}},
                {"text": "Done.", "usage": {"input_tokens": 120, "output_tokens": 5}},
            ],
        }
    ]
}


def tree_rss_kb(root_pid: int) -> int:
    """Sum of VmRSS of `root_pid` and all its descendants (kB)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, ppid = int(entry), int(fields.get("PPid", "0").strip() or 0)
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(argv: list[str], env: dict, cwd: Path) -> tuple[float, int]:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_kb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"{argv[:3]}… exited with {code}")
    return elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): smallest sizes, one run")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 1

    tmp = Path(tempfile.mkdtemp(prefix="tacx-bench-sandbox-"))
    os.environ["TACX_VAR_DIR"] = str(tmp / "var")
    import django

    django.setup()
    from harness.cli_runs import DUMMY_API_KEY
    from harness.modelserver import ScriptedModelServer
    from pipeline import git, sandbox
    from pipeline.providers import get_provider
    from pipeline.providers.base import Invocation, agent_environment

    repo = tmp / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("# bench\n")
    git.run(["add", "-A"], cwd=repo)
    git.run(["commit", "-q", "-m", "init"], cwd=repo)

    server = ScriptedModelServer(PLAN_SCRIPT).start()
    os.environ["ANTHROPIC_BASE_URL"] = server.url
    os.environ["ANTHROPIC_API_KEY"] = DUMMY_API_KEY

    def attempt(kind: str, sandboxed: bool, n: int) -> tuple[float, int]:
        tree = tmp / f"tree-{kind}-{int(sandboxed)}-{n}"
        git.worktree_add(repo, tree, f"bench/{kind}-{int(sandboxed)}-{n}", "main")
        if kind == "claude":
            provider = get_provider("claude")
            inv = Invocation(prompt="TACX-STAGE: planning\n\nWrite plan.md.", cwd=str(tree), model="claude-sonnet-4-5", sandboxed=sandboxed)
            argv = provider.build_command(inv)
            env = {**agent_environment(provider, inv), **git.identity_env()}
        else:
            provider, inv = get_provider("claude"), Invocation(prompt="", cwd=str(tree))
            argv, env = ["/bin/true"], {"PATH": os.environ["PATH"]}
        root = sandbox.new_root()
        home = root / "home"
        (home / "tmp").mkdir(parents=True)
        env.update(HOME=str(home), TMPDIR=str(home / "tmp"))
        provider.prepare_home(str(home), inv, env)
        cwd = tree
        if sandboxed:
            pinned = git.pinned_dirs(tree)
            access = sandbox.GitAccess(store=Path(pinned["GIT_DIR"]), borrowed=(git.borrowed_objects(tree),))
            box = sandbox.prepare(argv=argv, env=env, worktree=tree, git_access=access, allow_hosts=[server.url], home=home, root=root)
            argv, env, cwd = box.argv, box.env, box.cwd
        try:
            return measure(argv, env, cwd)
        finally:
            root_dir = root
            subprocess.run(["rm", "-rf", str(root_dir)], check=False)

    try:
        for kind in ("command", "claude"):
            attempt(kind, True, -1)  # warm caches (the CLI's and srt's first start)
            attempt(kind, False, -1)
            off, on, mem_off, mem_on, deltas = [], [], [], [], []
            for n in range(args.runs):
                t_off, m_off = attempt(kind, False, n)
                t_on, m_on = attempt(kind, True, n)
                off.append(t_off)
                on.append(t_on)
                mem_off.append(m_off)
                mem_on.append(m_on)
                deltas.append(t_on - t_off)
            print(
                f"{kind:8s} unsandboxed median {statistics.median(off):.3f} s | sandboxed median {statistics.median(on):.3f} s | "
                f"added {statistics.median(deltas):+.3f} s (median of {args.runs} paired runs) | ratio {statistics.median(on) / statistics.median(off):.2f} | "
                f"extra peak RSS {(statistics.median(mem_on) - statistics.median(mem_off)) / 1024:.0f} MB"
            )
        srv = sandbox.server()
        print(f"sandbox server (one per TAC-X worker process, shared by its attempts): RSS {tree_rss_kb(srv.proc.pid) / 1024:.0f} MB")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
