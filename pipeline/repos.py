"""Where a repository's git objects live on this machine, and what its workflow file says.

A local repository is used in place (worktrees are added to it; its `origin` is where branches
go). A GitHub repository gets a bare mirror under `var/repos/`, fetched before each task; pushes
carry the token in an HTTP header for that one command only.
"""

from __future__ import annotations

import base64
import fcntl
from pathlib import Path

from django.conf import settings

from . import git, github_auth
from .models import Repository
from .workflow import MAX_WORKFLOW_BYTES, WORKFLOW_PATH, Workflow, WorkflowError, load_workflow_text


def auth_header(repository: Repository | None = None) -> str:
    """The HTTP header git sends for one fetch or push of `repository`: the GitHub App's
    installation token for it, or GITHUB_TOKEN. Never written into a remote URL or a file."""
    if repository is not None and repository.kind == Repository.Kind.LOCAL:
        return ""
    if github_auth.app_configured():
        if repository is None:
            return ""
        try:
            token = github_auth.identity().token_for(repository.full_name)
        except github_auth.GitHubAuthError as exc:
            raise git.GitError(f"no GitHub App token to reach {repository.full_name}: {exc}", permanent=exc.permanent) from None
    else:
        token = settings.GITHUB_TOKEN
    if not token:
        return ""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return f"Authorization: Basic {basic}"


def source_dir(repository: Repository, *, fetch: bool = True) -> Path:
    if repository.kind == Repository.Kind.LOCAL:
        path = Path(repository.local_path)
        if not (path / ".git").exists() and not (path / "HEAD").exists():
            raise git.GitError(f"{repository.local_path} is not a git repository", permanent=True)
        return path
    mirror = settings.VAR_DIR / "repos" / f"{git.slugify(repository.full_name, max_length=100)}.git"
    url = repository.clone_url or f"https://github.com/{repository.full_name}.git"
    header = auth_header(repository) if url.startswith("http") else ""
    extra = ["-c", f"http.extraHeader={header}"] if header else []
    mirror.parent.mkdir(parents=True, exist_ok=True)
    # Several q2 workers and the dispatcher share the mirror: one clone/fetch at a time, or git's
    # own ref locks make the others fail.
    with open(mirror.parent / f"{mirror.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (mirror / "HEAD").exists():
            git.run([*extra, "clone", "--bare", "--quiet", url, str(mirror)], cwd=mirror.parent, timeout=900)
            # Remote branches go to refs/remotes/origin/*: a fetch must never try to move (or
            # prune) a local branch that a worktree has checked out.
            git.run(["config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"], cwd=mirror)
            fetch = True
        if fetch:
            git.run([*extra, "fetch", "--quiet", "--prune", "origin"], cwd=mirror, timeout=900)
    return mirror


def base_ref(repository: Repository) -> str:
    """The ref new branches start from: the local branch of a local repository, the freshly
    fetched remote-tracking branch of a mirror."""
    if repository.kind == Repository.Kind.LOCAL:
        return repository.default_branch
    return f"origin/{repository.default_branch}"


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
