"""A task's worktree: created on its own task store, pinned to it (TAC-X names the git
directory itself), removed with it; the names derived from untrusted issue text; and the commit
and the push, only ever on the task's own branch."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
import unicodedata
from pathlib import Path

from django.conf import settings

from .commands import (
    GitError,
    _borrowed,
    _branches,
    _pinned,
    _refuse_special_files,
    common_dir,
    has_changes,
    has_commit,
    head,
    resolve,
    run,
    succeeds,
    task_branch,
)
from .store import _exclude_source, _replace_file, _small_file, own_store_files, store_path


def pin_worktree(repo: str | Path, path: Path) -> dict[str, str]:
    """Make every later git command of TAC-X's in worktree `path` use the task's own store (never
    the worktree's `.git` file, which the agent can rewrite): puts TAC-X's files of the store
    back, refuses a store that holds a FIFO, socket, device or symlink, and rewrites the `.git`
    file. Raises GitError when the worktree has no task store."""
    store = store_path(path)
    if not (store / "refs").is_dir() or (store / "HEAD").is_symlink():
        raise GitError(f"the worktree {path} has no task git directory at {store}", permanent=True)
    borrowed = common_dir(repo) / "objects"
    own_store_files(store, borrowed)
    _refuse_special_files(store)
    expected = f"gitdir: {store}\n"
    dotgit = Path(path) / ".git"
    current = _small_file(dotgit)
    if current != expected:
        # The agent pointed the worktree elsewhere (or replaced the file): put TAC-X's back.
        if os.path.lexists(dotgit):
            shutil.rmtree(dotgit) if dotgit.is_dir() and not dotgit.is_symlink() else dotgit.unlink()
        _replace_file(dotgit, expected.encode())
    key = str(Path(path).resolve())
    pinned = {"GIT_DIR": str(store), "GIT_COMMON_DIR": str(store), "GIT_WORK_TREE": key}
    _pinned[key] = pinned
    _borrowed[key] = borrowed
    return pinned


def check_head(path: str | Path) -> None:
    """Before TAC-X commits or pushes in worktree `path`: HEAD must be the symbolic ref of the
    task's own branch. An agent that re-points HEAD (at `refs/heads/main`, or detaches it) gets
    a clear refusal, never a commit of TAC-X's on another branch."""
    branch = task_branch(path)
    if not branch:
        return
    ref = run(["symbolic-ref", "-q", "HEAD"], cwd=path, check=False)
    if ref != f"refs/heads/{branch}":
        where = ref or "a detached commit"
        raise GitError(
            f"HEAD of the worktree {path} points at {where}, not at the task's branch refs/heads/{branch}: "
            "the agent re-pointed it; TAC-X commits and pushes only the task's branch",
            permanent=True,
        )


# --- names derived from untrusted issue text ------------------------------------------------


def slugify(text: str, *, max_length: int = 40) -> str:
    """A branch/path-safe slug: ASCII letters, digits and single dashes, never empty."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    slug = slug[:max_length].rstrip("-")
    return slug or "issue"


def branch_name(issue_number: int, title: str) -> str:
    return f"tacx/{int(issue_number)}-{slugify(title)}"


def worktree_path(root: Path, repository_name: str, issue_number: int, task_id: int) -> Path:
    """A directory directly under `root` whatever the inputs (no `..`, no separators)."""
    root = Path(root).resolve()
    path = (root / f"{slugify(repository_name, max_length=60)}-{int(issue_number)}-t{int(task_id)}").resolve()
    if path.parent != root:
        raise GitError(f"worktree path {path} escapes the worktree root {root}", permanent=True)
    return path


# --- worktrees -------------------------------------------------------------------------------


@contextlib.contextmanager
def repository_lock(repo: str | Path):
    """Hold this machine's lock on repository `repo` (its clone/fetch and its worktree list).

    Concurrent `git worktree add` and `git worktree prune` on one repository race (a prune can
    remove the metadata of a worktree another process is adding); fetches race on ref locks. The
    lock file lives under TAC-X's var directory, never in the repository itself."""
    import fcntl

    key = hashlib.sha1(str(Path(repo).resolve()).encode()).hexdigest()[:20]
    locks = Path(settings.VAR_DIR) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"repo-{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _new_store(repo: str | Path, path: Path, branch: str) -> None:
    """Create the task store of worktree `path` (empty, borrowing `repo`'s objects) and the
    worktree directory with its `.git` file. The caller checks the branch out."""
    store = store_path(path)
    if store.exists():
        shutil.rmtree(store)  # a leftover of a worktree that is gone: never reused
    store.parent.mkdir(parents=True, exist_ok=True)
    store.mkdir(mode=0o700)
    for sub in ("objects", "refs/heads", "refs/tags"):
        (store / sub).mkdir(parents=True)
    (store / "HEAD").write_text(f"ref: refs/heads/{branch}\n", encoding="utf-8")
    path.mkdir(parents=True, exist_ok=True)
    pin_worktree(repo, path)


def _has_store(path: Path) -> bool:
    return os.path.lexists(path / ".git") and (store_path(path) / "refs").is_dir()


def worktree_add(repo: str | Path, path: Path, branch: str, base: str) -> None:
    """Create (or re-attach) the task's worktree on `branch`, starting at `base` if new (or at
    the branch where `repo` already has it).

    Idempotent: a second attempt of a stage (maybe on another worker) finds the directory or the
    branch already there and reuses them. (A stage uses `worktree_at`, which also puts the branch
    at the commit the previous stage left.)
    """
    key = str(Path(path).resolve())
    _branches[key] = branch
    if _has_store(path):
        pin_worktree(repo, path)
        return
    start = base
    for ref in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        if succeeds(["rev-parse", "--verify", "--quiet", ref], cwd=repo):
            start = resolve(repo, ref)
            break
    worktree_at(repo, path, branch, resolve(repo, start))


def worktree_at(repo: str | Path, path: Path, branch: str, commit: str) -> str:
    """Make `path` a worktree with its own task store (borrowing `repo`'s objects) and `branch`
    checked out at exactly `commit`, whatever this machine's copy held before (a worktree left
    behind by an earlier stage that ran here is stale when another machine ran the stages
    since). Returns the head.

    A worktree already at `commit` is left as it is (uncommitted work of a failed attempt on
    this machine stays); one at another commit is reset to it."""
    if not has_commit(repo, commit):
        raise GitError(f"commit {commit[:12]} of branch {branch} is not in {repo} (was it pushed?)", permanent=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _branches[str(Path(path).resolve())] = branch
    if _has_store(path):
        pin_worktree(repo, path)
    else:
        # The lock keeps the order of today's `worktree add` (one store created at a time per
        # repository on this machine); the store itself is the task's own.
        with repository_lock(repo):
            _new_store(repo, path, branch)
    current = run(["rev-parse", "--verify", "--quiet", "HEAD"], cwd=path, check=False)
    if current != commit or run(["symbolic-ref", "-q", "HEAD"], cwd=path, check=False) != f"refs/heads/{branch}":
        # -B: the branch is (re)set to `commit`, never continued from a stale local copy.
        run(["checkout", "--quiet", "--force", "-B", branch, commit], cwd=path)
        now = head(path)
    else:
        now = current  # read just above; nothing ran in the worktree since
    if now != commit:
        raise GitError(f"worktree {path} is at {now[:12]}, not at {commit[:12]} where the previous stage left {branch}")
    return now


def worktree_remove(repo: str | Path | None, path: Path) -> None:
    """Remove worktree `path` and its task store (under `repo`'s lock when it is known)."""
    key = str(Path(path).resolve())
    for registry in (_pinned, _borrowed, _branches):
        registry.pop(key, None)
    store = store_path(path)
    with repository_lock(repo) if repo is not None else contextlib.nullcontext():
        if os.path.lexists(path / ".git"):
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
        with contextlib.suppress(OSError):
            _exclude_source(store).unlink()


def remove_orphan_store(worktree_root: Path, *, older_than: float) -> Path | None:
    """Remove one task store whose worktree is gone (a worktree deleted by hand, a machine that
    died between the two) and that nothing touched for `older_than` seconds; returns it."""
    stores = Path(settings.VAR_DIR) / "taskgit"
    if not stores.is_dir():
        return None
    now = time.time()
    for entry in sorted(stores.iterdir()):
        if not entry.name.endswith(".git") or os.path.lexists(Path(worktree_root) / entry.name[: -len(".git")]):
            continue
        try:
            if now - os.lstat(entry).st_mtime < older_than:
                continue
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        return entry
    return None


def commit_all(cwd: str | Path, message: str, *, check=None) -> bool:
    """Commit everything left in the worktree, on the task's branch only; False when there was
    nothing to commit. `check`, when given, is called after `git add -A` and may raise to refuse
    what was staged."""
    check_head(cwd)
    if not has_changes(cwd):
        return False
    run(["add", "-A"], cwd=cwd)
    if check is not None:
        check()
    run(["commit", "--no-verify", "-q", "-m", message], cwd=cwd)
    return True


def push(cwd: str | Path, remote: str, branch: str, *, auth_header: str = "") -> None:
    """Push HEAD to `branch` on `remote`. The token travels in an HTTP header for this one command
    (never in the agent's environment, the remote URL on disk, or an error message)."""
    check_head(cwd)
    args = ["push", "--quiet", remote, f"refs/heads/{branch}:refs/heads/{branch}"]
    if auth_header:
        args = ["-c", f"http.extraHeader={auth_header}", *args]
    run(args, cwd=cwd, timeout=600)
