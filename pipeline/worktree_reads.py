"""The hand-back gate: every byte TAC-X takes from a worktree after an agent or a repository
command ran there crosses this module.

An agent (or the repository's own hook) may have left anything in its worktree: a symlink named
plan.md pointing at /proc/self/environ or at the GitHub App's private key, a directory component
that is a symlink (`docs -> /`), a hardlink to a file elsewhere, a FIFO that blocks whoever opens
it, a sparse file of a gigabyte, a file on a FUSE mount that never answers, or an embedded
repository whose own configuration makes TAC-X's `git status` run a program. So:

- a file is opened relative to the worktree with no symlink followed at any component:
  `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` where the kernel has it
  (Linux 5.6+), else a walk that opens each directory with `O_NOFOLLOW | O_DIRECTORY` relative to
  the one before;
- only a regular file with one link is read (no FIFO, device, socket or directory; a hardlink,
  `st_nlink > 1`, is refused whatever the other link is: TAC-X cannot tell cheaply whether every
  other name of the inode is inside the worktree). The open uses `O_NONBLOCK`, so a FIFO never
  blocks it, and the type is checked on the open descriptor (`fstat`), never on the name;
- sizes are capped (`HANDBACK_FILE_MAX_BYTES` per file, `HANDBACK_TOTAL_MAX_BYTES` per attempt):
  a file whose size is over the cap is refused before a byte is read, and at most cap + 1 bytes
  are ever read (a file that grows while it is read is refused too);
- the open and the read run in a thread joined with a timeout (`HANDBACK_READ_SECONDS`): a
  blocked read leaves a stuck daemon thread behind, never a stuck worker;
- the text is decoded as UTF-8 (bad bytes replaced) and NUL characters are replaced (a database
  column cannot hold them);
- what is refused raises `Refused`, whose message names the file and the reason
  ("plan.md is a symlink to /proc/self/environ: refused"). The runner records it as an event of
  the attempt and fails the attempt with it.

Beyond files: `refuse_nested_repositories` looks for embedded repositories (a `.git` below the
top level) with `os.scandir`, never following a symlink, before TAC-X runs git on the worktree;
`refuse_changes` refuses commits that add a symlink leading out of the worktree (or into /proc,
/dev, /sys) or a submodule (a gitlink, a `.gitmodules` change) that the workflow did not allow.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from . import git
from .beneath import Refused, file_kind, open_beneath, openat2_available, path_parts  # noqa: F401 (openat2_available: the gate's public name)

DEFAULT_FILE_MAX_BYTES = 256 * 1024
DEFAULT_TOTAL_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_READ_SECONDS = 10.0
DEFAULT_SCAN_MAX_ENTRIES = 500_000
SUBJECT_MAX_CHARS = 200  # a commit subject TAC-X quotes anywhere
SYMLINK_TARGET_MAX_BYTES = 4096
FORBIDDEN_TARGET_ROOTS = ("/proc", "/dev", "/sys")
GITLINK_MODE = "160000"
SYMLINK_MODE = "120000"


def _limit(name: str, default: float) -> float:
    return settings.TACX.get(name, default)


# --- reading ---------------------------------------------------------------------------------------


@dataclass
class Reader:
    """One attempt's reads from its worktree, with the attempt's overall byte cap."""

    root: Path
    file_max: int = 0
    total_max: int = 0
    seconds: float = 0.0
    strategy: str = "auto"
    total: int = 0
    refusals: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.root = Path(self.root)
        self.file_max = self.file_max or int(_limit("HANDBACK_FILE_MAX_BYTES", DEFAULT_FILE_MAX_BYTES))
        self.total_max = self.total_max or int(_limit("HANDBACK_TOTAL_MAX_BYTES", DEFAULT_TOTAL_MAX_BYTES))
        self.seconds = self.seconds or float(_limit("HANDBACK_READ_SECONDS", DEFAULT_READ_SECONDS))

    def read_bytes(self, rel: str, *, max_bytes: int | None = None) -> bytes | None:
        """The bytes of `rel` (None when there is no such file). Raises Refused."""
        cap = min(max_bytes or self.file_max, self.file_max, max(self.total_max - self.total, 0))
        box: dict[str, object] = {}

        def work():
            try:
                box["data"] = self._read(rel, cap)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=work, name=f"tacx-handback-{rel[:40]}", daemon=True)
        thread.start()
        thread.join(self.seconds)
        if thread.is_alive():
            self._refuse(f"{rel} could not be read within {self.seconds:g} s (a blocking file?): refused", rel)
        if "error" in box:
            exc = box["error"]
            if isinstance(exc, FileNotFoundError):
                return None
            if isinstance(exc, Refused):
                self.refusals.append(str(exc))
                raise exc
            self._refuse(f"{rel} cannot be read: {exc}", rel)
        data = box["data"]
        assert isinstance(data, bytes)
        self.total += len(data)
        return data

    def read_text(self, rel: str, *, max_bytes: int | None = None) -> str | None:
        data = self.read_bytes(rel, max_bytes=max_bytes)
        return None if data is None else as_text(data)

    def _refuse(self, message: str, rel: str):
        self.refusals.append(message)
        raise Refused(message, path=rel)

    def _read(self, rel: str, cap: int) -> bytes:
        try:
            fd = open_beneath(self.root, rel, strategy=self.strategy)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # what open(2) says of a socket (or a device without a driver)
                raise Refused(f"{rel} is a socket or a device, not a regular file: refused", path=rel) from None
            raise
        try:
            st = os.fstat(fd)
            kind = file_kind(st.st_mode)
            if kind != "regular file":
                raise Refused(f"{rel} is a {kind}, not a regular file: refused", path=rel)
            if st.st_nlink > 1:
                raise Refused(f"{rel} is a hardlink ({st.st_nlink} names for one file): refused", path=rel)
            if st.st_size > cap:
                raise Refused(f"{rel} is {st.st_size} bytes; the limit is {cap}: refused", path=rel)
            os.set_blocking(fd, True)
            chunks, got = [], 0
            while got <= cap:
                chunk = os.read(fd, min(65536, cap + 1 - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            if got > cap:
                raise Refused(f"{rel} grew past the limit of {cap} bytes while it was read: refused", path=rel)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def unlink(self, rel: str) -> bool:
        """Remove `rel` (a file or a symlink itself, never what a symlink points to), its parent
        opened without following a symlink. False when absent or not removable."""
        parts = path_parts(rel)
        try:
            parent = open_beneath(self.root, "/".join(parts[:-1]), strategy=self.strategy) if len(parts) > 1 else None
        except (Refused, OSError):
            return False
        try:
            dirfd = parent if parent is not None else os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if not stat.S_ISDIR(os.fstat(dirfd).st_mode):
                    return False
                os.unlink(parts[-1], dir_fd=dirfd)
                return True
            finally:
                os.close(dirfd)
        except OSError:
            return False


def as_text(data: bytes) -> str:
    """Bytes from a worktree as text: UTF-8 with bad bytes replaced, no NUL characters."""
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def commit_subject(subject: str) -> str:
    """A commit subject as TAC-X quotes it: one line, at most SUBJECT_MAX_CHARS characters."""
    line = as_text(subject.encode("utf-8", "replace")).splitlines()[0] if subject else ""
    return line if len(line) <= SUBJECT_MAX_CHARS else line[: SUBJECT_MAX_CHARS - 1] + "…"


# --- embedded repositories and submodules ----------------------------------------------------------


def nested_repositories(root: str | Path, *, max_entries: int | None = None) -> list[str]:
    """Paths (relative to `root`) of every `.git` below the top level: a file, a directory or a
    symlink. The walk uses os.scandir and never follows a symlink. Raises Refused when the tree
    has more than HANDBACK_SCAN_MAX_ENTRIES entries (TAC-X will not vouch for what it did not see)."""
    root = Path(root)
    limit = int(max_entries or _limit("HANDBACK_SCAN_MAX_ENTRIES", DEFAULT_SCAN_MAX_ENTRIES))
    found: list[str] = []
    seen = 0
    stack = [(root, "")]
    while stack:
        here, rel = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > limit:
                raise Refused(
                    f"the worktree has more than {limit} files and directories; TAC-X will not run git on what it cannot check: refused"
                )
            path = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name == ".git":
                if rel:
                    found.append(path)
                continue  # the worktree's own .git file (pinned by TAC-X) is not walked
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), path))
    return sorted(found)


def gitlinks(root: str | Path) -> list[str]:
    """Paths the worktree's index records as gitlinks (mode 160000). `git ls-files` reads the
    index only (never a submodule's repository)."""
    out = git.run(["ls-files", "-s", "-z"], cwd=root)
    return sorted(
        entry.split("\t", 1)[1] for entry in out.split("\x00") if entry.startswith(GITLINK_MODE + " ") and "\t" in entry
    )


def refuse_nested_repositories(root: str | Path, *, allow_submodules: bool = False) -> None:
    """Before TAC-X runs git on a worktree an agent or a hook touched: refuse an embedded
    repository (a `.git` below the top level) and, unless the workflow allows submodules, a
    gitlink in the index. An embedded repository's own configuration (filters, fsmonitor, hooks)
    would run as TAC-X when git recursed into it."""
    nested = nested_repositories(root)
    if nested:
        shown = ", ".join(nested[:5]) + (f" and {len(nested) - 5} more" if len(nested) > 5 else "")
        raise Refused(f"the worktree holds an embedded git repository ({shown}): refused; TAC-X runs no git command in it")
    if not allow_submodules:
        links = gitlinks(root)
        if links:
            raise Refused(
                f"the index records a submodule (gitlink) at {', '.join(links[:5])}; the workflow does not allow submodules (allow_submodules): refused"
            )


# --- what a commit may add -------------------------------------------------------------------------


def refuse_oversize(root: str | Path, base: str, *, staged: bool, max_files: int, max_bytes: int) -> None:
    """Refuse a change since `base` (to the index when `staged`, else to HEAD) that adds more than
    `max_files` files or more than `max_bytes` bytes of new or changed files: the workflow's
    `commit_limit`. The refusal names the biggest paths and the key that raises the limit."""
    if staged:
        out = git.run(["diff-index", "--cached", "--raw", "-z", "--no-renames", base], cwd=root)
    else:
        out = git.run(["diff-tree", "-r", "--raw", "-z", "--no-renames", base, "HEAD"], cwd=root)
    changed = [(old, sha, path) for old, new, sha, path in _raw_entries(out) if new != "000000" and new != GITLINK_MODE]
    added = sum(1 for old, _sha, _path in changed if old == "000000")
    if not changed:
        return
    sizes_out = git.run(
        ["cat-file", "--batch-check=%(objectsize)"], cwd=root, input="".join(f"{sha}\n" for _old, sha, _path in changed)
    )
    sizes = [int(x) if x.isdigit() else 0 for x in sizes_out.split("\n")]
    total = sum(sizes)
    if added <= max_files and total <= max_bytes:
        return
    biggest = sorted(zip(sizes, (path for _old, _sha, path in changed), strict=False), reverse=True)[:5]
    top = ", ".join(f"{path} ({size} bytes)" for size, path in biggest)
    dirs: dict[str, int] = {}
    for _old, _sha, path in changed:
        head = path.split("/", 1)[0] + ("/" if "/" in path else "")
        dirs[head] = dirs.get(head, 0) + 1
    crowded = ", ".join(f"{d} ({n} files)" for d, n in sorted(dirs.items(), key=lambda kv: -kv[1])[:5])
    raise Refused(
        f"the change adds {added} file(s) and {total} bytes, over the workflow's commit_limit "
        f"({max_files} files, {max_bytes} bytes); the most files are under {crowded}; the biggest are {top}. "
        "If these files belong in the change, raise `commit_limit: {files: N, bytes: N}` in .tac/workflow.yaml; "
        "if they are made by setup or tools, name their directory under `environment:` (or in the repository's .gitignore)"
    )


def _raw_entries(out: str) -> list[tuple[str, str, str, str]]:
    """(old mode, new mode, new sha, path) of each `--raw -z` entry."""
    fields = out.split("\x00")
    entries = []
    i = 0
    while i + 1 < len(fields):
        head, path = fields[i], fields[i + 1]
        i += 2
        if not head.startswith(":"):
            continue
        meta = head[1:].split()
        if len(meta) >= 5:
            entries.append((meta[0], meta[1], meta[3], path))
    return entries


def symlink_refusal(root: str | Path, path: str, target: str) -> str:
    """Why a symlink at `path` (relative to the worktree) with `target` may not be committed, or ""."""
    root = Path(root).resolve()
    if "\x00" in target or not target:
        return f"{path} is a symlink with an empty or binary target: refused"
    if target.startswith("/"):
        resolved = posixpath.normpath(target)
        if any(resolved == r or resolved.startswith(r + "/") for r in FORBIDDEN_TARGET_ROOTS):
            return f"{path} is a symlink to {target[:300]}, into {'/' + resolved.split('/')[1]}: refused"
        inside = resolved == root.as_posix() or resolved.startswith(root.as_posix() + "/")
        return "" if inside else f"{path} is a symlink to {target[:300]}, outside the worktree: refused"
    lexical = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if lexical == ".." or lexical.startswith("../"):
        return f"{path} is a symlink to {target[:300]}, outside the worktree: refused"
    # A chain of links can escape where each link alone does not (a/b/d -> ../.., a/b/x -> d/../..):
    # what the link resolves to on disk, following the other links, must stay inside too.
    on_disk = root / path
    try:
        if on_disk.is_symlink() and os.readlink(on_disk) == target:
            real = Path(os.path.realpath(on_disk))
            if real != root and root not in real.parents:
                return f"{path} is a symlink to {target[:300]}, which leads outside the worktree (to {real}): refused"
    except OSError:
        pass
    return ""


def refuse_changes(root: str | Path, base: str, *, staged: bool, allow_submodules: bool = False) -> None:
    """Refuse what a commit must not add, between `base` and the index (`staged`) or HEAD: a
    symlink that leads out of the worktree or into /proc, /dev or /sys, and, unless the workflow
    allows submodules, a gitlink or a `.gitmodules` change. Plumbing commands only (their output
    is not changed by configuration, and they never look into a submodule)."""
    if staged:
        out = git.run(["diff-index", "--cached", "--raw", "-z", "--no-renames", base], cwd=root)
    else:
        out = git.run(["diff-tree", "-r", "--raw", "-z", "--no-renames", base, "HEAD"], cwd=root)
    problems = []
    for _old, new, sha, path in _raw_entries(out):
        if new == SYMLINK_MODE:
            blob = git.read_blob(root, sha, max_bytes=SYMLINK_TARGET_MAX_BYTES)
            why = symlink_refusal(root, path, as_text(blob or b""))
            if why:
                problems.append(why)
        elif not allow_submodules and (new == GITLINK_MODE or path == ".gitmodules"):
            what = "a submodule (gitlink)" if new == GITLINK_MODE else "a .gitmodules change"
            problems.append(f"{path} is {what}; the workflow does not allow submodules (allow_submodules): refused")
    if problems:
        raise Refused("; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
