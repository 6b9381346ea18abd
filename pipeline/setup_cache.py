"""The setup cache: what package managers download and build, kept per repository from one
task's `setup` hook to the next, so the second setup does not fetch and build it all again.

Layout: ``VAR_DIR/setupcache/<repository id>/<key>/`` with ``pip/``, ``npm/`` and ``uv/`` (the
hook gets ``PIP_CACHE_DIR``, ``npm_config_cache`` and ``UV_CACHE_DIR`` pointing there unless its
own ``env:`` sets them) and ``home/<path>`` for each path the workflow names under
``hooks.setup.cache`` (relative to the hook's HOME; TAC-X links ``$HOME/<path>`` to it). The key
is ``default``, or, with ``hooks.setup.cache_key: [files]``, a hash of those files' contents as
the worktree holds them before setup runs (read through the hand-back gate).

Who may write it: the `setup` hook's sandbox only, and only while the worktree is the base
branch's code (a setup that runs on a branch with an agent's commits, e.g. on a second machine,
gets no cache: code an agent wrote must not leave anything for later tasks). The agent, the other
hooks and the test command never see it. A setup holds a shared lock on its key while it runs;
pruning and clearing take the key's lock exclusively, so a key in use is never removed.

Pruning (after every setup of the repository): keys not used for ``SETUP_CACHE_MAX_AGE_DAYS``
go, then the least recently used ones until the repository's keys fit in
``SETUP_CACHE_MAX_BYTES`` (sizes as measured when each key's last setup ended).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from . import worktree_reads
from .beneath import Refused
from .workflow import HookConfig

log = logging.getLogger(__name__)

# Where each tool's cache goes, by the variable that tells the tool.
TOOL_DIRS = {"PIP_CACHE_DIR": "pip", "npm_config_cache": "npm", "UV_CACHE_DIR": "uv"}
MARKER = ".tacx-cache"  # written when a setup that used the key ends: its size; its mtime is the last use
KEY_FILE_MAX_BYTES = 32 * 1024 * 1024  # a lockfile can be big; still not a whole vendored tree
KEY_TOTAL_MAX_BYTES = 128 * 1024 * 1024
SIZE_SCAN_MAX_ENTRIES = 2_000_000


def root(repository_id: int) -> Path:
    return Path(settings.VAR_DIR) / "setupcache" / str(int(repository_id))


def enabled() -> bool:
    return int(settings.TACX.get("SETUP_CACHE_MAX_BYTES", 0) or 0) > 0


@dataclass(frozen=True)
class Key:
    """Which cache a setup uses: ``default``, or ``k`` + 16 hex digits of the `cache_key` files'
    hash; ``problem`` says why there is none (a key file the gate refused)."""

    name: str
    files: tuple[str, ...] = ()
    problem: str = ""


def key_for(hook: HookConfig, worktree: Path) -> Key:
    """The key of `hook`'s cache from the worktree's `cache_key` files (a missing file counts as
    missing, so adding it changes the key). Read through the hand-back gate: no symlink followed,
    regular files only, sizes capped."""
    if not hook.cache_key:
        return Key("default")
    reader = worktree_reads.Reader(worktree, file_max=KEY_FILE_MAX_BYTES, total_max=KEY_TOTAL_MAX_BYTES)
    digest = hashlib.sha256()
    for rel in hook.cache_key:
        try:
            data = reader.read_bytes(rel)
        except Refused as exc:
            return Key("", hook.cache_key, f"cache_key file {exc}")
        digest.update(rel.encode() + b"\0" + (hashlib.sha256(data).digest() if data is not None else b"(missing)") + b"\n")
    return Key("k" + digest.hexdigest()[:16], hook.cache_key)


@dataclass
class Mount:
    """One setup's use of its key: the directory to mount writable, the tools' variables, the
    HOME links, and the shared lock held until `finish`."""

    repository_id: int
    key: Key
    dir: Path
    hit: bool
    env: dict[str, str]
    links: dict[str, Path] = field(default_factory=dict)  # HOME-relative path -> directory in the cache
    lock_fd: int | None = None

    def link_into(self, home: Path) -> None:
        """``$HOME/<path>`` -> the cache's ``home/<path>`` for each path the workflow names. HOME
        is the hook's fresh private directory: nothing else has written there yet."""
        for rel, target in self.links.items():
            link = home / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists() and not link.is_symlink():
                link.symlink_to(target, target_is_directory=True)


def mount(*, repository_id: int, key: Key, hook: HookConfig, hook_env: dict[str, str]) -> Mount:
    """Take the shared lock on `key` and make its directory (and the named paths in it) ready."""
    base = root(repository_id)
    base.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(base, key.name, exclusive=False, wait=True)
    try:
        path = base / key.name
        hit = _is_marker(path)
        _makedirs_nofollow(base, key.name)
        env = {var: str(path / sub) for var, sub in TOOL_DIRS.items() if var not in hook_env and _makedirs_nofollow(path, sub)}
        links = {}
        for rel in hook.cache_paths:
            if _makedirs_nofollow(path, f"home/{rel}"):
                links[rel] = path / "home" / rel
    except BaseException:
        os.close(lock_fd)
        raise
    return Mount(repository_id=repository_id, key=key, dir=path, hit=hit, env=env, links=links, lock_fd=lock_fd)


