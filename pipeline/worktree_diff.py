"""What a task's worktree changed against its base commit, per file, while the agent works: the
live diff beside the transcript.

The worktree and the task store are the agent's to write, so this reads them as the hand-back
gate says (`pipeline.worktree_reads`):
- git runs as TAC-X runs it everywhere (`pipeline.git`: no hooks, no programs from
  configuration, no external diff or textconv), naming the task store and the worktree itself
  (never through the worktree's `.git` file), without the index's optional lock, with a short
  timeout, and only when the store holds nothing git must not open and the worktree has no
  embedded repository;
- git only names the changed paths; the worktree side of each file is read through the gate
  (`Reader`: no symlink followed, regular files with one link only, sizes capped, a read that
  blocks is abandoned) and the base side from the store's objects, each blob hashed again;
- everything is capped: files shown, bytes read, lines per file. A file the gate refuses is
  listed with the gate's reason, never read.

The text is the agent's: a page escapes it like any other (the template does)."""

from __future__ import annotations

import difflib
import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import git, worktree_reads
from .beneath import Refused

FILES_MAX = 60
FILE_BYTES_MAX = 256 * 1024
TOTAL_BYTES_MAX = 2 * 1024 * 1024
LINES_MAX = 400  # diff lines shown per file
GIT_SECONDS = 10


@dataclass
class FileDiff:
    path: str
    status: str  # added | modified | deleted | binary | refused
    lines: list[str] = field(default_factory=list)
    added: int = 0
    removed: int = 0
    note: str = ""
    truncated: bool = False


@dataclass
class TreeDiff:
    files: list[FileDiff] = field(default_factory=list)
    error: str = ""
    more: int = 0  # changed files beyond FILES_MAX, not shown

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.files)


def file_diff(path: str, old: bytes | None, new: bytes | None) -> FileDiff:
    """One file's unified diff from its two sides (None: absent on that side)."""
    status = "added" if old is None else "deleted" if new is None else "modified"
    if b"\0" in (old or b"") or b"\0" in (new or b""):
        return FileDiff(path=path, status="binary", note=f"binary file {status} ({len(old or b'')} → {len(new or b'')} bytes)")
    a = worktree_reads.as_text(old or b"").splitlines()
    b = worktree_reads.as_text(new or b"").splitlines()
    out = FileDiff(path=path, status=status)
    for line in list(difflib.unified_diff(a, b, lineterm="", n=3))[2:]:
        if line.startswith("+"):
            out.added += 1
        elif line.startswith("-"):
            out.removed += 1
        if len(out.lines) < LINES_MAX:
            out.lines.append(line if len(line) <= 2000 else line[:1999] + "…")
        else:
            out.truncated = True
    return out


def worktree_diff(*, worktree: str | Path, base: str) -> TreeDiff | None:
    """The worktree's changes against `base`, committed or not, untracked files included. None
    when the worktree (or its task store) is not on this machine."""
    worktree = Path(worktree)
    store = git.store_path(worktree)
    if not base or not worktree.is_dir() or not store.is_dir():
        return None
    special = git.special_files(store)
    if special:
        return TreeDiff(error=f"the task's git directory holds {special[0][1]} ({special[0][0].name}): not read")
    try:
        nested = worktree_reads.nested_repositories(worktree)
    except Refused as exc:
        return TreeDiff(error=str(exc))
    if nested:
        return TreeDiff(error=f"the worktree holds an embedded repository ({nested[0]}): git is not run on it")
    g = ["--git-dir", str(store), "--work-tree", str(worktree), "--no-optional-locks"]
    try:
        named = git.run(
            [*g, "diff", "--no-ext-diff", "--no-textconv", "--no-renames", "--name-status", "-z", base, "--"],
            cwd=worktree,
            timeout=GIT_SECONDS,
        )
        untracked = git.run([*g, "ls-files", "--others", "--exclude-standard", "-z"], cwd=worktree, timeout=GIT_SECONDS)
    except git.GitError as exc:
        return TreeDiff(error=str(exc))
    tokens = named.split("\x00")
    changes = {tokens[i + 1]: tokens[i] for i in range(0, len(tokens) - 1, 2) if tokens[i]}
    for path in untracked.split("\x00"):
        if path:
            changes.setdefault(path, "A")
    paths = sorted(changes)
    result = TreeDiff(more=max(0, len(paths) - FILES_MAX))
    paths = paths[:FILES_MAX]
    try:
        olds = base_blobs(store, base, [p for p in paths if changes[p] != "A"])
    except git.GitError as exc:
        return TreeDiff(error=str(exc))
    reader = worktree_reads.Reader(root=worktree, file_max=FILE_BYTES_MAX, total_max=TOTAL_BYTES_MAX, seconds=2.0)
    for path in paths:
        old = olds.get(path)
        if isinstance(old, str):  # the base side could not be read: why
            result.files.append(FileDiff(path=path, status="refused", note=old))
            continue
        try:
            new = None if changes[path] == "D" else reader.read_bytes(path)
        except Refused as exc:
            result.files.append(FileDiff(path=path, status="refused", note=str(exc)))
            continue
        if old is None and new is None:
            continue
        result.files.append(file_diff(path, old, new))
    return result


