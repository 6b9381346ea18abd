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
- in a worktree it has pinned (``pin_worktree``), names the task's own git directory itself
  (``GIT_DIR``, ``GIT_COMMON_DIR``, ``GIT_WORK_TREE``) instead of following the worktree's
  ``.git`` file, which the agent can point at a directory (and a config) of its own making.

Each task has a git directory of its own, its "task store" (``var/taskgit/<worktree>.git``,
``worktree_at``): its own refs, HEAD and index, and the objects of the repository's mirror
borrowed through ``objects/info/alternates``. Inside the sandbox the agent writes the store but
not its ``config``, ``hooks``, ``info`` or ``objects/info``; TAC-X rewrites those before it uses
the store, never opens an entry of it that is not a regular file or a directory, and commits and
pushes only when HEAD is the task's own branch (``check_head``). ``guard_snapshot``/``guard_check``
notice (and undo) a change to the store's configuration made with the sandbox off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import subprocess
import time
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


# --- task stores: each task's own git directory, which TAC-X names itself -------------------------

_pinned: dict[str, dict[str, str]] = {}
_borrowed: dict[str, Path] = {}
_branches: dict[str, str] = {}

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


def common_dir(repo: str | Path) -> Path:
    """The git directory shared by `repo` and its worktrees (`repo/.git`, or `repo` when bare)."""
    out = run(["rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=repo)
    return Path(out).resolve()


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


def untracked_paths(path: str | Path) -> list[str]:
    """Untracked, not ignored paths of worktree `path` (a new directory as one entry ending in /)."""
    out = run(["ls-files", "--others", "--exclude-standard", "--directory", "-z"], cwd=path)
    return [p for p in out.split("\x00") if p]


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


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


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
                found.append((p, _kind(mode)))
    return found


def _refuse_special_files(store: Path) -> None:
    found = special_files(store)
    if not found:
        return
    for p, _ in found:
        with contextlib.suppress(OSError):
            p.unlink()
    kinds = ", ".join(f"{p.relative_to(store)} is {kind}" for p, kind in found[:5])
    raise GitError(f"the task's git directory held entries git must not open: {kinds}; TAC-X removed them", permanent=True)


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


def borrowed_objects(path: str | Path) -> Path | None:
    """The object directory the task store of `path` borrows from (its mirror's `objects`)."""
    return _borrowed.get(str(Path(path).resolve()))


def task_branch(path: str | Path) -> str:
    return _branches.get(str(Path(path).resolve()), "")


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


def run(args: list[str], *, cwd: str | Path, check: bool = True, env: dict[str, str] | None = None, timeout: float = 300, input: str | None = None) -> str:
    """Run `git ARGS` in `cwd` and return stdout (stripped of the final newline)."""
    cmd = ["git", *_safe_args(), *args]
    pinned = _pinned.get(str(Path(cwd).resolve()))
    if pinned:
        # A hook or a test command may have left a FIFO where git reads (HEAD, the index, a
        # ref): refused before git opens it, never a hang until the timeout.
        _refuse_special_files(Path(pinned["GIT_DIR"]))
        env = {**pinned, **(env or {})}
    try:
        proc = subprocess.run(
            cmd, cwd=str(cwd), capture_output=True, text=True, env=_env(env), timeout=timeout,
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
            ["git", *_safe_args(), "cat-file", "blob", oid], cwd=str(repo_dir), capture_output=True, env=_env(), timeout=60, stdin=subprocess.DEVNULL
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


def is_ancestor(repo: str | Path, ancestor: str, descendant: str) -> bool:
    return succeeds(["merge-base", "--is-ancestor", ancestor, descendant], cwd=repo)


def has_commit(repo: str | Path, commit: str) -> bool:
    return succeeds(["cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo)


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


def has_changes(cwd: str | Path) -> bool:
    return bool(run(["status", "--porcelain", "--untracked-files=all", "--ignore-submodules=all"], cwd=cwd))


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


def diff(base: str, cwd: str | Path, *, stat: bool = False) -> str:
    return run(["diff", "--no-ext-diff", "--no-textconv", "--stat" if stat else "--patch", f"{base}..HEAD"], cwd=cwd)


def push(cwd: str | Path, remote: str, branch: str, *, auth_header: str = "") -> None:
    """Push HEAD to `branch` on `remote`. The token travels in an HTTP header for this one command
    (never in the agent's environment, the remote URL on disk, or an error message)."""
    check_head(cwd)
    args = ["push", "--quiet", remote, f"refs/heads/{branch}:refs/heads/{branch}"]
    if auth_header:
        args = ["-c", f"http.extraHeader={auth_header}", *args]
    run(args, cwd=cwd, timeout=600)


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
    return _NOT_A_FILE + _kind(mode).encode() if not stat.S_ISDIR(mode) else _NOT_A_FILE + b"directory"


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
