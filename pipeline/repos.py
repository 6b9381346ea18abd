"""Where a repository's git objects live on this machine, what its workflow file says, and how a
task's branch is published.

Every repository gets a bare mirror under `var/repos/` that TAC-X alone writes (no agent sees
more of it than its objects, read-only). A GitHub repository's mirror is a clone, fetched before
each task. A local repository's mirror fetches only its default branch and TAC-X's `tacx/*`
branches from the user's repository, so the user's other branches and stash never reach an
agent. Each task works in its own git directory that borrows the mirror's objects
(`git.worktree_at`); `publish` brings what the task made into the mirror through a fetch that
re-hashes and checks every object, and pushes from there. Pushes carry the token in an HTTP
header for that one command only.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
from pathlib import Path

from django.conf import settings

from . import forges, git
from .models import Repository, Task
from .workflow import MAX_WORKFLOW_BYTES, WORKFLOW_PATH, Workflow, WorkflowError, load_workflow_text


def auth_header(repository: Repository | None = None) -> str:
    """The HTTP header git sends for one fetch or push of `repository`, from its forge
    (`pipeline.forges`): never written into a remote URL or a file."""
    if repository is not None and repository.kind == Repository.Kind.LOCAL:
        return ""
    return forges.forge_named(repository.kind if repository is not None else Repository.Kind.GITHUB).push_auth_header(repository)


# OWNER/NAME as GitHub spells a repository (`add_repo` and the dashboard's registration check it).
GITHUB_FULL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")


def local_git_repository(path: str) -> Path:
    """The git repository (a working copy or a bare one) at `path`, absolute; ValueError naming
    the path otherwise. `add_repo --local` and the dashboard's registration both check this."""
    if not path or not path.strip():
        raise ValueError("a path is required")
    resolved = Path(path.strip()).expanduser()
    if not resolved.is_absolute():
        raise ValueError(f"{path} is not an absolute path")
    resolved = resolved.resolve()
    if not resolved.is_dir():
        raise ValueError(f"{resolved} is not a directory on this machine")
    if not (resolved / ".git").exists() and not (resolved / "HEAD").is_file():
        raise ValueError(f"{resolved} is not a git repository")
    return resolved


def local_dir(repository: Repository) -> Path:
    """The user's own repository of a local repository (TAC-X fetches from it and updates the
    task's branch in it; no agent sees it)."""
    path = Path(repository.local_path)
    if not (path / ".git").exists() and not (path / "HEAD").exists():
        raise git.GitError(f"{repository.local_path} is not a git repository", permanent=True)
    return path


def _mirror_path(repository: Repository) -> Path:
    if repository.kind == Repository.Kind.LOCAL:
        digest = hashlib.sha1(str(Path(repository.local_path).resolve()).encode()).hexdigest()[:10]
        name = f"local-{git.slugify(repository.full_name, max_length=80)}-{digest}.git"
    else:
        name = f"{git.slugify(repository.full_name, max_length=100)}.git"
    return Path(settings.VAR_DIR) / "repos" / name


def mirror_path(repository: Repository) -> Path:
    """Where the repository's mirror is (whether or not it exists yet)."""
    return _mirror_path(repository)


