"""Every script under bench/ runs as shipped (with the sandbox on) in its `--smoke` mode, so none
rots: it exits 0 and prints its figures. The figures of a smoke run mean nothing.

Issue 19 (item 6): `bench/trigger_latency.py` could not run with the sandbox on (its agent's
interpreter was hidden, and its marks directory was read-only inside the sandbox).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.bench]


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


POSTGRES = pytest.mark.skipif(not reachable(5432), reason="no PostgreSQL on 127.0.0.1:5432")
REDIS = pytest.mark.skipif(not reachable(6379), reason="no Redis on 127.0.0.1:6379")
CLAUDE = pytest.mark.skipif(not (ROOT / "node_modules" / ".bin" / "claude").exists(), reason="the claude CLI is not installed (npm ci)")
UNSHARE = pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0, reason="the two-machine drill needs unshare --uts (root)")
PG_BIN = os.environ.get("TACX_DRILL_PG_BIN", "/usr/lib/postgresql/15/bin")
INITDB = pytest.mark.skipif(not os.path.exists(f"{PG_BIN}/initdb") or not shutil.which("runuser"), reason="a private PostgreSQL needs initdb and runuser")

# script -> (what its output must show, marks). chaos_drill.py runs in tests/test_chaos_drill.py.
SMOKES = {
    "trigger_latency": (r"webhook +n=1 +p50 [\d.]+ +p95 [\d.]+.*\n +polling +n=1 +p50 [\d.]+", []),
    "comment_latency": (r"p95 [\d.]+", []),
    "live_latency": (r"median over 1 runs: p50 \d+ ms, p95 \d+ ms", []),
    "sandbox_overhead": (r"command +unsandboxed median [\d.]+ s \| sandboxed median [\d.]+ s(.|\n)*claude +unsandboxed", [CLAUDE]),
    "pipeline_overhead": (r"\| claude \| [\d.]+ s \| [\d.]+ s \| [\d.]+ \|", [CLAUDE]),
    "api_latency": (r"/api/tasks/ +[\d.]+ ms +[\d.]+ ms", [POSTGRES]),
    "scale": (r"\| figure \|(.|\n)*\| [^|]+ \| [\d.]+ \|", [POSTGRES, REDIS]),
    "two_machine_drill": (r"\nPASS\n", [INITDB, REDIS, UNSHARE]),
    "candidates": (r"\| 3 \| [\d.]+ s \| \$[\d.]+ \|(.|\n)*wall time 3 vs 1: x[\d.]+", [CLAUDE]),
    "setup_cache": (r"run 1: first setup [\d.]+ s \(miss\), second [\d.]+ s \(hit(.|\n)*second setup / first setup: median [\d.]+ %", []),
}
ELSEWHERE = {"chaos_drill": "tests/test_chaos_drill.py"}


def test_every_bench_script_has_a_smoke_run():
    # bench/_common.py and the like are what the scripts share, not scripts.
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_")}
    assert scripts == set(SMOKES) | set(ELSEWHERE), scripts ^ (set(SMOKES) | set(ELSEWHERE))
    for name in scripts:
        assert "--smoke" in (ROOT / "bench" / f"{name}.py").read_text(), name


@pytest.mark.parametrize("name", [pytest.param(name, marks=marks) for name, (_, marks) in SMOKES.items()])
def test_the_smoke_run_exits_0_and_prints_its_figures(name):
    # As shipped: no TACX_* setting of the caller's (the sandbox is required, nothing extra readable).
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACX_") and k not in ("DATABASE_URL", "REDIS_URL")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(Path("bench") / f"{name}.py"), "--smoke"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    report = f"{name} --smoke: exit {proc.returncode} after {time.monotonic() - started:.1f} s\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, report
    assert re.search(SMOKES[name][0], proc.stdout), report
