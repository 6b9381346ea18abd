"""The one place TAC-X runs `git`. Every call is an argv list (never a shell string) and every
failure raises `GitError` with the command and git's own message."""

from __future__ import annotations

import os
import re
import subprocess
import unicodedata
from pathlib import Path

from django.conf import settings


class GitError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def identity_env() -> dict[str, str]:
    tacx = settings.TACX
    return {
        "GIT_AUTHOR_NAME": tacx["GIT_AUTHOR_NAME"],
        "GIT_AUTHOR_EMAIL": tacx["GIT_AUTHOR_EMAIL"],
        "GIT_COMMITTER_NAME": tacx["GIT_AUTHOR_NAME"],
        "GIT_COMMITTER_EMAIL": tacx["GIT_AUTHOR_EMAIL"],
    }


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ") or k.startswith("GIT_") and k not in ("GIT_ASKPASS",)
    }
    env.update({"GIT_TERMINAL_PROMPT": "0", **identity_env()})
    env.update(extra or {})
    return env


def run(args: list[str], *, cwd: str | Path, check: bool = True, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run `git ARGS` in `cwd` and return stdout (stripped of the final newline)."""
    cmd = ["git", *args]
    try:
        proc = subprocess.run(
            cmd, cwd=str(cwd), capture_output=True, text=True, env=_env(env), timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} timed out after {timeout:.0f} s in {cwd}") from None
    except FileNotFoundError as exc:
        raise GitError(f"cannot run git in {cwd}: {exc}", permanent=True) from None
    if check and proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        detail = message[-1] if message else f"exit code {proc.returncode}"
        raise GitError(f"git {' '.join(_safe(a) for a in args[:3])} failed in {cwd}: {detail}")
    return proc.stdout.rstrip("\n")


def succeeds(args: list[str], *, cwd: str | Path) -> bool:
    """True when `git ARGS` exits 0 (for questions such as "does this path exist at that ref")."""
    try:
        run(args, cwd=cwd)
    except GitError:
        return False
    return True


def read_blob(repo_dir: str | Path, spec: str, *, max_bytes: int) -> bytes | None:
    """The raw bytes of `REF:PATH` (None when absent). A blob over `max_bytes` raises a permanent
    GitError before it is read: a repository's file must not fill this process's memory."""
    if not succeeds(["cat-file", "-e", spec], cwd=repo_dir):
        return None
    size = int(run(["cat-file", "-s", spec], cwd=repo_dir))
    if size > max_bytes:
        raise GitError(f"{spec.split(':', 1)[-1]} is {size} bytes; the limit is {max_bytes}", permanent=True)
    try:
        proc = subprocess.run(
            ["git", "cat-file", "blob", spec], cwd=str(repo_dir), capture_output=True, env=_env(), timeout=60, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git cat-file timed out in {repo_dir}") from None
    if proc.returncode != 0:
        raise GitError(f"git cat-file blob {spec} failed in {repo_dir}: {proc.stderr.decode('utf-8', 'replace').strip()}")
    return proc.stdout


def _safe(arg: str) -> str:
    # Never echo credentials embedded in a URL or an extra header into an error message.
    return re.sub(r"//[^/@\s]+@", "//***@", arg) if "://" in arg else ("***" if "authorization" in arg.lower() else arg)


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


# --- operations -------------------------------------------------------------------------------


def head(cwd: str | Path) -> str:
    return run(["rev-parse", "HEAD"], cwd=cwd)


def resolve(repo: str | Path, ref: str) -> str:
    return run(["rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=repo)


def worktree_add(repo: str | Path, path: Path, branch: str, base: str) -> None:
    """Create (or re-attach) the task's worktree on `branch`, starting at `base` if new.

    Idempotent: a second attempt of a stage (maybe on another worker) finds the directory or the
    branch already there and reuses them.
    """
    if (path / ".git").exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    run(["worktree", "prune"], cwd=repo)
    if succeeds(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=repo):
        run(["worktree", "add", "--force", str(path), branch], cwd=repo)
    elif succeeds(["rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}"], cwd=repo):
        # Pushed by an earlier stage on another machine: continue from there.
        run(["worktree", "add", "-b", branch, str(path), f"refs/remotes/origin/{branch}"], cwd=repo)
    else:
        run(["worktree", "add", "-b", branch, str(path), base], cwd=repo)


def worktree_remove(repo: str | Path, path: Path) -> None:
    if path.exists():
        run(["worktree", "remove", "--force", str(path)], cwd=repo, check=False)
    run(["worktree", "prune"], cwd=repo, check=False)


def has_changes(cwd: str | Path) -> bool:
    return bool(run(["status", "--porcelain", "--untracked-files=all"], cwd=cwd))


def commit_all(cwd: str | Path, message: str) -> bool:
    """Commit everything left in the worktree; False when there was nothing to commit."""
    if not has_changes(cwd):
        return False
    run(["add", "-A"], cwd=cwd)
    run(["commit", "--no-verify", "-q", "-m", message], cwd=cwd)
    return True


def diff(base: str, cwd: str | Path, *, stat: bool = False) -> str:
    return run(["diff", "--stat" if stat else "--patch", f"{base}..HEAD"], cwd=cwd)


def push(cwd: str | Path, remote: str, branch: str, *, auth_header: str = "") -> None:
    """Push HEAD to `branch` on `remote`. The token travels in an HTTP header for this one command
    (never in the agent's environment, the remote URL on disk, or an error message)."""
    args = ["push", "--quiet", remote, f"HEAD:refs/heads/{branch}"]
    if auth_header:
        args = ["-c", f"http.extraHeader={auth_header}", *args]
    run(args, cwd=cwd, timeout=600)