def finish(m: Mount) -> int:
    """The setup that used `m` ended: record its size and the time of use, release the lock,
    and prune the repository's other keys. Returns the key's size in bytes."""
    try:
        size = _size(m.dir)
        _write_marker(m.dir, {"bytes": size, "used": time.time()})
    finally:
        if m.lock_fd is not None:
            os.close(m.lock_fd)
            m.lock_fd = None
    try:
        prune(m.repository_id, keep=m.key.name)
    except OSError:
        log.exception("setup cache of repository %s: pruning failed", m.repository_id)
    return size


def summary(m: Mount | None, *, size: int | None = None, off: str = "") -> dict:
    """What the hook's event says about the cache (key, hit or miss, size) or why it was off."""
    if m is None:
        return {"state": "off", "reason": off}
    data = {"state": "hit" if m.hit else "miss", "key": m.key.name, "files": list(m.key.files)}
    if size is not None:
        data["bytes"] = size
    if m.links:
        data["paths"] = list(m.links)
    return data


@dataclass(frozen=True)
class KeyInfo:
    name: str
    bytes: int
    used: float


def keys(repository_id: int) -> list[KeyInfo]:
    """The repository's keys, least recently used first."""
    base = root(repository_id)
    found = []
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
            continue
        info = _read_marker(Path(entry.path))
        used = info.get("used") if isinstance(info.get("used"), (int, float)) else entry.stat(follow_symlinks=False).st_mtime
        size = info.get("bytes") if isinstance(info.get("bytes"), int) else 0
        found.append(KeyInfo(entry.name, size, float(used)))
    return sorted(found, key=lambda k: k.used)


def prune(repository_id: int, *, keep: str = "", now: float | None = None) -> list[str]:
    """Remove the repository's keys unused for SETUP_CACHE_MAX_AGE_DAYS, then the least
    recently used until the rest fits in SETUP_CACHE_MAX_BYTES. Never `keep` nor a key in use.
    Returns the keys removed."""
    now = time.time() if now is None else now
    max_age = float(settings.TACX.get("SETUP_CACHE_MAX_AGE_DAYS", 14.0)) * 86400
    max_bytes = int(settings.TACX.get("SETUP_CACHE_MAX_BYTES", 0) or 0)
    found = keys(repository_id)
    total = sum(k.bytes for k in found)
    removed = []
    for info in found:  # least recently used first
        if info.name == keep:
            continue
        if now - info.used > max_age or total > max_bytes:
            if _remove_key(root(repository_id), info.name):
                removed.append(info.name)
                total -= info.bytes
    return removed


def clear(repository_id: int) -> tuple[int, list[str]]:
    """Remove every key of the repository that no setup is using. Returns (bytes freed, keys
    left because a setup is using them)."""
    freed, busy = 0, []
    for info in keys(repository_id):
        if _remove_key(root(repository_id), info.name):
            freed += info.bytes
        else:
            busy.append(info.name)
    return freed, busy


# --- the filesystem, written by sandboxed setups: no symlink followed ------------------------------


def _lock(base: Path, name: str, *, exclusive: bool, wait: bool) -> int:
    """A lock on key `name` (a file beside the keys, outside every sandbox). Raises
    BlockingIOError when not `wait`ing and someone holds it."""
    fd = os.open(base / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_key(base: Path, name: str) -> bool:
    """Remove one key unless a setup holds it: moved aside first (a new setup of that key starts
    empty at once), then deleted."""
    try:
        fd = _lock(base, name, exclusive=True, wait=False)
    except BlockingIOError:
        return False
    except FileNotFoundError:
        return False
    try:
        aside = base / f".removing-{name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(base / name, aside)
        except FileNotFoundError:
            return True
        _rmtree(aside)
        # The lock file stays (empty): a setup waiting on it must lock the file the next one
        # will lock too.
        return True
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    """shutil.rmtree (never follows a symlink), making directories a setup left unwritable
    writable again on the way."""

    def fix(func, p, exc):  # noqa: ANN001 (shutil's signature)
        parent = os.path.dirname(p)
        if isinstance(exc, PermissionError) and not os.path.islink(parent):
            os.chmod(parent, stat.S_IRWXU)
            func(p)
        elif not isinstance(exc, FileNotFoundError):
            raise exc

    shutil.rmtree(path, onerror=lambda func, p, info: fix(func, p, info[1]))


def _makedirs_nofollow(base: Path, rel: str) -> bool:
    """Create `base/rel` one component at a time, never through a symlink (a setup may have left
    one anywhere under its key). False when a component is not a real directory."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in [p for p in rel.split("/") if p]:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    return False
                raise
            os.close(fd)
            fd = nxt
        return True
    finally:
        os.close(fd)


def _is_marker(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path / MARKER).st_mode)
    except OSError:
        return False


def _read_marker(path: Path) -> dict:
    try:
        fd = os.open(path / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        data = json.loads(os.read(fd, 4096) or b"{}")
        return data if isinstance(data, dict) else {}
    except ValueError:
        return {}
    finally:
        os.close(fd)


def _write_marker(path: Path, data: dict) -> None:
    """Replace the marker atomically (a symlink or anything a setup put there goes)."""
    tmp = path / f"{MARKER}.{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(data).encode())
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path / MARKER)
    except IsADirectoryError:
        _rmtree(path / MARKER)
        os.rename(tmp, path / MARKER)


def _size(path: Path) -> int:
    """Bytes of the regular files under `path` (no symlink followed, at most
    SIZE_SCAN_MAX_ENTRIES entries looked at)."""
    total, seen, stack = 0, 0, [str(path)]
    while stack and seen < SIZE_SCAN_MAX_ENTRIES:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    seen += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
                    elif stat.S_ISREG(st.st_mode):
                        total += st.st_size
        except OSError:
            continue
    return total
