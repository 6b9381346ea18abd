"""Polling GitHub: the safety net behind the webhook (GitHub does not redeliver a failed
webhook by itself).

Each poll asks for the repository's open issues carrying the trigger label with the ETag of the
last complete listing: an unchanged listing answers 304, which costs no rate limit and does
nothing here. For a changed listing, an issue becomes a task when it has no task yet that was
triggered at or after the issue's latest `labeled` event for that label; the actor of that event
must pass `authorization.labeler_refusal`. With TACX_GITHUB_LOGIN set, the open issues assigned
to that login are listed too and treated alike (the actor of the latest `assigned` event to the
login must have write access; the task's trigger_source is "assignment"). The ETag is stored only once every issue of the
listing was handled, so an issue that could not be handled now is looked at again next time.

Reconciling the other way: an unfinished task started by a label (webhook or poll) whose issue
has left the listing (closed, label removed, a missed webhook) is cancelled, but only when the
listing was confirmed current a grace period after the task was created, so a listing taken
just before a label (or a lagging replica) never cancels fresh work.

Rate limits: a 403/429 with Retry-After, a secondary limit, or X-RateLimit-Remaining at the
reserve holds every request of this source until GitHub says it may go on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from pipeline import services
from pipeline.github import GitHubClient, GitHubError
from pipeline.models import Repository, Task
from pipeline.unicode_text import unencodable_field, unencodable_message

from .sources import IssueSource, SourceUnavailable
from .triggers import ASSIGNMENT_SOURCE, IssueTrigger, own_login, trigger_handle, untrigger_handle

log = logging.getLogger(__name__)

# Requests kept in hand for the runners (pull requests) and progress comments.
RATE_LIMIT_RESERVE = 20
RECONCILE_GRACE_SECONDS = 60.0


@dataclass
class Listing:
    """The labelled open issues as last seen, and when that was confirmed current."""

    numbers: set[int] = field(default_factory=set)
    confirmed_at: datetime | None = None


def github_time(value: object) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None


class GitHubSource(IssueSource):
    kind = Repository.Kind.GITHUB

    def __init__(self, client: GitHubClient | None = None, *, reconcile_grace: float = RECONCILE_GRACE_SECONDS):
        self.client = client or GitHubClient(timeout=10.0)
        self.reconcile_grace = reconcile_grace
        self.listings: dict[int, Listing] = {}
        self.seen: dict[tuple[int, int, str], str] = {}  # (repository, issue, via) -> updated_at handled
        self.assigned_etags: dict[int, str] = {}  # repository -> ETag of its last complete assigned listing
        self._blocked_until = 0.0  # time.monotonic()

    # --- rate limits ----------------------------------------------------------------------------

    def blocked_for(self) -> float:
        remaining = self._blocked_until - time.monotonic()
        client = self.client
        if client.rate_remaining is not None and client.rate_remaining <= RATE_LIMIT_RESERVE and client.rate_reset:
            remaining = max(remaining, client.rate_reset - time.time())
        return max(0.0, remaining)

    def block(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)

    # --- one poll -------------------------------------------------------------------------------

    def poll(self, repository: Repository) -> str:
        """Poll one repository (see the module docstring). Raises SourceUnavailable when
        GitHub asks us to wait, GitHubError for anything else."""
        started = timezone.now()
        # A fresh process has no listing to reconcile against: ask once without the ETag.
        etag = repository.poll_etag if repository.pk in self.listings else ""
        try:
            listing = self.client.issues_labelled(full_name=repository.full_name, label=repository.trigger_label, etag=etag)
        except GitHubError as exc:
            self.raise_if_rate_limited(exc)
            raise
        if listing.not_modified:
            self.listings[repository.pk].confirmed_at = started
            cancelled = self.reconcile(repository)
            return "not modified" + (f", {cancelled} cancelled" if cancelled else "") + self.poll_assigned(repository)
        complete = True
        created = 0
        for issue in listing.issues:
            try:
                created += self.consider(repository, issue)
            except GitHubError as exc:
                self.raise_if_rate_limited(exc)
                complete = False
                log.warning("%s#%s: cannot handle now: %s", repository, issue.get("number"), exc)
        self.listings[repository.pk] = Listing(numbers={int(i["number"]) for i in listing.issues}, confirmed_at=started)
        if complete and listing.etag != repository.poll_etag:
            services.repository_poll_etag_set(repository=repository, etag=listing.etag)
        cancelled = self.reconcile(repository)
        return (
            f"{len(listing.issues)} labelled issue(s), {created} task(s) created"
            + (f", {cancelled} cancelled" if cancelled else "")
            + self.poll_assigned(repository)
        )

    def poll_assigned(self, repository: Repository) -> str:
        """The open issues assigned to TAC-X's login (TACX_GITHUB_LOGIN) are treated like
        labelled ones, authorized by the actor of the latest `assigned` event; nothing when no
        login is configured. Its ETag is kept in memory (a fresh process lists once in full)."""
        login = own_login()
        if not login:
            return ""
        etag = self.assigned_etags.get(repository.pk, "")
        try:
            listing = self.client.issues_assigned(full_name=repository.full_name, login=login, etag=etag)
        except GitHubError as exc:
            self.raise_if_rate_limited(exc)
            raise
        if listing.not_modified:
            return "; assigned: not modified"
        complete, created = True, 0
        for issue in listing.issues:
            try:
                created += self.consider(repository, issue, via="assignment")
            except GitHubError as exc:
                self.raise_if_rate_limited(exc)
                complete = False
                log.warning("%s#%s: cannot handle the assignment now: %s", repository, issue.get("number"), exc)
        if complete:
            self.assigned_etags[repository.pk] = listing.etag
        return f"; {len(listing.issues)} assigned issue(s), {created} task(s) created"

    def raise_if_rate_limited(self, exc: GitHubError) -> None:
        if exc.retry_after is not None:
            self.block(exc.retry_after)
            raise SourceUnavailable(str(exc), retry_after=exc.retry_after) from exc

    def consider(self, repository: Repository, issue: dict, *, via: str = "label") -> int:
        """Handle one labelled (or assigned, `via`) open issue; returns 1 when a task was created."""
        number = int(issue["number"])
        key, updated = (repository.pk, number, via), issue.get("updated_at")
        # Applying a label changes updated_at: an issue handled at this updated_at has no new
        # label (most issues of a busy listing only changed by comments, often our own).
        if updated and self.seen.get(key) == updated:
            return 0
        if where := unencodable_field(issue):
            # GitHub's JSON may carry a `\ud800` escape: nothing of it could be stored.
            log.warning("%s#%s: skipped: %s", repository, number, unencodable_message(f"issue.{where}"))
            self.seen[key] = updated
            return 0
        created = self.consider_changed(repository, issue, number, via=via)
        self.seen[key] = updated
        return created

    def consider_changed(self, repository: Repository, issue: dict, number: int, *, via: str = "label") -> int:
        tasks = Task.objects.filter(repository=repository, issue_number=number)
        if tasks.filter(status__in=Task.ACTIVE).exists():
            return 0
        latest = tasks.aggregate(at=Max("triggered_at"))["at"]
        updated_at = github_time(issue.get("updated_at"))
        # Applying a label updates the issue, so an issue unchanged since its last task has no
        # newer label: no need to spend a request on its events.
        if latest is not None and updated_at is not None and updated_at <= latest:
            return 0
        if via == "assignment":
            event = self.client.latest_assign_event(full_name=repository.full_name, number=number, login=own_login())
        else:
            event = self.client.latest_label_event(full_name=repository.full_name, number=number, label=repository.trigger_label)
        event_time = github_time((event or {}).get("created_at")) or updated_at or timezone.now()
        if latest is not None and event_time <= latest:
            return 0  # that label already had its task (finished, or refused)
        actor = (event or {}).get("actor") or {}
        labels = tuple(str(lb.get("name", "")) for lb in issue.get("labels") or [] if isinstance(lb, dict))
        source = ASSIGNMENT_SOURCE if via == "assignment" else "poll"
        trigger = IssueTrigger.of_issue(repository, issue, actor=actor, number=number, labels=labels, triggered_at=event_time, source=source, via=via)
        _, what = trigger_handle(self.client, trigger)
        return 1 if what.endswith("created") else 0

    def reconcile(self, repository: Repository) -> int:
        """Cancel label-started unfinished tasks whose issue left the listing; returns how many.
        Tasks started by an assignment (trigger_source "assignment") are not the label's."""
        listing = self.listings.get(repository.pk)
        if listing is None or listing.confirmed_at is None:
            return 0
        cutoff = listing.confirmed_at - timedelta(seconds=self.reconcile_grace)
        stale = (
            Task.objects.filter(
                repository=repository, status__in=Task.ACTIVE, trigger_source__in=["webhook", "poll"], created_at__lt=cutoff
            )
            .exclude(issue_number__in=listing.numbers)
            .exclude(rounds__status="running")  # a round on the PR: the issue's label no longer matters
            .order_by("id")
        )
        cancelled = 0
        for task in stale[:50]:
            _, what = untrigger_handle(
                repository=repository,
                number=task.issue_number,
                reason=f"the issue is closed or no longer carries the {repository.trigger_label!r} label",
            )
            cancelled += what.endswith("cancelled")
        return cancelled