def source_dir(repository: Repository, *, fetch: bool = True) -> Path:
    """The repository's mirror on this machine (created, and fetched when `fetch`)."""
    mirror = _mirror_path(repository)
    mirror.parent.mkdir(parents=True, exist_ok=True)
    # Several q2 workers and the dispatcher share the mirror: one clone/fetch at a time, or git's
    # own ref locks make the others fail.
    with open(mirror.parent / f"{mirror.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if repository.kind == Repository.Kind.LOCAL:
            user = local_dir(repository)
            if not (mirror / "HEAD").exists():
                # init + fetch, never `clone --local`: a local clone hard-links every object of
                # the user's repository, unpushed branches and stash included.
                git.run(["init", "--quiet", "--bare", str(mirror)], cwd=mirror.parent)
                fetch = True
            if fetch:
                default = repository.default_branch
                git.run(
                    ["fetch", "--quiet", "--prune", "--no-tags", str(user.resolve()),
                     f"+refs/heads/{default}:refs/remotes/origin/{default}", "+refs/heads/tacx/*:refs/remotes/origin/tacx/*"],
                    cwd=mirror, timeout=900,
                )
            return mirror
        url = forges.forge_for(repository).clone_url(repository)
        header = auth_header(repository) if url.startswith("http") else ""
        extra = ["-c", f"http.extraHeader={header}"] if header else []
        if not (mirror / "HEAD").exists():
            git.run([*extra, "clone", "--bare", "--quiet", url, str(mirror)], cwd=mirror.parent, timeout=900)
            # Remote branches go to refs/remotes/origin/*: a fetch must never try to move (or
            # prune) a local branch.
            git.run(["config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"], cwd=mirror)
            fetch = True
        if fetch:
            git.run([*extra, "fetch", "--quiet", "--prune", "origin"], cwd=mirror, timeout=900)
    return mirror


def stage_needs_fetch(repository: Repository, task: Task) -> bool:
    """Whether a stage must fetch into the mirror before it starts (`prepare_worktree`).

    A GitHub repository: always (another machine may have pushed the branch, a person may
    have pushed to it since: the stage starts at that fast-forward). A local repository: only
    when the mirror lacks what the stage starts from: the first stage (no base commit yet) or a
    head commit that is not here. Its origin's branches are never consulted (`pushed_head`), and
    every stage of this machine leaves its head in the mirror (`publish` fetches it there), so
    fetching the user's repository again before each stage found nothing new (issue 23: a
    fetch per stage was a tenth of the pipeline's overhead)."""
    if repository.kind != Repository.Kind.LOCAL or not task.base_commit or not task.head_commit:
        return True
    mirror = _mirror_path(repository)
    return not (mirror / "HEAD").exists() or not git.has_commit(mirror, task.head_commit)


def base_ref(repository: Repository) -> str:
    """The ref new branches start from: the freshly fetched default branch in the mirror."""
    return f"refs/remotes/origin/{repository.default_branch}"


def pushed_head(repository: Repository, repo_dir: Path, branch: str) -> str:
    """The head of `branch` on the origin as of the last fetch ("" when unknown or absent). A
    local repository's branches are its own: its origin is not consulted."""
    if repository.kind == Repository.Kind.LOCAL:
        return ""
    ref = f"refs/remotes/origin/{branch}"
    if not git.succeeds(["rev-parse", "--verify", "--quiet", ref], cwd=repo_dir):
        return ""
    return git.resolve(repo_dir, ref)


def push_remote(repository: Repository) -> str:
    return "origin"


def publish(repository: Repository, worktree: Path, branch: str, *, force: bool = False) -> str:
    """Push the task's branch (and only it) from the task's own git directory, and return its head.

    The branch's new objects first come into the mirror by a fetch with `fetch.fsckObjects`:
    index-pack hashes every object it receives, so an object file the agent forged in its own
    store cannot pass (a missing or malformed object fails the fetch with git's message), and
    what an agent planted in its own store reaches no other task. Then the mirror pushes:
    to GitHub, or, for a local repository, into the user's repository's branch and from there to
    its `origin`, as a worktree of that repository did before. `force`: the new head need not
    descend from the pushed one (a person chose another candidate, pipeline.attempt.selection)."""
    plus = "+" if force else ""
    git.check_head(worktree)
    pinned = git.pinned_dirs(worktree)
    if not pinned:
        raise git.GitError(f"the worktree {worktree} is not pinned to its task store", permanent=True)
    mirror = source_dir(repository, fetch=False)
    held = f"refs/tacx/tasks/{branch}"
    with open(mirror.parent / f"{mirror.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        git.run(
            ["-c", "fetch.fsckObjects=true", "-c", "transfer.fsckObjects=true", "fetch", "--quiet", "--no-tags",
             pinned["GIT_DIR"], f"+refs/heads/{branch}:{held}"],
            cwd=mirror, timeout=600,
        )
        head = git.resolve(mirror, held)
        if repository.kind == Repository.Kind.LOCAL:
            user = local_dir(repository)
            git.run(["push", "--quiet", "--force", str(user.resolve()), f"{held}:refs/heads/{branch}"], cwd=mirror, timeout=600)
        else:
            header = auth_header(repository)
            extra = ["-c", f"http.extraHeader={header}"] if header else []
            git.run([*extra, "push", "--quiet", push_remote(repository), f"{plus}{held}:refs/heads/{branch}"], cwd=mirror, timeout=600)
    if repository.kind == Repository.Kind.LOCAL:
        git.run(["push", "--quiet", push_remote(repository), f"{plus}refs/heads/{branch}:refs/heads/{branch}"], cwd=local_dir(repository), timeout=600)
    return head


def workflow_file_text(repository: Repository) -> str | None:
    """The text of the repository's `.tac/workflow.yaml` on its default branch, without fetching
    (a page must not wait for the network): a local repository's own branch, a GitHub one's as
    this machine's mirror last saw it. None when there is no mirror yet or no file. Raises
    GitError for a file over the limit or a repository that is gone."""
    if repository.kind == Repository.Kind.LOCAL:
        # The user's own repository (no agent writes it): its default branch as it is now.
        where, ref = local_dir(repository), f"refs/heads/{repository.default_branch}"
    else:
        where, ref = _mirror_path(repository), base_ref(repository)
        if not (where / "HEAD").exists():
            return None
    raw = git.read_blob(where, f"{ref}:{WORKFLOW_PATH}", max_bytes=MAX_WORKFLOW_BYTES)
    return None if raw is None else raw.decode("utf-8", errors="replace")


def delete_branch(repository: Repository, branch: str) -> None:
    """Remove a branch TAC-X pushed (a candidate's, pipeline.lib.candidates) from the origin and
    the mirror's held ref; a branch already gone is no error."""
    mirror = source_dir(repository, fetch=False)
    git.run(["update-ref", "-d", f"refs/tacx/tasks/{branch}"], cwd=mirror, check=False)
    if repository.kind == Repository.Kind.LOCAL:
        user = local_dir(repository)
        git.run(["push", "--quiet", push_remote(repository), "--delete", branch], cwd=user, check=False, timeout=600)
        git.run(["branch", "--quiet", "-D", branch], cwd=user, check=False)
        return
    header = auth_header(repository)
    extra = ["-c", f"http.extraHeader={header}"] if header else []
    git.run([*extra, "push", "--quiet", push_remote(repository), "--delete", branch], cwd=mirror, check=False, timeout=600)


def read_workflow(repository: Repository) -> Workflow:
    """The workflow at the tip of the default branch (raises WorkflowError, GitError)."""
    repo_dir = source_dir(repository)
    spec = f"{base_ref(repository)}:{WORKFLOW_PATH}"
    try:
        raw = git.read_blob(repo_dir, spec, max_bytes=MAX_WORKFLOW_BYTES)
    except git.GitError as exc:
        if exc.permanent:
            raise WorkflowError(f"{WORKFLOW_PATH}: (file): {exc}") from None
        raise
    return load_workflow_text(raw)
