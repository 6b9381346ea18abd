"""The one place TAC-X runs `git`. Every call is an argv list (never a shell string) and every
failure raises `GitError` with the command and git's own message.

Nothing an agent wrote runs as TAC-X. An agent works in a worktree and may have written anything
there; every git command TAC-X runs therefore

- disables hooks and the programs that configuration can start (``SAFE_CONFIG``: hooks path,
  fsmonitor, credential helpers, the ``ext::`` transport, askpass), on the command line, which
  beats every configuration file;
- ignores the system and the global configuration (``GIT_CONFIG_NOSYSTEM``,
  ``GIT_CONFIG_GLOBAL=/dev/null``): TAC-X's git behaves the same on every machine, and an agent
  that writes ``~/.gitconfig`` changes nothing;
- in a worktree it has pinned (``pin_worktree``), names the git directories itself
  (``GIT_DIR``, ``GIT_COMMON_DIR``, ``GIT_WORK_TREE``) instead of following the worktree's own
  ``.git`` file, which the agent can point at a directory (and a config) of its own making.

The shared git directory's ``config`` and ``hooks`` are read-only inside the agent sandbox;
``guard_snapshot``/``guard_check`` notice (and undo) a change to them made with the sandbox off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import subprocess
import unicodedata
from pathlib import Path

from django.conf import settings


class GitError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


# What git says when the same command will fail again however often it is retried: a commit or
# branch that does not exist, a path that is not a repository, credentials that are refused.
# (A network hiccup or a lock file left by a crash is worth another attempt.)
_PERMANENT = re.compile(
    r"not a valid (branch point|object name|reference)|unknown revision|bad revision|invalid reference"
    r"|not a git repository|does not appear to be a git repository|repository .* not found"
    r"|authentication failed|permission denied|could not read username|invalid username or password",
    re.I,
)


def is_permanent(detail: str) -> bool:
    """True when git's message means a retry cannot help."""
    return bool(_PERMANENT.search(detail))


def identity_env() -> dict[str, str]:
    tacx = settings.TACX
    return {
        "GIT_AUTHOR_NAME": tacx["GIT_AUTHOR_NAME"],
        "GIT_AUTHOR_EMAIL": tacx["GIT_AUTHOR_EMAIL"],
        "GIT_COMMITTER_NAME": tacx["GIT_AUTHOR_NAME"],
        "GIT_COMMITTER_EMAIL": tacx["GIT_AUTHOR_EMAIL"],
    }


# Configuration that would start a program, neutralised on every command line (`-c` wins over
# every configuration file). `credential.helper=` empties the list of helpers.
SAFE_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "credential.helper=",
    "protocol.ext.allow=never",
    "core.askPass=",
    "uploadpack.packObjectsHook=",
    # A submodule (or an embedded repository an agent made) is never recursed into: its own
    # configuration would run as TAC-X (pipeline.worktree_reads refuses one before git runs; this
    # is the second wall). Symlinks are committed as links, never followed.
    "submodule.recurse=false",
    "diff.ignoreSubmodules=all",
    "status.submoduleSummary=false",
    "core.symlinks=true",
)
# Variables of TAC-X's environment that could redirect or reconfigure its git commands.
_UNSAFE_GIT_ENV = frozenset(
    {"GIT_ASKPASS", "GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_INDEX_FILE", "GIT_EXTERNAL_DIFF", "GIT_EDITOR", "GIT_PAGER"}
)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ") or k.startswith("GIT_") and k not in _UNSAFE_GIT_ENV
    }
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, **identity_env()})
    env.update(extra or {})
    return env


def _safe_args() -> list[str]:
    args: list[str] = []
    for item in SAFE_CONFIG:
        args += ["-c", item]
    if not os.environ.get("GIT_SSH_COMMAND"):
        args += ["-c", "core.sshCommand=ssh"]
    return args


# --- worktrees whose git directories TAC-X names itself -------------------------------------------

_pinned: dict[str, dict[str, str]] = {}


