"""What an attempt's sandbox lets the agent see and reach: the modes, the system paths it
reads and the secrets it never does, the repository's git directory as far as commits need it,
the agent CLIs, and the hosts of the network allow-list."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from ..git import STORE_READ_ONLY
from ..providers.base import ProviderError

MODES = ("required", "off")


VIOLATION_KEYS = ("kind", "host", "port", "reason", "time", "line")  # what a ``sandbox`` event keeps


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
    return _existing([*paths, *extra, *link_targets(extra)])


_LINK_SCAN_LIMIT = 20_000


def _link_chain(link: Path) -> list[Path]:
    """Every hop of the symlink chain from `link` (each link's own location and the final
    target), and the installation prefix of each hop in a ``bin`` directory (an interpreter
    needs its ``lib`` next to its ``bin``)."""
    hops: list[Path] = []
    current = link
    for _ in range(40):
        if not current.is_symlink():
            break
        target = Path(os.path.normpath(current.parent / os.readlink(current)))
        hops.append(target)
        current = target
    hops.append(Path(os.path.realpath(link)))
    out: list[Path] = []
    for hop in hops:
        out.append(hop)
        if hop.parent.name == "bin":
            out.append(hop.parent.parent)
    return out


def link_targets(entries: Iterable[str | Path]) -> list[str]:
    """What the symlinks inside allowed read paths lead to, so allowing a path brings its links'
    targets with it: a venv allowed means its interpreter (and that interpreter's prefix, with
    its standard library) is reachable, wherever it lives. Up to 20,000 entries are looked at per
    path; links are never followed into directories while looking."""
    found: list[str] = []
    for entry in entries:
        root = Path(entry)
        if not root.is_dir() or root.is_symlink():
            continue
        seen = 0
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                seen += 1
                p = Path(dirpath) / name
                if p.is_symlink():
                    for hop in _link_chain(p):
                        if os.path.exists(hop) and not (hop == root or root in hop.parents):
                            found.append(str(hop))
            if seen > _LINK_SCAN_LIMIT:
                break
    return list(dict.fromkeys(found))
