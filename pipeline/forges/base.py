"""The forge seam: where a repository's code lives and its pull/merge requests go.

A repository's forge is `Repository.kind` (`github`, `gitlab`; `local` has no forge: its
branch in the user's repository is the deliverable). One implementation per kind, registered
with `@register`, found with `forge_for(repository)`.

Contract of one implementation (a subclass of `Forge`):

- `clone_url(repository)`: what `git clone/fetch/push` talk to (`Repository.clone_url` wins).
- `push_auth_header(repository)`: the HTTP header git sends for one fetch or push
  (`http.extraHeader`), "" for none. Never written into a remote URL, a file or a log.
- `pull_request_open(task=, title=, body=, draft=)`: open the task's PR/MR from `task.branch`
  to the default branch, or update the open one (never a second); returns (web URL, number).
- `comment_reply(task=, body=, thread=)`: a comment on the task's PR/MR (in a review thread /
  discussion when `thread` is given).
- `reaction_create(task=, target=, content=)`: 👀 on the comment that started a round.
- `commit_status_set(repository, sha=, state=, context=, description=, target_url=)`: one
  status per stage (state: pending, running, success, failed, canceled).
- `capabilities`: what it has of `CAPABILITIES`. A missing capability degrades explicitly and
  is documented (README "GitLab"): no check runs means commit statuses.

Errors are `ForgeError` or the kind's own API error (`GitHubError`), with `status`,
`permanent` and `retry_after`.
"""

from __future__ import annotations

from ..models import Repository, Task

# check_runs: rich per-stage checks (GitHub App); commit_statuses: one state per context;
# draft: draft PRs/MRs; reactions: emoji on comments; review_threads: inline threads with positions.
CAPABILITIES = frozenset({"check_runs", "commit_statuses", "draft", "reactions", "review_threads"})


class ForgeError(Exception):
    def __init__(self, message: str, *, status: int | None = None, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.permanent = permanent
        self.retry_after = retry_after


class Forge:
    kind: str = ""
    label: str = ""
    capabilities: frozenset[str] = frozenset()

    def configured(self) -> bool:
        return False

    def clone_url(self, repository: Repository) -> str:
        raise NotImplementedError

    def push_auth_header(self, repository: Repository) -> str:
        return ""

    def pull_request_open(self, *, task: Task, title: str, body: str, draft: bool) -> tuple[str, int | None]:
        raise NotImplementedError

    def comment_reply(self, *, task: Task, body: str, thread: str = "") -> str:
        raise NotImplementedError

    def reaction_create(self, *, task: Task, target: dict, content: str = "eyes") -> None:
        raise NotImplementedError

    def commit_status_set(
        self, repository: Repository, *, sha: str, state: str, context: str, description: str = "", target_url: str = ""
    ) -> None:
        raise NotImplementedError


FORGES: dict[str, type[Forge]] = {}
_instances: dict[str, Forge] = {}


def register(cls: type[Forge]) -> type[Forge]:
    FORGES[cls.kind] = cls
    return cls


def forge_named(kind: str) -> Forge:
    if kind not in _instances:
        _instances[kind] = FORGES[kind]()
    return _instances[kind]


def forge_for(repository: Repository) -> Forge:
    """The forge of a repository (KeyError for `local`, which has none)."""
    return forge_named(repository.kind)


def forget_instances() -> None:
    _instances.clear()
