"""Sandbox server directories of dead workers are removed; a live server's never is.

Issue 19 (item 6): a worker killed with SIGKILL left its `tacx-sandbox-server-*` directory
behind (about 80 after a day of benchmarks). Real sandbox servers, started in subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from coordinator.reaping import OrphanKiller
from pipeline.sandbox import leftovers

ROOT = Path(__file__).resolve().parent.parent
START_SERVER = (
    "import os, sys, time, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tacx_site.settings'); django.setup()\n"
    "from pipeline import sandbox\n"
    "print(sandbox.server().dir, flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def short_tmp():
    """The servers' proxy sockets live inside their directory: Unix socket paths must stay short."""
    path = Path(tempfile.mkdtemp(prefix="tx-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_worker(tmp: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "TACX_SANDBOX_TMP": str(tmp), "TACX_SANDBOX": "required"}
    proc = subprocess.Popen([sys.executable, "-c", START_SERVER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, "the sandbox server did not start"
    return proc, Path(line)


def node_in(directory: Path) -> list[int]:
    """Pids whose working directory is inside `directory` (the Node server runs in start/)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd").startswith(str(directory)):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_a_sigkilled_workers_directory_is_removed_and_a_live_servers_stays(short_tmp, settings):
    tmp_path = short_tmp
    dead, dead_dir = start_worker(tmp_path)
    live, live_dir = start_worker(tmp_path)
    try:
        record = json.loads((dead_dir / "owner.json").read_text())
        assert record["pid"] == dead.pid and record["host"] == socket.gethostname() and record["start"]
        dead.send_signal(signal.SIGKILL)
        dead.wait(10)
        deadline = time.monotonic() + 10  # its Node server exits when its stdin closes
        while node_in(dead_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dead_dir.is_dir() and (dead_dir / "session.json").exists()  # what SIGKILL leaves

        # Another host's directory (a shared /tmp) and a reused pid: one kept, one removed.
        other_host = tmp_path / f"{leftovers.PREFIX}other"
        other_host.mkdir()
        (other_host / "owner.json").write_text(json.dumps({**record, "host": "elsewhere"}))
        reused = tmp_path / f"{leftovers.PREFIX}reused"
        reused.mkdir()
        (reused / "owner.json").write_text(json.dumps({**record, "pid": live.pid, "start": leftovers.start_ticks(live.pid) - 1}))

        settings.TACX = {**settings.TACX, "SANDBOX_TMP": str(tmp_path)}
        removed = OrphanKiller(host=socket.gethostname()).reap_sandbox_dirs(force=True)
        assert sorted(removed) == sorted([dead_dir, reused])
        assert not dead_dir.exists() and not reused.exists()
        assert live_dir.is_dir() and node_in(live_dir) and other_host.is_dir()
        assert live.poll() is None
    finally:
        for proc in (dead, live):
            proc.kill()
            proc.wait(10)


def test_an_old_directory_without_an_owner_file_goes_only_when_no_process_works_in_it(tmp_path):
    old = tmp_path / f"{leftovers.PREFIX}legacy"
    (old / "start").mkdir(parents=True)
    young = tmp_path / f"{leftovers.PREFIX}young"
    young.mkdir()
    busy = tmp_path / f"{leftovers.PREFIX}busy"
    (busy / "start").mkdir(parents=True)
    an_hour_ago = time.time() - leftovers.LEGACY_MIN_AGE - 60
    for directory in (old, busy):
        os.utime(directory, (an_hour_ago, an_hour_ago))
    sleeper = subprocess.Popen(["sleep", "60"], cwd=busy / "start")
    try:
        assert leftovers.reap(tmp_path) == [old]
        assert young.is_dir() and busy.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
