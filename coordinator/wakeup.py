"""Waking the coordinators of this machine when a webhook delivery is recorded (issue 23).

Without it the coordinator finds a new delivery only at its next tick (up to
TACX_COORDINATOR_TICK_SECONDS, 0.2 s), and a `@tacx` comment waits that long before its round
starts. Each running coordinator binds a Unix datagram socket,
`<TACX_VAR_DIR>/wake/coordinator-<pid>-<n>.sock` while its loop runs, and sleeps in `select` on it instead of a plain
sleep; the web process sends one byte to every such socket once the delivery row is committed.

The database stays the truth: a wake-up carries nothing but "look now". A lost one (another
machine's coordinator, a socket path too long for AF_UNIX, a full socket buffer) costs one tick,
as before. A stale socket of a coordinator that died (connection refused) is removed by the
sender. The folder is the owner's only (0700), so an agent cannot reach it through the sandbox
(it does not see TACX_VAR_DIR) nor, as another user, outside it; a flood of wake-ups could only
make the coordinator run cycles that find nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import socket
import threading
from pathlib import Path

from django.conf import settings

PREFIX = "coordinator-"
SUFFIX = ".sock"
# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_PATH = 107
_numbers = itertools.count(1)


def wake_dir() -> Path:
    return Path(settings.VAR_DIR) / "wake"


class Waiter:
    """The coordinator's sleep: `wait(timeout)` returns early when woken (True) or at the timeout
    (False). Until `open()` binds its socket (or when it cannot), it is a plain Event."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.sock: socket.socket | None = None
        self.path: Path | None = None

    def open(self) -> bool:
        """Bind the socket others wake us through; False if it cannot be (then ticks only)."""
        folder = wake_dir()
        path = folder / f"{PREFIX}{os.getpid()}-{next(_numbers)}{SUFFIX}"
        if len(os.fsencode(path)) > MAX_PATH:
            return False
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by a dead process that had our pid
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            sock.setblocking(False)
        except OSError:
            return False
        self.sock, self.path = sock, path
        return True

    def wait(self, timeout: float) -> bool:
        if self.sock is None:
            return self._event.wait(timeout)
        if self._event.is_set():
            return True
        readable, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not readable:
            return False
        self._drain()
        return True

    def woken(self) -> bool:
        """Without waiting: was a wake-up sent since the last `wait` or `woken`? (Reads them.)"""
        if self.sock is None:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable:
            self._drain()
        return bool(readable)

    def _drain(self) -> None:
        """Read every pending wake-up: many deliveries at once need one cycle, not one each."""
        while True:
            try:
                self.sock.recv(64)
            except OSError:  # BlockingIOError: nothing left
                return

    def set(self) -> None:
        """Wake the waiter from this process (another thread or a signal handler)."""
        self._event.set()
        if self.path is not None:
            _send(self.path)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None


def _send(path: Path) -> bool:
    """One byte to `path`; False (and the file removed) when nobody listens there any more."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.sendto(b"!", str(path))
        except ConnectionRefusedError:
            with contextlib.suppress(OSError):
                path.unlink()
            return False
        except OSError:
            return False  # a full buffer: a wake-up is pending there already
    return True


def wake_coordinators() -> int:
    """Wake every coordinator of this machine; how many were reached. Never raises."""
    try:
        paths = [p for p in wake_dir().iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX)]
    except OSError:
        return 0
    return sum(_send(path) for path in paths)
