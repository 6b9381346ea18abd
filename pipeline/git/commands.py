"""Running `git` as TAC-X: the argv, the configuration that can start no program, the scrubbed
environment, the errors; and the questions TAC-X asks a repository (head, resolve, diff, ...).
See the package's docstring for the rules."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

from django.conf import settings

from ..beneath import file_kind


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
    {
        "GIT_ASKPASS",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_INDEX_FILE",
        "GIT_EXTERNAL_DIFF",
        "GIT_EDITOR",
        "GIT_PAGER",
    }
)


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ") or k.startswith("GIT_") and k not in _UNSAFE_GIT_ENV
    }
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, **identity_env()})
    env.update(extra or {})
    return env


def safe_args() -> list[str]:
    args: list[str] = []
    for item in SAFE_CONFIG:
        args += ["-c", item]
    if not os.environ.get("GIT_SSH_COMMAND"):
        args += ["-c", "core.sshCommand=ssh"]
    return args


# Where TAC-X pinned a worktree to its task store (pin_worktree), keyed by the worktree's path.
_pinned: dict[str, dict[str, str]] = {}
_borrowed: dict[str, Path] = {}
_branches: dict[str, str] = {}
_common_dirs: dict[str, Path] = {}


def common_dir(repo: str | Path) -> Path:
    """The git directory shared by `repo` and its worktrees (`repo/.git`, or `repo` when bare).

    Remembered per repository path while its objects folder is there: `pin_worktree` asks it of
    the mirror before every stage and push, one `git rev-parse` each time (issue 23)."""
    key = str(Path(repo).resolve())
    known = _common_dirs.get(key)
    if known is not None and (known / "objects").is_dir():
        return known
    out = run(["rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=repo)
    _common_dirs[key] = found = Path(out).resolve()
    return found


def untracked_paths(path: str | Path) -> list[str]:
    """Untracked, not ignored paths of worktree `path` (a new directory as one entry ending in /)."""
    out = run(["ls-files", "--others", "--exclude-standard", "--directory", "-z"], cwd=path)
    return [p for p in out.split("\x00") if p]


def special_files(store: Path) -> list[tuple[Path, str]]:
    """Entries of the task store that are neither a directory nor a regular file (a FIFO, a
    socket, a device, a symlink), each with its kind: git would open them (and hang on a FIFO)
    or follow them out of the store."""
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(store):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            try:
                mode = os.lstat(p).st_mode
            except OSError:
                continue
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                found.append((p, "a " + file_kind(mode)))
    return found


def _refuse_special_files(store: Path) -> None:
    found = special_files(store)
    if not found:
        return
    for p, _ in found:
        try:
            p.unlink()
        except OSError:
            pass
    kinds = ", ".join(f"{p.relative_to(store)} is {kind}" for p, kind in found[:5])
    raise GitError(f"the task's git directory held entries git must not open: {kinds}; TAC-X removed them", permanent=True)


def pinned_dirs(path: str | Path) -> dict[str, str] | None:
    return _pinned.get(str(Path(path).resolve()))


def borrowed_objects(path: str | Path) -> Path | None:
    """The object directory the task store of `path` borrows from (its mirror's `objects`)."""
    return _borrowed.get(str(Path(path).resolve()))


def task_branch(path: str | Path) -> str:
    return _branches.get(str(Path(path).resolve()), "")


def run(
    args: list[str],
    *,
    cwd: str | Path,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    input: str | None = None,
) -> str:
    """Run `git ARGS` in `cwd` and return stdout (stripped of the final newline)."""
    cmd = ["git", *safe_args(), *args]
    pinned = _pinned.get(str(Path(cwd).resolve()))
    if pinned:
        # A hook or a test command may have left a FIFO where git reads (HEAD, the index, a
        # ref): refused before git opens it, never a hang until the timeout.
        _refuse_special_files(Path(pinned["GIT_DIR"]))
        env = {**pinned, **(env or {})}
    try:
        proc = subprocess.run(
            cmd,
            cwd=str(cwd),
            capture_output=True,
            text=True,
            env=git_env(env),
            timeout=timeout,
            **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}),
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
    GitError before it is read: a repository's file must not fill this process's memory. The
    bytes are hashed again and must give the blob's own name: git does not re-hash a loose
    object when it reads it, so a replaced object file is refused here instead of believed."""
    if not succeeds(["cat-file", "-e", spec], cwd=repo_dir):
        return None
    oid = run(["rev-parse", "--verify", spec], cwd=repo_dir)
    size = int(run(["cat-file", "-s", oid], cwd=repo_dir))
    if size > max_bytes:
        raise GitError(f"{spec.split(':', 1)[-1]} is {size} bytes; the limit is {max_bytes}", permanent=True)
    try:
        proc = subprocess.run(
            ["git", *safe_args(), "cat-file", "blob", oid],
            cwd=str(repo_dir),
            capture_output=True,
            env=git_env(),
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git cat-file timed out in {repo_dir}") from None
    if proc.returncode != 0:
        raise GitError(f"git cat-file blob {spec} failed in {repo_dir}: {proc.stderr.decode('utf-8', 'replace').strip()}")
    data = proc.stdout
    algorithm = "sha256" if len(oid) == 64 else "sha1"
    if hashlib.new(algorithm, b"blob %d\0" % len(data) + data).hexdigest() != oid:
        raise GitError(f"{spec} does not hash to its object name {oid[:12]}: the object store was tampered with", permanent=True)
    return data


def _safe(arg: str) -> str:
    # Never echo credentials embedded in a URL or an extra header into an error message.
    return re.sub(r"//[^/@\s]+@", "//***@", arg) if "://" in arg else ("***" if "authorization" in arg.lower() else arg)


def head(cwd: str | Path) -> str:
    return run(["rev-parse", "HEAD"], cwd=cwd)


def resolve(repo: str | Path, ref: str) -> str:
    return run(["rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=repo)


def is_ancestor(repo: str | Path, ancestor: str, descendant: str) -> bool:
    return succeeds(["merge-base", "--is-ancestor", ancestor, descendant], cwd=repo)


def has_commit(repo: str | Path, commit: str) -> bool:
    return succeeds(["cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo)


def has_changes(cwd: str | Path) -> bool:
    return bool(run(["status", "--porcelain", "--untracked-files=all", "--ignore-submodules=all"], cwd=cwd))


def diff(base: str, cwd: str | Path, *, stat: bool = False) -> str:
    return run(["diff", "--no-ext-diff", "--no-textconv", "--stat" if stat else "--patch", f"{base}..HEAD"], cwd=cwd)