def common_dir(repo: str | Path) -> Path:
    """The git directory shared by `repo` and its worktrees (`repo/.git`, or `repo` when bare)."""
    out = run(["rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=repo)
    return Path(out).resolve()


def pin_worktree(repo: str | Path, path: Path) -> dict[str, str]:
    """Find the administrative directory of worktree `path` from the repository's side (never from
    the worktree's own `.git` file) and make every later git command in `path` use it. Restores a
    `.git` file that the agent rewrote. Raises GitError when the repository knows no such worktree."""
    common = common_dir(repo)
    target = (Path(path).resolve() / ".git").as_posix()
    admin_root = common / "worktrees"
    admin = None
    for candidate in sorted(admin_root.iterdir()) if admin_root.is_dir() else []:
        try:
            recorded = (candidate / "gitdir").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if Path(recorded).resolve().as_posix() == target:
            admin = candidate.resolve()
            break
    if admin is None or admin.parent != admin_root.resolve():
        raise GitError(f"{common} has no worktree at {path} (its metadata is missing or was changed)", permanent=True)
    dotgit = Path(path) / ".git"
    expected = f"gitdir: {admin}\n"
    current = _small_file(dotgit)
    if current != expected:
        # The agent pointed the worktree elsewhere (or replaced the file): put TAC-X's back.
        if dotgit.is_dir() and not dotgit.is_symlink():
            import shutil

            shutil.rmtree(dotgit)
        elif dotgit.exists() or dotgit.is_symlink():
            dotgit.unlink()
        dotgit.write_text(expected, encoding="utf-8")
    pinned = {"GIT_DIR": str(admin), "GIT_COMMON_DIR": str(common), "GIT_WORK_TREE": str(Path(path).resolve())}
    _pinned[str(Path(path).resolve())] = pinned
    return pinned


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


def pinned_dirs(path: str | Path) -> dict[str, str] | None:
    return _pinned.get(str(Path(path).resolve()))


def run(args: list[str], *, cwd: str | Path, check: bool = True, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run `git ARGS` in `cwd` and return stdout (stripped of the final newline)."""
    cmd = ["git", *_safe_args(), *args]
    pinned = _pinned.get(str(Path(cwd).resolve()))
    if pinned:
        env = {**pinned, **(env or {})}
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
        raise GitError(f"git {' '.join(_safe(a) for a in args[:3])} failed in {cwd}: {detail}", permanent=is_permanent(detail))
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


def worktree_add(repo: str | Path, path: Path, branch: str, base: str) -> None:
    """Create (or re-attach) the task's worktree on `branch`, starting at `base` if new.

    Idempotent: a second attempt of a stage (maybe on another worker) finds the directory or the
    branch already there and reuses them. (A stage uses `worktree_at`, which also puts the branch
    at the commit the previous stage left.)
    """
    if (path / ".git").exists():
        pin_worktree(repo, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with repository_lock(repo):
        run(["worktree", "prune"], cwd=repo)
        if succeeds(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=repo):
            run(["worktree", "add", "--force", str(path), branch], cwd=repo)
        elif succeeds(["rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}"], cwd=repo):
            run(["worktree", "add", "-b", branch, str(path), f"refs/remotes/origin/{branch}"], cwd=repo)
        else:
            run(["worktree", "add", "-b", branch, str(path), base], cwd=repo)
    pin_worktree(repo, path)


def is_ancestor(repo: str | Path, ancestor: str, descendant: str) -> bool:
    return succeeds(["merge-base", "--is-ancestor", ancestor, descendant], cwd=repo)


def has_commit(repo: str | Path, commit: str) -> bool:
    return succeeds(["cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo)


def worktree_at(repo: str | Path, path: Path, branch: str, commit: str) -> str:
    """Make `path` a worktree of `repo` with `branch` checked out at exactly `commit`, whatever
    this machine's copy held before (a local branch or a worktree left behind by an earlier
    stage that ran here is stale when another machine ran the stages since). Returns the head.

    A worktree already at `commit` is left as it is (uncommitted work of a failed attempt on
    this machine stays); one at another commit is reset to it."""
    if not has_commit(repo, commit):
        raise GitError(f"commit {commit[:12]} of branch {branch} is not in {repo} (was it pushed?)", permanent=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if (path / ".git").exists():
        pin_worktree(repo, path)
        if head(path) != commit or run(["symbolic-ref", "-q", "HEAD"], cwd=path, check=False) != f"refs/heads/{branch}":
            run(["checkout", "--quiet", "--force", "-B", branch, commit], cwd=path)
    else:
        with repository_lock(repo):
            run(["worktree", "prune"], cwd=repo)
            # -B: the branch is (re)set to `commit`, never continued from a stale local copy.
            run(["worktree", "add", "--quiet", "--force", "-B", branch, str(path), commit], cwd=repo)
        pin_worktree(repo, path)
    now = head(path)
    if now != commit:
        raise GitError(f"worktree {path} is at {now[:12]}, not at {commit[:12]} where the previous stage left {branch}")
    return now


def worktree_remove(repo: str | Path, path: Path) -> None:
    _pinned.pop(str(Path(path).resolve()), None)
    with repository_lock(repo):
        if path.exists():
            run(["worktree", "remove", "--force", str(path)], cwd=repo, check=False)
        run(["worktree", "prune"], cwd=repo, check=False)


def has_changes(cwd: str | Path) -> bool:
    return bool(run(["status", "--porcelain", "--untracked-files=all", "--ignore-submodules=all"], cwd=cwd))


def commit_all(cwd: str | Path, message: str, *, check=None) -> bool:
    """Commit everything left in the worktree; False when there was nothing to commit. `check`,
    when given, is called after `git add -A` and may raise to refuse what was staged."""
    if not has_changes(cwd):
        return False
    run(["add", "-A"], cwd=cwd)
    if check is not None:
        check()
    run(["commit", "--no-verify", "-q", "-m", message], cwd=cwd)
    return True


def diff(base: str, cwd: str | Path, *, stat: bool = False) -> str:
    return run(["diff", "--no-ext-diff", "--no-textconv", "--stat" if stat else "--patch", f"{base}..HEAD"], cwd=cwd)


def push(cwd: str | Path, remote: str, branch: str, *, auth_header: str = "") -> None:
    """Push HEAD to `branch` on `remote`. The token travels in an HTTP header for this one command
    (never in the agent's environment, the remote URL on disk, or an error message)."""
    args = ["push", "--quiet", remote, f"HEAD:refs/heads/{branch}"]
    if auth_header:
        args = ["-c", f"http.extraHeader={auth_header}", *args]
    run(args, cwd=cwd, timeout=600)


# --- the shared git directory's programs and configuration, watched across an agent run ---------

GUARDED_FILES = ("config", "info/attributes", "commondir")


def guard_snapshot(common: Path, admin: Path | None = None) -> dict[str, bytes | None]:
    """The bytes of everything in the git directories that configures or runs programs: the shared
    config, every hook, info/attributes, and the worktree's own config. Compared by `guard_check`."""
    snap: dict[str, bytes | None] = {}
    places = [(common, name) for name in GUARDED_FILES]
    if admin is not None:
        places += [(admin, "config.worktree"), (admin, "commondir")]
    for base, name in places:
        p = base / name
        snap[str(p)] = p.read_bytes() if p.is_file() else None
    hooks = common / "hooks"
    if hooks.is_dir():
        for p in sorted(hooks.rglob("*")):
            if p.is_file() or p.is_symlink():
                snap[str(p)] = p.read_bytes() if p.is_file() else b"<symlink>"
    return snap


def guard_check(common: Path, admin: Path | None, before: dict[str, bytes | None]) -> list[str]:
    """Paths that changed since `before`; each is put back as it was (new files removed)."""
    after = guard_snapshot(common, admin)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    for name in changed:
        p = Path(name)
        old = before.get(name)
        try:
            if old is None:
                if p.is_symlink() or p.is_file():
                    p.unlink()
            else:
                if p.is_symlink():
                    p.unlink()
                p.write_bytes(old)
        except OSError:
            pass
    return changed
