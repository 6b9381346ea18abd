"""GitLab as a forge (REST v4 through `pipeline.gitlab_api`), gitlab.com or self-hosted.

What degrades against GitHub, explicitly:
- no check runs: each stage is a commit status named "TAC-X / <stage>" (pending, running,
  success, failed, canceled) on the branch head, with the task page as its target URL;
- a draft is a merge request whose title starts with "Draft: ";
- reactions are award emoji on the note that started a round;
- review threads are MR discussions: a reply goes into the discussion of the note.
"""

from __future__ import annotations

import base64

from django.conf import settings

from ..gitlab_api import GitLabClient, base_url_for
from ..models import Repository, Task
from .base import Forge, register


@register
class GitLabForge(Forge):
    kind = Repository.Kind.GITLAB
    label = "GitLab"
    capabilities = frozenset({"commit_statuses", "draft", "reactions", "review_threads"})

    def configured(self) -> bool:
        return bool(settings.GITLAB_TOKEN)

    def client(self, repository: Repository) -> GitLabClient:
        return GitLabClient(base_url=repository.forge_url)

    def clone_url(self, repository: Repository) -> str:
        return repository.clone_url or f"{base_url_for(repository.forge_url)}/{repository.full_name}.git"

    def push_auth_header(self, repository: Repository | None) -> str:
        """HTTP Basic with the token as the password: GitLab takes any user name with a personal,
        project or group access token ("oauth2" is the documented one)."""
        token = settings.GITLAB_TOKEN
        if not token:
            return ""
        return "Authorization: Basic " + base64.b64encode(f"oauth2:{token}".encode()).decode()

    def pull_request_open(self, *, task: Task, title: str, body: str, draft: bool) -> tuple[str, int | None]:
        repository = task.repository
        mr = self.client(repository).merge_request_open_or_update(
            repository.full_name, source=task.branch, target=repository.default_branch, title=title, description=body, draft=draft
        )
        return str(mr.get("web_url") or ""), int(mr["iid"])

    def comment_reply(self, *, task: Task, body: str, thread: str = "") -> str:
        client, name = self.client(task.repository), task.repository.full_name
        if thread and task.pr_number:
            return str(client.discussion_reply(name, task.pr_number, thread, body)["id"])
        if task.pr_number:
            return str(client.note_create(name, task.pr_number, body, mr=True)["id"])
        return str(client.note_create(name, task.issue_number, body)["id"])

    def reaction_create(self, *, task: Task, target: dict, content: str = "eyes") -> None:
        if task.pr_number and target.get("mr"):
            self.client(task.repository).award_emoji(
                task.repository.full_name, int(target["mr"]), int(target["comment_id"]), content
            )

    def commit_status_set(
        self, repository: Repository, *, sha: str, state: str, context: str, description: str = "", target_url: str = ""
    ) -> None:
        self.client(repository).commit_status(
            repository.full_name, sha, state=state, name=context, description=description, target_url=target_url
        )
