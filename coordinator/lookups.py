"""Finding TAC-X's own rows from what GitHub names: a repository by its full name, a task by its
issue, pull request or branch. Read-only; shared by `deliveries` and `conversation`, so neither
imports the other for them."""

from __future__ import annotations

from django.db.models import Q

from pipeline.models import Repository, Task


def repository_for(full_name: str) -> Repository | None:
    return Repository.objects.filter(kind=Repository.Kind.GITHUB, full_name__iexact=full_name, enabled=True).first()


def task_for_issue(repository: Repository, number: int) -> Task | None:
    """The latest task of an issue, or of the PR with that number."""
    tasks = Task.objects.filter(repository=repository).exclude(status=Task.Status.SKIPPED)
    return tasks.filter(Q(issue_number=number) | Q(pr_number=number)).order_by("-id").first()


def task_for_pull(repository: Repository, number: int) -> Task | None:
    return Task.objects.filter(repository=repository, pr_number=number).order_by("-id").first()


def task_for_branch(repository: Repository, branch: str) -> Task | None:
    if not branch:
        return None
    return Task.objects.filter(repository=repository, branch=branch, pr_number__isnull=False).order_by("-id").first()
