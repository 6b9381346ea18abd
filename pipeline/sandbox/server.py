"""The long-lived Node process (``server.mjs``) that keeps the sandbox runtime initialised, one per
TAC-X process, and this process's client of it."""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from django.conf import settings

from . import leftovers
from .policy import SandboxUnavailable
from .tools import Tools, tools

SERVER = Path(__file__).with_name("server.mjs")


class Server:
    """The Node process (``server.mjs``) that keeps the sandbox runtime initialised."""

    def __init__(self, t: Tools):
        self.tools = t
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.seq = 0
        base = settings.TACX.get("SANDBOX_TMP") or None
        if base:
            Path(base).mkdir(parents=True, exist_ok=True)
        leftovers.reap(base)  # directories of servers whose worker was killed (SIGKILL)
        self.dir = Path(tempfile.mkdtemp(prefix=leftovers.PREFIX, dir=base))
        os.chmod(self.dir, 0o700)
        leftovers.owner_write(self.dir)
        self.start_dir = self.dir / "start"  # empty: srt guards the dotfiles of its cwd
        self.run_dir = self.dir / "run"  # the proxies' Unix sockets
        self.start_dir.mkdir()
        self.run_dir.mkdir()
        session = {
            "network": {"allowedDomains": [], "deniedDomains": []},
            "filesystem": {"denyRead": ["/"], "allowRead": [], "allowWrite": [], "denyWrite": []},
            "bwrapPath": t.bwrap,
            "socatPath": t.socat,
            "ripgrep": {"command": t.ripgrep},
        }
        (self.dir / "session.json").write_text(json.dumps(session), encoding="utf-8")
        self.stderr = open(self.dir / "stderr.log", "w+b")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [t.node, str(SERVER), str(t.package / "dist" / "index.js"), str(self.dir / "session.json")],
            cwd=self.start_dir,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.start_dir), "TMPDIR": str(self.run_dir)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            bufsize=1,
        )
        ready = self._read(timeout=60)
        if not ready.get("ready"):
            self.close()
            raise SandboxUnavailable(f"the agent sandbox cannot be set up: {ready.get('error') or self._stderr_tail() or 'the sandbox server did not start'}")

    def _stderr_tail(self) -> str:
        try:
            self.stderr.seek(0)
            return self.stderr.read()[-500:].decode("utf-8", errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def _read(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            return {"ok": False, "error": "the sandbox server did not answer" + (f": {self._stderr_tail()}" if self._stderr_tail() else "")}
        try:
            return json.loads(line)
        except ValueError:
            return {"ok": False, "error": f"the sandbox server answered {line[:200]!r}"}

    def alive(self) -> bool:
        return self.proc.poll() is None and self.pid == os.getpid()

    def request(self, payload: dict, timeout: float = 60) -> dict:
        with self.lock:
            if self.proc.poll() is not None:
                raise SandboxUnavailable(f"the sandbox server exited: {self._stderr_tail()}")
            self.seq += 1
            payload = {**payload, "id": self.seq}
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps(payload) + "\n")
                self.proc.stdin.flush()
            except OSError as exc:
                raise SandboxUnavailable(f"the sandbox server is gone: {exc}") from None
            while True:
                answer = self._read(timeout)
                if answer.get("id") in (None, self.seq):
                    break
        if not answer.get("ok"):
            raise SandboxUnavailable(f"the agent sandbox could not wrap the command: {answer.get('error')}")
        return answer

    def close(self) -> None:
        if self.pid != os.getpid():
            return  # a forked child's copy: the server belongs to the process that started it
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_server: Server | None = None


_server_lock = threading.Lock()


def server() -> Server:
    """This process's sandbox server, started (or restarted) when needed."""
    global _server
    t = tools()
    with _server_lock:
        if _server is not None and (not _server.alive() or _server.tools != t):
            if _server.pid == os.getpid():
                _server.close()
            _server = None
        if _server is None:
            _server = Server(t)
            atexit.register(_server.close)
        return _server
