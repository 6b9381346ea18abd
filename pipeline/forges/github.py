"""GitHub as a forge: the seam's first implementation, over `GitHubClient` and the push token
of `github_auth` (a GitHub App's installation token, or GITHUB_TOKEN).

Check runs (App identity) and the round machinery stay in `coordinator.checks` and
`coordinator.replies`, which call the client directly; this class gives the common operations.
"""

from __future__ import annotations

import base64

from django.conf import settings

from .. import git, github_auth
from ..github import GitHubClient
from ..models import Repository, Task
from .base import CAPABILITIES, Forge, register


@register
class GitHubForge(Forge):
    kind = Repository.Kind.GITHUB
    label = "GitHub"
    capabilities = CAPABILITIES

    def configured(self) -> bool:
        return bool(settings.GITHUB_TOKEN or github_auth.app_configured())

    def clone_url(self, repository: Repository) -> str:
        return repository.clone_url or f"https://github.com/{repository.full_name}.git"

    def push_auth_header(self, repository: Repository | None) -> str:
        """The GitHub App's installation token for the repository, or GITHUB_TOKEN, as Basic auth."""
        if github_auth.app_configured():
            if repository is None:
                return ""
            try:
                token = github_auth.identity().token_for(repository.full_name)
            except github_auth.GitHubAuthError as exc:
                raise git.GitError(
                    f"no GitHub App token to reach {repository.full_name}: {exc}", permanent=exc.permanent
                ) from None
        else:
            token = settings.GITHUB_TOKEN
        if not token:
            return ""
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        return f"Authorization: Basic {basic}"

    def pull_request_open(self, *, task: Task, title: str, body: str, draft: bool) -> tuple[str, int | None]:
        pr = GitHubClient().pull_request_open_or_update(
            full_name=task.repository.full_name,
            head=task.branch,
            base=task.repository.default_branch,
            title=title,
            body=body,
            draft=draft,
        )
        return pr["html_url"], pr["number"]

    def comment_reply(self, *, task: Task, body: str, thread: str = "") -> str:
        client, name = GitHubClient(), task.repository.full_name
        if thread:
            return str(
                client.review_comment_reply(full_name=name, number=int(task.pr_number or 0), comment_id=int(thread), body=body)[
                    "id"
                ]
            )
        return str(client.issue_comment_create(full_name=name, number=int(task.pr_number or task.issue_number), body=body)["id"])

    def reaction_create(self, *, task: Task, target: dict, content: str = "eyes") -> None:
        GitHubClient().reaction_create(
            full_name=task.repository.full_name,
            comment_id=int(target["comment_id"]),
            content=content,
            review_comment=bool(target.get("review_comment")),
        )

    def commit_status_set(
        self, repository: Repository, *, sha: str, state: str, context: str, description: str = "", target_url: str = ""
    ) -> None:
        github_state = {"running": "pending", "failed": "failure", "canceled": "error"}.get(state, state)
        GitHubClient().commit_status_create(
            full_name=repository.full_name,
            sha=sha,
            state=github_state,
            context=context,
            description=description,
            target_url=target_url,
        )
