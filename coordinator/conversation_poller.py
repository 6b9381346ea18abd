"""The conversation poller: for repositories without webhooks and for missed deliveries, it reads
the recent comments, reviews and checks of tasks with a pull request and hands them to the same
handlers as the webhook (`coordinator.conversation`), so one trigger is one round either way."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from pipeline.github import GitHubClient, GitHubError
from pipeline.models import Repository, Round, Task

from . import pull_outcomes
from .conversation import POLL_WINDOW, checks_handle, comment_handle, github_time, review_handle, review_summary
from .conversation_intake import _comment

log = logging.getLogger(__name__)


def in_conversation_window(now) -> Q:
    return Q(status__in=Task.ACTIVE) | Q(finished_at__gte=now - POLL_WINDOW)


def outcome_pending(now) -> Q:
    """Pull requests whose outcome is still open, for PR_OUTCOME_POLL_DAYS after they opened."""
    days = settings.TACX["PR_OUTCOME_POLL_DAYS"]
    return Q(pr_number__isnull=False, pr_outcome=Task.PullOutcome.OPEN, pr_opened_at__gte=now - timedelta(days=days))


def tasks_to_poll(now):
    # Tasks waiting for a person are read before they have a PR: `/tacx approve`, `/tacx budget`.
    waiting = Q(status__in=[Task.Status.AWAITING_APPROVAL, Task.Status.PAUSED])
    conversation = (Q(pr_number__isnull=False) | waiting) & in_conversation_window(now)
    return (
        Task.objects.filter(repository__kind=Repository.Kind.GITHUB, repository__enabled=True)
        .filter(conversation | outcome_pending(now))
        .select_related("repository")
        .order_by("id")
    )


def poll_task(client: GitHubClient, task: Task) -> list[str]:
    """Look at one task's issue and PR for comments, reviews and failing checks the webhook
    did not bring (or that arrived while no webhook was configured), and at what became of its
    PR (merged, closed, reopened). Past the conversation window only the PR's outcome."""
    full_name = task.repository.full_name
    since = task.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    outcomes = []
    pull = None
    if task.pr_number and task.pr_outcome != Task.PullOutcome.MERGED:  # a merge is final
        pull = client.pull_request(full_name=full_name, number=task.pr_number)
        outcomes.append(pull_outcomes.outcome_record(task, pull, source="poll"))
    if not Task.objects.filter(in_conversation_window(timezone.now()), pk=task.pk).exists():
        return outcomes
    threads = [task.issue_number] + ([task.pr_number] if task.pr_number and task.pr_number != task.issue_number else [])
    for number in threads:
        for c in client.issue_comments_since(full_name=full_name, number=number, since=since):
            if Round.objects.filter(task=task, trigger_key=f"comment:{c['id']}").exists():
                continue
            outcomes.append(comment_handle(client, task=task, comment=_comment(c), reply_to=number, source="poll", frozen=False))
    if task.pr_number:
        for review in client.pull_request_reviews(full_name=full_name, number=task.pr_number):
            summary = review_summary(review)
            submitted = github_time(summary["submitted_at"])
            if submitted is None or submitted < task.created_at or Round.objects.filter(task=task, trigger_key=f"review:{summary['id']}").exists():
                continue
            if str(summary["state"]).lower() not in ("changes_requested", "commented"):
                continue
            outcomes.append(review_handle(client, task=task, review=summary, source="poll"))
        if task.status not in Task.ACTIVE:
            pull = pull or client.pull_request(full_name=full_name, number=task.pr_number)
            sha = str((pull.get("head") or {}).get("sha") or "")
            if sha and not Round.objects.filter(task=task, trigger_key=f"ci:{sha}").exists():
                outcomes.append(checks_handle(client, task=task, sha=sha, source="poll"))
    return outcomes


class ConversationPoller:
    """One task per call, each task at most every `interval` seconds."""

    def __init__(self, client: GitHubClient, *, interval: float | None = None):
        self.client = client
        self._interval = interval
        self._last: dict[int, float] = {}
        self._queue: list[int] = []

    @property
    def interval(self) -> float:
        return self._interval if self._interval is not None else settings.TACX["CONVERSATION_POLL_INTERVAL"]

    def poll_one(self) -> bool:
        import time

        now = time.monotonic()
        if not self._queue:
            self._queue = [
                pk
                for pk in tasks_to_poll(timezone.now()).values_list("id", flat=True)
                if now - self._last.get(pk, -1e9) >= self.interval
            ]
            if not self._queue:
                return False
        task = Task.objects.filter(pk=self._queue.pop(0)).select_related("repository").first()
        if task is None:
            return True
        self._last[task.pk] = now
        try:
            outcomes = poll_task(self.client, task)
        except GitHubError as exc:
            if exc.retry_after is not None:
                raise  # a rate limit: the coordinator holds every GitHub step
            log.warning("task %s: polling its conversation failed: %s", task.pk, exc)
            return True
        for what in outcomes:
            if not what.startswith(("ignored", "duplicate")):
                log.info("task %s: %s", task.pk, what)
        return True
