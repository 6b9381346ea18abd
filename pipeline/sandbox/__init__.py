"""Agent containment: every agent attempt runs inside a sandbox, on by default.

The sandbox is Anthropic's ``@anthropic-ai/sandbox-runtime`` (npm, the library behind ``srt``):
on Linux it runs the command under bubblewrap with its own PID, mount, user and network
namespaces; the only way out of the network namespace is srt's host-side HTTP/SOCKS proxy
(reached over a Unix socket), which allows the hosts on the attempt's allow-list and refuses
everything else. ``server.mjs`` (next to this file) keeps the library initialised in one Node
process per TAC-X process (``Server``): an attempt asks it to wrap its command (its own
filesystem view and network allow-list, keyed by a random id its proxy connections present),
runs the wrapped command itself, and finds each refused connection as a JSON line in its
attempt directory, which the runner turns into a ``sandbox`` event.

What the agent sees (``policy``):

- everything under ``/`` is hidden except the system directories (``/usr``, ``/etc`` without its
  secrets), the agent CLIs (``AGENT_BIN_DIRS`` and the packages they link to), paths the operator
  adds with ``TACX_SANDBOX_ALLOW_READ``, and:
- its worktree (read-write), and its task's own git directory (``GitAccess``): objects, refs,
  logs, index and HEAD writable, ``config``, ``hooks``, ``info`` and ``objects/info`` read-only,
  and the objects of the repository's mirror that it borrows read-only (no other task's git
  directory, no ref of the mirror or of the user's repository);
- a private, empty HOME per attempt (the CLI's own settings are written there by the provider)
  with the attempt's TMPDIR inside it.

So other tasks' worktrees, TAC-X's own tree, ``var/`` and the database file, other
repositories' mirrors, the real HOME (``~/.ssh``) and every process outside the sandbox
(``/proc/<pid>/environ``) are out of reach; the environment is the scrubbed one of
``providers.base.agent_environment``. When the attempt ends, bubblewrap's PID namespace ends
with it: no process the agent started survives (``setsid`` included).

Modes (``TACX_SANDBOX``): ``required`` (default) never starts an agent unsandboxed: if the
sandbox cannot be set up the attempt fails at once with a permanent error naming what is
missing. ``off`` is an explicit opt-out, reported by ``/health`` and a dashboard banner.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from ..git import STORE_READ_ONLY
from ..providers.base import ProviderError
from . import leftovers

MODES = ("required", "off")
SERVER = Path(__file__).with_name("server.mjs")
VIOLATION_KEYS = ("kind", "host", "port", "reason", "time", "line")  # what a ``sandbox`` event keeps
PACKAGE = "@anthropic-ai/sandbox-runtime"
SYSTEM_READ = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
# Secrets that live under the system directories the agent may read.
SYSTEM_DENY = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/ssh", "/etc/ssl/private", "/etc/sudoers", "/etc/sudoers.d")
# Proxy settings srt puts inside the sandbox that would send loopback traffic past the proxy
# (the sandbox's loopback is its own, so the model server on the host's loopback is reached
# only through the proxy).
UNSET_INSIDE = ("NO_PROXY", "no_proxy")


class SandboxUnavailable(ProviderError):
    """The sandbox cannot be set up on this machine: a permanent failure of the attempt."""

    def __init__(self, message: str):
        super().__init__(message, permanent=True)


def mode() -> str:
    return settings.TACX.get("SANDBOX", "required")


def enabled() -> bool:
    return mode() != "off"


# -- what the sandbox needs on this machine --------------------------------------------------------


def _tool(setting: str, name: str) -> str | None:
    configured = settings.TACX.get(setting) or ""
    if configured:
        return configured if os.path.isfile(configured) and os.access(configured, os.X_OK) else None
    return shutil.which(name)


def package_dir() -> Path | None:
    for bin_dir in settings.TACX.get("AGENT_BIN_DIRS", []):
        candidate = Path(bin_dir).parent / PACKAGE
        if (candidate / "package.json").is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Tools:
    node: str
    bwrap: str
    socat: str
    ripgrep: str
    package: Path


_probe_lock = threading.Lock()
_probed: dict[tuple, str] = {}


def tools() -> Tools:
    """The programs the sandbox needs, or SandboxUnavailable naming each one that is missing."""
    found = {
        "node": _tool("SANDBOX_NODE", "node"),
        "bwrap": _tool("SANDBOX_BWRAP", "bwrap"),
        "socat": _tool("SANDBOX_SOCAT", "socat"),
        "ripgrep": _tool("SANDBOX_RIPGREP", "rg"),
    }
    package = package_dir()
    labels = {
        "node": "node (Node.js 20+)",
        "bwrap": "bwrap (Debian package bubblewrap)",
        "socat": "socat (Debian package socat)",
        "ripgrep": "rg (Debian package ripgrep)",
    }
    missing = [labels[name] for name, path in found.items() if not path]
    if package is None:
        missing.append(f"the npm package {PACKAGE} (run `make install`)")
    if missing:
        raise SandboxUnavailable(
            "the agent sandbox cannot be set up: missing " + ", ".join(missing) + " (install them with `make install`, or set TACX_SANDBOX=off to run agents unsandboxed)"
        )
    result = Tools(node=found["node"], bwrap=found["bwrap"], socat=found["socat"], ripgrep=found["ripgrep"], package=package)
    _probe(result)
    return result


def _probe(t: Tools) -> None:
    """bubblewrap must be able to create namespaces here (once per process and tool set)."""
    key = (t.bwrap,)
    with _probe_lock:
        if _probed.get(key) == "ok":
            return
    try:
        proc = subprocess.run(
            [t.bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--dev-bind", "/", "/", "true"],
            capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
        )
        problem = "" if proc.returncode == 0 else (proc.stderr.strip() or f"exit code {proc.returncode}")
    except (OSError, subprocess.SubprocessError) as exc:
        problem = str(exc)
    if problem:
        raise SandboxUnavailable(f"the agent sandbox cannot be set up: bubblewrap ({t.bwrap}) cannot create namespaces here: {problem[-300:]}")
    with _probe_lock:
        _probed[key] = "ok"


def status() -> dict:
    """For /health and the dashboard: the mode and, when required, whether it can be set up."""
    if not enabled():
        return {"mode": "off", "ok": True, "detail": "agents run unsandboxed (TACX_SANDBOX=off)"}
    try:
        tools()
    except SandboxUnavailable as exc:
        return {"mode": "required", "ok": False, "detail": exc.message}
    return {"mode": "required", "ok": True, "detail": "agents run in bubblewrap with a filtering proxy"}


# -- the policy of one attempt -----------------------------------------------------------------------


def host_entry(url_or_host: str) -> str | None:
    """``host:port`` for a URL (default port by scheme), or the entry unchanged for a host."""
    text = url_or_host.strip()
    if not text:
        return None
    if "://" in text:
        parts = urlsplit(text)
        if not parts.hostname:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{host}:{port}"
    return text


@dataclass
class GitAccess:
    """The task's own git directory (its "task store") and the object directories it borrows.

    The agent writes its store's objects, refs, logs, index and HEAD (a commit needs them), and
    nothing of the store that TAC-X's git would take as configuration (``STORE_READ_ONLY``:
    config, hooks, info, objects/info with the alternates). The borrowed objects (the
    repository's mirror) are readable only; no other task's store, and no ref of the mirror or
    of the user's repository, is in its view."""

    store: Path
    borrowed: tuple[Path, ...] = ()

    @property
    def common(self) -> Path:
        return self.store

    @property
    def admin(self) -> Path:
        return self.store

    def read(self) -> list[Path]:
        return [p for p in self.borrowed if p.is_dir()]

    def write(self) -> list[Path]:
        return [self.store]

    def read_only(self) -> list[Path]:
        return [self.store / name for name in STORE_READ_ONLY]


def _read_around(root: Path, writes: list[Path], skip: set[Path]) -> list[Path]:
    if root in skip or any(root == w or w in root.parents for w in writes):
        return []  # written (bound read-write) or hidden
    if not any(root in w.parents for w in writes):
        return [root]
    found: list[Path] = []
    for child in sorted(root.iterdir()):
        if child.is_symlink():
            continue
        found += _read_around(child.resolve(), writes, skip)
    return found


def _around_writes(read: list[str], write: list[str]) -> list[str]:
    """The read paths, with any that contains a write path (e.g. a TACX_SANDBOX_ALLOW_READ entry
    holding the worktree root) replaced by what lies around the write paths: srt binds read
    paths after write paths, so a read-only ancestor would make the worktree read-only."""
    writes = [Path(w).resolve() for w in write]
    out: list[str] = []
    for entry in read:
        path = Path(entry).resolve()
        if any(path in w.parents for w in writes):
            out += [str(p) for p in _read_around(path, writes, set())]
        elif not any(path == w or w in path.parents for w in writes):
            out.append(entry)
    return list(dict.fromkeys(out))


@dataclass
class Box:
    """One attempt's sandbox: the wrapped argv, the environment, and where refusals are written."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    home: Path
    root: Path
    violations: Path
    allowed_hosts: list[str]
    key: str = ""
    _offset: int = 0
    _partial: bytes = b""
    blocked: list[dict] = field(default_factory=list)

    def new_violations(self) -> list[dict]:
        """Refusals recorded since the last call (complete lines only), each reduced to the
        keys a ``sandbox`` event keeps."""
        try:
            with open(self.violations, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        found = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                found.append({k: entry[k] for k in VIOLATION_KEYS if k in entry})
        self.blocked.extend(found)
        return found

    def finish(self) -> None:
        """The attempt is over: the server forgets its key (its allow-list too) and writes out the
        refusals it saw (``new_violations`` reads them)."""
        if self.key:
            try:
                server().request({"op": "done", "key": self.key}, timeout=10)
            except SandboxUnavailable:
                pass
            self.key = ""

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


def _existing(paths: Iterable[str | Path]) -> list[str]:
    out = []
    for p in paths:
        if p and os.path.exists(p):
            real = os.path.realpath(p)
            for q in (str(p), real):
                if q not in out:
                    out.append(q)
    return out


def agent_read_paths() -> list[str]:
    """Where the agent CLIs live: each AGENT_BIN_DIRS entry and the node_modules it belongs to."""
    paths: list[str] = []
    for bin_dir in settings.TACX.get("AGENT_BIN_DIRS", []):
        bin_dir = Path(bin_dir)
        paths.append(str(bin_dir))
        if bin_dir.name == ".bin" and bin_dir.parent.name == "node_modules":
            paths.append(str(bin_dir.parent))
    extra = settings.TACX.get("SANDBOX_ALLOW_READ", [])
    return _existing([*paths, *extra])


def prepare(
    *,
    argv: list[str],
    env: Mapping[str, str],
    worktree: Path,
    git_access: GitAccess | None,
    allow_hosts: Iterable[str],
    home: Path,
    root: Path,
    extra_read: Iterable[str | Path] = (),
    extra_write: Iterable[str | Path] = (),
) -> Box:
    """The attempt's view of the machine, handed to the sandbox server, and the wrapped command."""
    ctl = root / "ctl"  # outside the agent's view: the refusal log
    ctl.mkdir(parents=True, exist_ok=True)
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    hosts: list[str] = []
    for h in allow_hosts:
        entry = host_entry(h)
        if entry and entry not in hosts:
            hosts.append(entry)
    read = [*SYSTEM_READ, *agent_read_paths(), *_existing(extra_read), str(worktree), str(home)]
    write = [str(worktree), str(home), *_existing(extra_write)]
    read += _existing(extra_write)
    # The worktree's .git file says where its git directory is: the agent must not re-point it.
    deny_write: list[str] = [str(worktree / ".git")]
    if git_access is not None:
        read += [str(p) for p in git_access.read()]
        write += [str(p) for p in git_access.write()]
        deny_write += [str(p) for p in git_access.read_only()]
    srv = server()
    read.append(str(srv.run_dir))
    filesystem = {
        "denyRead": ["/", *SYSTEM_DENY],
        "allowRead": _around_writes(_existing(read), _existing(write)),
        "allowWrite": _existing(write),
        "denyWrite": _existing(deny_write),
    }
    violations = ctl / "blocked.jsonl"
    violations.touch()
    inner_env = dict(env)
    inner_env["HOME"] = str(home)
    inner_env["TMPDIR"] = str(tmp)
    # srt sets TMPDIR=/tmp/claude inside, so it is set again for the agent, which starts in its
    # worktree (the wrapper runs from there too, so the reaper recognises the process group).
    inner = ["env", f"--chdir={worktree}", *[a for name in UNSET_INSIDE for a in ("-u", name)], f"TMPDIR={tmp}", *argv]
    answer = srv.request({"op": "wrap", "argv": inner, "filesystem": filesystem, "allow": hosts, "violations": str(violations)})
    return Box(
        argv=["/bin/bash", "-c", answer["command"]],
        env=inner_env,
        cwd=worktree,
        home=home,
        root=root,
        violations=violations,
        allowed_hosts=hosts,
        key=answer["key"],
    )


def new_root() -> Path:
    """A fresh private directory for one attempt (HOME, TMPDIR, the sandbox's settings)."""
    base = settings.TACX.get("SANDBOX_TMP") or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="tacx-attempt-", dir=base))
    os.chmod(root, 0o700)
    return root


def summarize(blocked: Iterable[Mapping]) -> list[tuple[str, int]]:
    """``[("evil.example:443", 2), …]``: refused destinations with counts, most first."""
    counts: dict[str, int] = {}
    for b in blocked:
        host, port = b.get("host"), b.get("port")
        key = f"{host}:{port}" if host else str(b.get("line") or "?")[:200]
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def blocked_for_task(task) -> list[tuple[str, int]]:
    """Refused destinations of all the task's attempts, with counts (``summarize``)."""
    from ..models import AgentEvent

    return summarize(AgentEvent.objects.filter(task=task, kind=AgentEvent.Kind.SANDBOX).values_list("data", flat=True))


def modes_for_task(task) -> set[str]:
    """The sandbox modes the task's agent attempts ran in ("required", "off")."""
    from ..models import AgentEvent

    events = AgentEvent.objects.filter(task=task, kind=AgentEvent.Kind.SYSTEM, data__subtype="sandbox").values_list("data", flat=True)
    return {e.get("mode", "") for e in events if isinstance(e, dict)}
