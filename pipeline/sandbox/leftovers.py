"""Sandbox server directories whose owner is gone.

Each ``Server`` (pipeline.sandbox) keeps a ``tacx-sandbox-server-*`` directory (session file,
proxy sockets, stderr log) and removes it when it closes. A worker killed with SIGKILL never
closes it: about 80 of them were left after a day of benchmarks. So each directory records its
owner in ``owner.json``: host name, pid, the pid's start time in clock ticks since boot (a reused
pid has another) and the boot id (after a reboot every pid is someone else's). ``reap`` removes
the directories of this host's owners that are gone, never one whose owner lives, nor one of
another host sharing the directory (an NFS /tmp, the two-machine drill's UTS namespaces).

Directories written before owner.json existed are removed only when they are older than an
hour and no process of this host has its working directory inside (the Node server runs in
``<dir>/start`` for as long as it lives).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "tacx-sandbox-server-"
OWNER_FILE = "owner.json"
LEGACY_MIN_AGE = 3600.0


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def owner_write(directory: Path) -> None:
    """Record this process as the owner of `directory` (written before anything else uses it)."""
    pid = os.getpid()
    record = {"host": socket.gethostname(), "pid": pid, "start": start_ticks(pid), "boot": boot_id()}
    (directory / OWNER_FILE).write_text(json.dumps(record), encoding="utf-8")


def owner_alive(record: dict) -> bool:
    if record.get("boot") and record["boot"] != boot_id():
        return False
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True  # unreadable: keep it, never guess
    ticks = start_ticks(pid)
    return ticks is not None and ticks == record.get("start")


def _used_by_a_process(directory: Path) -> bool:
    inside = str(directory.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == inside or cwd.startswith(inside + os.sep):
            return True
    return False


def _gone(directory: Path, host: str) -> bool:
    """True when `directory`'s owner is a dead process of this host."""
    try:
        record = json.loads((directory / OWNER_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        try:
            old = time.time() - directory.stat().st_mtime > LEGACY_MIN_AGE
        except OSError:
            return False
        return old and not _used_by_a_process(directory)
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("host") != host:
        return False
    return not owner_alive(record)


def reap(base: str | Path | None = None) -> list[Path]:
    """Remove the server directories under `base` (default: the temporary directory) whose owner
    is a dead process of this host; the list of those removed."""
    root = Path(base or tempfile.gettempdir())
    host = socket.gethostname()
    removed = []
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return removed
    for directory in candidates:
        try:
            if directory.is_symlink() or not directory.is_dir() or directory.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue  # removed meanwhile (another worker's reaper)
        if _gone(directory, host):
            shutil.rmtree(directory, ignore_errors=True)
            if not directory.exists():
                removed.append(directory)
    if removed:
        log.info("removed %d sandbox server directories of dead processes under %s", len(removed), root)
    return removed
