"""The files TAC-X owns in a task store (each task's own git directory, `var/taskgit/<worktree>.git`):
its config, hooks, info and alternates, rewritten before TAC-X's git reads them; the exclude file
that keeps what setup made out of every commit; and the guard that notices (and undoes) a change
to the store's configuration made while an agent ran. Nothing here opens an entry of the store
that is not a regular file or a directory."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from django.conf import settings

from ..beneath import file_kind

# The task store's configuration, written by TAC-X (read-only to the agent) and rewritten before
# TAC-X's own git reads it. No gc: the store lives as long as its task.
STORE_CONFIG = """[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = true
[gc]
\tauto = 0
"""
# Files that would make git read another directory, or cut history, wherever they appear at the
# top of a git directory; TAC-X's store has none of them.
_FOREIGN = ("commondir", "gitdir", "config.worktree", "shallow")
# The parts of a task store the agent may not write (bound read-only in its sandbox).
STORE_READ_ONLY = ("config", "hooks", "info", "objects/info")


def store_path(path: str | Path) -> Path:
    """The task store of worktree `path`: a git directory under TAC-X's var directory, never
    inside the worktree and never shared with another task."""
    return (Path(settings.VAR_DIR) / "taskgit" / f"{Path(path).resolve().name}.git").resolve()


def _replace_file(path: Path, data: bytes) -> None:
    """Write `path` as a fresh regular file, whatever the agent left there (a FIFO, a symlink, a
    directory): the old entry is removed without being opened."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _real_dir(path: Path) -> None:
    """`path` as a real directory (a symlink or a file in its place is removed first)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        path.mkdir(parents=True)
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink()
        path.mkdir()


def _empty_dir(path: Path) -> None:
    _real_dir(path)
    for child in os.scandir(path):
        if child.is_dir(follow_symlinks=False):
            shutil.rmtree(child.path)
        else:
            os.unlink(child.path)


def own_store_files(store: Path, borrowed: Path) -> None:
    """(Re)write everything of the task store that TAC-X owns: its config, its one alternate (the
    mirror's objects, read-only to the agent), an empty hooks and info directory, and none of the
    files that would point git elsewhere. Nothing there is opened before it is replaced."""
    for sub in ("", "objects", "refs", "refs/heads"):
        _real_dir(store / sub if sub else store)
    _replace_file(store / "config", STORE_CONFIG.encode())
    _empty_dir(store / "hooks")
    _empty_dir(store / "info")
    excludes = _small_file(_exclude_source(store), limit=EXCLUDE_MAX_BYTES)
    if excludes:
        # What setup made and the workflow's `environment` stay out of every commit (TAC-X's
        # and the agent's own git both read the store's info/exclude; the agent cannot write it).
        _replace_file(store / "info" / "exclude", excludes.encode())
    _empty_dir(store / "objects" / "info")
    _replace_file(store / "objects" / "info" / "alternates", f"{borrowed}\n".encode())
    for name in _FOREIGN:
        p = store / name
        if os.path.lexists(p):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


EXCLUDE_MAX_BYTES = 1_000_000


def _exclude_source(store: Path) -> Path:
    """TAC-X's copy of the task store's info/exclude, outside the store and the worktree."""
    return store.parent.parent / "taskexclude" / store.name.removesuffix(".git")


def _exclude_line(path: str) -> str | None:
    """`path` (relative, a directory ends with /) as an anchored gitignore pattern matching only
    itself, or None when a pattern cannot say it (a newline in the name)."""
    if "\n" in path or "\r" in path:
        return None
    out = "".join("\\" + c if c in "\\*?[" else c for c in path)
    stripped = out.rstrip(" ")
    return "/" + stripped + "\\ " * (len(out) - len(stripped))


def write_excludes(path: str | Path, *, environment: tuple[str, ...] | list[str], setup: list[str] | None = None) -> Path:
    """Keep the workflow's `environment` paths (a name without a slash at any depth) and, once
    given, what `setup` left untracked (`setup`; kept from the last call when None) out of every
    commit in worktree `path`: TAC-X's own exclude file, copied into the task store's
    info/exclude whenever TAC-X rewrites the store. Never the repository's .gitignore."""
    store = store_path(path)
    source = _exclude_source(store)
    marker = "# left by the setup hook\n"
    if setup is None:
        old = _small_file(source, limit=EXCLUDE_MAX_BYTES) or ""
        setup_part = old[old.index(marker) :] if marker in old else ""
    else:
        lines = [line for line in (_exclude_line(p) for p in setup) if line]
        setup_part = marker + "".join(f"{line}\n" for line in lines) if lines else ""
    env_lines = []
    for entry in environment:
        line = _exclude_line(entry)
        if line:
            env_lines.append(line if "/" in entry else line[1:])  # a bare name: at any depth
    text = "# TAC-X: the workflow's environment\n" + "".join(f"{line}\n" for line in env_lines) + setup_part
    source.parent.mkdir(parents=True, exist_ok=True)
    _replace_file(source, text.encode())
    if (store / "info").is_dir() and not (store / "info").is_symlink():
        _replace_file(store / "info" / "exclude", text.encode())
    return source


def _small_file(path: Path, limit: int = 4096) -> str | None:
    """The text of `path` if it is a regular file (not a symlink, FIFO or hardlink) of at most
    `limit` bytes, else None; never blocks and never reads more than `limit` + 1 bytes. (The
    worktree's `.git` file is the agent's to rewrite: a sparse gigabyte there must not be read.)"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1 or st.st_size > limit:
            return None
        return os.read(fd, limit + 1).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


# --- the task store's programs and configuration, watched across an agent run -----------------

GUARDED_FILES = ("config", "info/attributes", "commondir", "config.worktree", "gitdir", "shallow", "objects/info/alternates")
_NOT_A_FILE = b"\0tacx: not a regular file: "


def _entry(p: Path) -> bytes | None:
    """What `p` is, without opening anything but a regular file: its bytes, a marker for any
    other kind of entry, None when absent."""
    try:
        mode = os.lstat(p).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return _NOT_A_FILE + b"unreadable"
        with os.fdopen(fd, "rb") as fh:
            return fh.read()
    if stat.S_ISLNK(mode):
        return _NOT_A_FILE + b"symlink to " + os.fsencode(os.readlink(p))
    return _NOT_A_FILE + ("a " + file_kind(mode)).encode() if not stat.S_ISDIR(mode) else _NOT_A_FILE + b"directory"


def guard_snapshot(common: Path, admin: Path | None = None) -> dict[str, bytes | None]:
    """Everything in the git directories that configures or runs programs, or sends git to read
    elsewhere: the config, every hook, info/attributes, the alternates, `commondir` and the
    worktree's own config. Compared by `guard_check`. Never opens a FIFO."""
    snap: dict[str, bytes | None] = {}
    places = [(common, name) for name in GUARDED_FILES]
    if admin is not None and admin != common:
        places += [(admin, "config.worktree"), (admin, "commondir")]
    for base, name in places:
        p = base / name
        snap[str(p)] = _entry(p)
    hooks = common / "hooks"
    if os.path.isdir(hooks) and not os.path.islink(hooks):
        for dirpath, dirnames, filenames in os.walk(hooks):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if not p.is_dir() or p.is_symlink():
                    snap[str(p)] = _entry(p)
    return snap


def guard_check(common: Path, admin: Path | None, before: dict[str, bytes | None]) -> list[str]:
    """Paths that changed since `before`; each is put back as it was (new entries removed)."""
    after = guard_snapshot(common, admin)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    for name in changed:
        p = Path(name)
        old = before.get(name)
        try:
            if old is None or old.startswith(_NOT_A_FILE):
                if os.path.lexists(p):
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            else:
                _replace_file(p, old)
        except OSError:
            pass
    return changed
