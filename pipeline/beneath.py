"""Opening a file below a directory with no symlink followed at any component.

`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` where the kernel has it
(Linux 5.6+), else a walk that opens each directory with `O_NOFOLLOW | O_DIRECTORY` relative to
the one before. The hand-back gate (`worktree_reads`) reads every worktree file through
`open_beneath`; what is refused raises `Refused`, whose message names the path and the reason.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

# openat2(2): <linux/openat2.h>. The syscall number is the same on every architecture (unified
# numbering since 5.1).
SYS_OPENAT2 = 437
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08


class Refused(Exception):
    """TAC-X will not take this from the worktree; the message says what and why."""

    def __init__(self, message: str, *, path: str = ""):
        super().__init__(message)
        self.path = path


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_openat2_state = {"available": None}  # None: not tried yet


def openat2_available() -> bool:
    """True when this kernel has openat2 (tried once, on the worktree root's parent)."""
    if _openat2_state["available"] is None:
        try:
            os.close(
                _openat2(
                    os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), ".", os.O_RDONLY | os.O_DIRECTORY, close_dir=True
                )
            )
            _openat2_state["available"] = True
        except OSError as exc:
            _openat2_state["available"] = exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL)
    return bool(_openat2_state["available"])


def _openat2(dirfd: int, rel: str, flags: int, *, close_dir: bool = False) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    try:
        fd = _libc.syscall(SYS_OPENAT2, dirfd, os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), rel)
        return fd
    finally:
        if close_dir:
            os.close(dirfd)


def _walk_open(dirfd: int, parts: list[str], flags: int) -> int:
    """Open `parts` below `dirfd` one component at a time, never following a symlink."""
    fd = os.dup(dirfd)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def path_parts(rel: str) -> list[str]:
    """The components of a relative path; refuses absolute paths and `..`."""
    if not rel or rel.startswith("/") or "\x00" in rel:
        raise Refused(f"{rel!r} is not a path inside the worktree: refused", path=rel)
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise Refused(f"{rel} leaves the worktree: refused", path=rel)
    return parts


def _why_not(root: Path, parts: list[str]) -> str:
    """Which component of the path is a symlink (and to what), for the refusal's message."""
    here = root
    for i, part in enumerate(parts):
        here = here / part
        try:
            st = os.lstat(here)
        except OSError:
            break
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(here)
            except OSError:
                target = "?"
            name = "/".join(parts[: i + 1])
            return f"{name} is a symlink to {target[:300]}"
    return "its path goes through a symlink or leaves the worktree"


def open_beneath(root: str | Path, rel: str, *, strategy: str = "auto") -> int:
    """An O_RDONLY|O_NONBLOCK descriptor of `root/rel`, no symlink followed anywhere below
    `root`. Raises FileNotFoundError when absent, Refused when a symlink (or `..`) is in the way.
    `strategy`: "auto", "openat2" or "walk" (tests force the fallback)."""
    parts = path_parts(rel)
    root = Path(root)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
    use_openat2 = strategy == "openat2" or (strategy == "auto" and openat2_available())
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if use_openat2:
            return _openat2(rootfd, "/".join(parts), flags)
        return _walk_open(rootfd, parts, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV) or (exc.errno == errno.ENOTDIR and _is_link_somewhere(root, parts)):
            raise Refused(f"{_why_not(root, parts)}: refused", path=rel) from None
        if exc.errno == errno.ENOTDIR:
            raise FileNotFoundError(errno.ENOENT, "a component is not a directory", rel) from None
        raise
    finally:
        os.close(rootfd)


def _is_link_somewhere(root: Path, parts: list[str]) -> bool:
    return _why_not(root, parts) != "its path goes through a symlink or leaves the worktree"


def file_kind(mode: int) -> str:
    """What an `st_mode` is, in words: "regular file", "directory", "symlink", "FIFO", "socket",
    "device" or "special file"."""
    for test, kind in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "device"),
        (stat.S_ISBLK, "device"),
    ):
        if test(mode):
            return kind
    return "special file"
