"""The chaos drill (bench/chaos_drill.py) in a small size: six tasks through the whole stack on
a private PostgreSQL while q2 workers, the whole cluster and the coordinator are killed with
SIGKILL and the database restarts. Every task must end final within lease + 60 s of the last
fault, with no StageResult lost, no overlapping agent runs, no duplicate PR, no orphan."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

PG_BIN = os.environ.get("TACX_DRILL_PG_BIN", "/usr/lib/postgresql/15/bin")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(f"{PG_BIN}/initdb"), reason="PostgreSQL server binaries are not installed"),
    pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("runuser"), reason="runuser is needed to run initdb as postgres"),
]


def test_the_small_drill_passes():
    proc = subprocess.run(
        [sys.executable, "bench/chaos_drill.py", "--tasks", "6", "--faults-for", "25", "--worker-kills", "4", "--coordinator-kills", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    report = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert "PASS" in proc.stdout and "stuck                  0" in proc.stdout, report
