"""Where a repository's git objects live on this machine, and what its workflow file says.

A local repository is used in place (worktrees are added to it; its `origin` is where branches
go). A GitHub repository gets a bare mirror under `var/repos/`, fetched before each task; pushes
carry the token in an HTTP header for that one command only.
"""

from __future__ import annotations

import base64
from pathlib import Path

from django.conf import settings

from . import git
from .models import Repository
from .workflow import WORKFLOW_PATH, Workflow, load_workflow_text


def auth_header() -> str:
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
    header = auth_header() if url.startswith("http") else ""
    extra = ["-c", f"http.extraHeader={header}"] if header else []
    if not (mirror / "HEAD").exists():
        mirror.parent.mkdir(parents=True, exist_ok=True)
        git.run([*extra, "clone", "--bare", "--quiet", url, str(mirror)], cwd=mirror.parent, timeout=900)
        git.run(["config", "remote.origin.fetch", "+refs/heads/*:refs/heads/*"], cwd=mirror)
    elif fetch:
        git.run([*extra, "fetch", "--quiet", "--prune", "origin"], cwd=mirror, timeout=900)
    return mirror


def push_remote(repository: Repository) -> str:
    return "origin"


def read_workflow(repository: Repository) -> Workflow:
    """The workflow at the tip of the default branch (raises WorkflowError, GitError)."""
    repo_dir = source_dir(repository)
    spec = f"{repository.default_branch}:{WORKFLOW_PATH}"
    text = git.run(["show", spec], cwd=repo_dir) if git.succeeds(["cat-file", "-e", spec], cwd=repo_dir) else None
    return load_workflow_text(text)