def base_blobs(store: Path, base: str, paths: list[str]) -> dict[str, bytes | str | None]:
    """The base side of each path from the store's objects: bytes, None (absent at `base`), or a
    sentence saying why it was not read (too large; a name git's batch input cannot carry). Two
    git processes for all of them; each blob is hashed again (a replaced object file is refused)."""
    found: dict[str, bytes | str | None] = {}
    asked = []
    for path in paths:
        if "\n" in path or "\r" in path:
            found[path] = "a file name with a line break: not read"
        else:
            asked.append(path)
    if not asked:
        return found
    g = ["--git-dir", str(store)]
    checked = git.run(
        [*g, "cat-file", "--batch-check"], cwd=store, timeout=GIT_SECONDS, input="".join(f"{base}:{p}\n" for p in asked)
    )
    wanted: list[tuple[str, str, int]] = []
    for path, line in zip(asked, checked.splitlines(), strict=False):
        parts = line.split()
        if len(parts) != 3 or parts[1] != "blob":
            found[path] = None
        elif int(parts[2]) > FILE_BYTES_MAX:
            found[path] = f"{path} is {parts[2]} bytes at the base; the limit is {FILE_BYTES_MAX}"
        else:
            wanted.append((path, parts[0], int(parts[2])))
    if not wanted:
        return found
    try:
        proc = subprocess.run(
            ["git", *git.safe_args(), *g, "cat-file", "--batch"],
            cwd=str(store),
            input="".join(f"{oid}\n" for _, oid, _ in wanted).encode(),
            capture_output=True,
            env=git.git_env(),
            timeout=GIT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise git.GitError(f"git cat-file timed out in {store}") from None
    data, at = proc.stdout, 0
    for path, oid, size in wanted:
        header_end = data.find(b"\n", at)
        if header_end < 0:
            raise git.GitError(f"git cat-file --batch ended early in {store}")
        body = data[header_end + 1 : header_end + 1 + size]
        at = header_end + 1 + size + 1
        algorithm = "sha256" if len(oid) == 64 else "sha1"
        if hashlib.new(algorithm, b"blob %d\0" % len(body) + body).hexdigest() != oid:
            found[path] = f"{path} at the base does not hash to its object name: the task's object store was tampered with"
        else:
            found[path] = body
    return found


def patch_files(text: str) -> list[FileDiff]:
    """A `git diff --patch` text (TAC-X's own, of the pushed branch) split per file."""
    files: list[FileDiff] = []
    current: FileDiff | None = None
    for line in text.splitlines():
        if line.startswith("diff --git "):
            name = line.split(" b/", 1)[-1] if " b/" in line else line[11:]
            current = FileDiff(path=name, status="modified")
            files.append(current)
            continue
        if current is None:
            continue
        if line.startswith("new file mode"):
            current.status = "added"
        elif line.startswith("deleted file mode"):
            current.status = "deleted"
        elif line.startswith("Binary files"):
            current.status, current.note = "binary", "binary file changed"
        elif line.startswith(("index ", "--- ", "+++ ", "similarity", "rename ", "old mode", "new mode")):
            continue
        else:
            if line.startswith("+"):
                current.added += 1
            elif line.startswith("-"):
                current.removed += 1
            if len(current.lines) < LINES_MAX:
                current.lines.append(line)
            else:
                current.truncated = True
    return files
