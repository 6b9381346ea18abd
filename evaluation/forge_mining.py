"""Mining a GitHub repository through the forge client (`pipeline.github.GitHubClient`).

The candidates are the repository's merged pull requests (`GET /repos/{o}/{r}/pulls?state=closed`,
most recently updated first) that close an issue: a closing keyword ("Fixes #12", "Closes #3",
"Resolves #7") in the pull request's title or body, or in its merge commit's message (GitHub
writes the PR's title and body there when it squashes). A number that GitHub says is a pull
request, not an issue, does not count. The change is the merge commit against its first parent:
the whole pull request for a merge or a squash, its last commit for a rebase. The commits come
from TAC-X's mirror of the repository under ``var/repos/`` (`pipeline.repos.source_dir`: cloned
once, fetched again on each use, the token in a header for that one command), the same mirror its
tasks use. The problem statement is the issue's own title and body, asked of GitHub.

From there on a candidate is mined as a local one (`evaluation.mining.mine_one`): the SWE-bench
split, the tests run at the base and after the fix, dropped with the reason when none flips.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pipeline import git, repos
from pipeline.github import GitHubClient, GitHubError
from pipeline.models import Repository

from .mining import CLOSES, Candidate, Drop, split_change

FULL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+")


def is_full_name(text: str) -> bool:
    """`owner/name` (a GitHub repository), not a path on this machine."""
    return bool(FULL_NAME.fullmatch(text)) and not text.startswith((".", "/", "~"))


def github_repository(full_name: str, *, clone_url: str = "") -> Repository:
    """The registered repository of that name (its clone URL and credentials), or an unsaved one
    at `clone_url` (default https://github.com/owner/name.git)."""
    found = Repository.objects.filter(kind=Repository.Kind.GITHUB, full_name__iexact=full_name).first()
    if found is not None:
        if clone_url:
            found.clone_url = clone_url
        return found
    return Repository(kind=Repository.Kind.GITHUB, full_name=full_name, clone_url=clone_url)


def mirror_of(repository: Repository) -> Path:
    """TAC-X's mirror of the repository, fetched now (git's errors as GitError)."""
    return repos.source_dir(repository, fetch=True)


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def pull_candidates(
    client: GitHubClient, *, full_name: str, mirror: Path, since: str = "", max_pages: int = 10
) -> Iterator[Candidate | Drop]:
    """The merged pull requests of `full_name` that close an issue, each as a `Candidate` (or a
    `Drop` with the reason), most recently updated first."""
    after = _parse_time(since) if since else None
    for pull in client.pull_requests_closed(full_name=full_name, max_pages=max_pages):
        merged_at = _parse_time(pull.get("merged_at") or "")
        if merged_at is None or (after is not None and merged_at < after):
            continue
        number = int(pull.get("number") or 0)
        sha = str(pull.get("merge_commit_sha") or "")
        title, body = str(pull.get("title") or ""), str(pull.get("body") or "")
        message = ""
        if re.fullmatch(r"[0-9a-f]{40}", sha) and git.succeeds(["cat-file", "-e", f"{sha}^{{commit}}"], cwd=mirror):
            message = git.run(["log", "-1", "--format=%B", sha], cwd=mirror)
        numbers = [int(n) for n in dict.fromkeys(CLOSES.findall(f"{title}\n{body}\n{message}")) if int(n) != number]
        if not numbers:
            continue
        issues = [n for n in numbers if _is_issue(client, full_name, n)]
        if not issues:
            yield Drop(
                sha or f"PR #{number}",
                f"PR #{number} closes no issue: {', '.join(f'#{n}' for n in numbers)} are pull requests or do not exist",
                numbers,
            )
            continue
        if not message:
            yield Drop(
                sha or f"PR #{number}",
                f"PR #{number}: its merge commit {sha[:12] or '(none)'} is not in the clone of {full_name}",
                issues,
            )
            continue
        parents = git.run(["rev-list", "--parents", "-n", "1", sha], cwd=mirror).split()[1:]
        if not parents:
            yield Drop(sha, f"PR #{number}: its merge commit has no parent to start from", issues)
            continue
        yield split_change(
            mirror,
            sha,
            parents[0],
            issues,
            subject=title.strip(),
            body=body.strip(),
            date=pull.get("merged_at") or "",
            pull=number,
        )


def _is_issue(client: GitHubClient, full_name: str, number: int) -> bool:
    try:
        issue = client.issue(full_name=full_name, number=number)
    except GitHubError:
        return False
    return bool(issue) and "pull_request" not in issue


def issue_texts(client: GitHubClient, full_name: str) -> Callable[[list[int]], dict[int, dict]]:
    """A function giving the title and body of a candidate's issues, asked of GitHub."""

    def texts(numbers: list[int]) -> dict[int, dict]:
        out = {}
        for n in numbers:
            try:
                issue = client.issue(full_name=full_name, number=n)
            except GitHubError:
                continue
            out[n] = {"title": str(issue.get("title") or ""), "body": str(issue.get("body") or "")}
        return out

    return texts
