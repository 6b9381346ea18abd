"""The coordinator: a loop made of single steps (healthchecks' `sendalerts`).

Each step does one unit of work and returns whether it did any, so the loop calls it again at
once while there is work and sleeps a short tick when no step had any; a webhook delivery
recorded on this machine wakes it at once (`wakeup`). A step that raises is
logged and backed off (1 s, 2 s, 4 s ... 5 min) instead of crash-looping; units inside a step
(a delivery, a task, a comment, a repository) have their own back-off too. SIGTERM only sets
`shutdown`: the current step finishes and the loop ends.

Steps (what each does; the order of a cycle is `self.steps`):
  handle_one_delivery  a recorded webhook delivery becomes a task / skip / cancel / round
  start_one_round      a queued round whose task is idle: building again on the same branch
  poll_one_source      one repository due for polling (GitHub issues with the trigger label)
  dispatch_one_task    start the oldest queued task the limits allow
  reap_one_stage       a stage whose lease expired: kill its local agent, record, re-queue
  requeue_lost_jobs    queued stages whose q2 job was lost before the claim: enqueue again
  kill_one_orphan      agent process groups on this host no running stage owns
  poll_one_conversation  one task's PR/issue: comments, reviews, failing checks (rounds)
  finish_one_round     a running round whose task stopped: totals, what changed
  react_one_round      👀 on the comment that started a round
  reply_one_round      the reply of a finished round (what changed, the cost) or a command
  post_one_plan        the plan of a task awaiting approval, as an issue comment
  post_one_pause       the question of a task paused at a budget, on its PR or issue
  expire_one_pause     a budget pause nobody answered within TACX_BUDGET_PAUSE_SECONDS: the task ends
  sync_one_comment     one task's progress comment on GitHub
  sync_one_tracker_comment  one task's progress comment on another tracker (GitLab, Linear, Jira)
  clean_one_worktree   the worktree of a task finished longer ago than the retention
  prune_old_events     transcripts of tasks finished longer ago than TACX_EVENT_RETENTION_DAYS
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from pipeline import services
from pipeline.github import GitHubClient, GitHubError
from pipeline.models import Repository, Worker
from pipeline.services import rounds

from . import (
    conversation_poller,
    deliveries,
    forge_replies,
    forge_statuses,
    heartbeat,
    reaping,
    replies,
    tracker_progress,
    tracker_replies,
    wakeup,
)
from .backoff import Backoff
from .checks import CheckSyncer
from .dispatch import Dispatcher, start_round
from .github_source import GitHubSource
from .progress import CommentSyncer
from .sources import IssueSource, SourceUnavailable
from .tracker_flow import tracker_sources

log = logging.getLogger(__name__)

DEFAULT_TICK_SECONDS = 0.2
MAX_UNITS_PER_STEP = 50
# Steps a user waits for (a webhook becoming a task, a task starting) run every tick; the others
# (polling's bookkeeping, reaping, lost jobs, orphans, comments, checks, clean-up) at most every
# TACX_HOUSEKEEPING_SECONDS while they find nothing: an idle coordinator's queries per second
# are those of two steps, not of ten. A step that did work ends every resting step's wait: work
# makes work for the others (a delivery queues a round, which start_one_round starts), and it
# must not sit out the rest of a housekeeping interval (issue 23: half the `@tacx` comments
# waited up to a second for their round).
EVERY_TICK = frozenset({"handle_one_delivery", "dispatch_one_task"})


def refresh_connections() -> None:
    """Drop database connections that are broken or past CONN_MAX_AGE (a DB restart must not
    kill the coordinator). Skipped inside a transaction: only tests run the loop in one."""
    if not connection.in_atomic_block:
        close_old_connections()


class Coordinator:
    def __init__(
        self,
        *,
        client: GitHubClient | None = None,
        sources: dict[str, IssueSource] | None = None,
        host: str | None = None,
        tick: float | None = None,
        poll_interval: float | None = None,
    ):
        self.client = client or GitHubClient(timeout=10.0)
        # One source per tracker kind: GitHub's, and each configured tracker of `pipeline.trackers`.
        self.sources = (
            sources if sources is not None else {Repository.Kind.GITHUB: GitHubSource(self.client), **tracker_sources()}
        )
        self.host = host or socket.gethostname()
        self.tick = tick if tick is not None else settings.TACX.get("COORDINATOR_TICK_SECONDS", DEFAULT_TICK_SECONDS)
        self._poll_interval = poll_interval
        self.shutdown = False
        self._wake = wakeup.Waiter()
        self.step_backoff = Backoff(base=1.0, cap=300.0)
        self.unit_backoff = Backoff(base=5.0, cap=900.0)
        self.dispatcher = Dispatcher()
        self.orphans = reaping.OrphanKiller(host=self.host)
        self.lost_jobs = reaping.LostJobFinder()
        self.comments = CommentSyncer(self.client)
        self.conversations = conversation_poller.ConversationPoller(self.client)
        self.checks = CheckSyncer(self.client)
        self.worker: Worker | None = None
        self._poll_round: list[int] = []
        self._last_beat = 0.0
        self._next_prune = 0.0
        self.housekeeping = float(settings.TACX.get("HOUSEKEEPING_SECONDS", 1.0))
        self._idle_until: dict[str, float] = {}
        self.steps: list[Callable[[], bool]] = [
            self.handle_one_delivery,
            # Right after the deliveries: a `@tacx` comment's round starts before this cycle
            # polls GitHub (issue 23: the polls came first and delayed it by their requests).
            self.start_one_round,
            self.poll_one_source,
            self.poll_one_conversation,
            self.dispatch_one_task,
            self.finish_one_round,
            self.react_one_round,
            self.reply_one_round,
            self.post_one_plan,
            self.post_one_pause,
            self.expire_one_pause,
            self.reap_one_stage,
            self.requeue_lost_jobs,
            self.kill_one_orphan,
            self.sync_one_comment,
            self.sync_one_tracker_comment,
            self.sync_one_check,
            self.clean_one_worktree,
            self.prune_old_events,
        ]

    @property
    def poll_interval(self) -> float:
        return self._poll_interval if self._poll_interval is not None else settings.TACX["POLL_INTERVAL"]

    # --- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        """Until `stop()` (SIGTERM): cycles of steps, a short sleep when nothing happened."""
        log.info("coordinator started on %s (tick %.2f s, poll interval %.0f s)", self.host, self.tick, self.poll_interval)
        if not self._wake.open():
            log.warning("no wake-up socket under %s: webhook deliveries wait for the next tick", wakeup.wake_dir())
        try:
            while not self.shutdown:
                try:
                    busy = self.run_cycle()
                except Exception:
                    # Outside any step (the heartbeat, the connection refresh): the database may
                    # be down. Wait and try again rather than exit.
                    delay = self.step_backoff.failed("cycle")
                    log.exception("coordinator cycle failed; next try in %.0f s", delay)
                    self._wake.wait(delay)
                    continue
                self.step_backoff.succeeded("cycle")
                if not busy:
                    self._wake.wait(self.tick)
        finally:
            self._wake.close()
            self.close()
        log.info("coordinator stopped")

    def run_once(self) -> bool:
        """One cycle, for tests and cron (`run_coordinator --once`). True if anything happened."""
        try:
            return self.run_cycle()
        finally:
            self.close()

    def run_cycle(self) -> bool:
        refresh_connections()
        self.beat()
        busy = False
        now = time.monotonic()
        for step in self.steps:
            name = step.__name__
            if step != self.handle_one_delivery and self._wake.woken():
                # A delivery was recorded while this cycle ran: it need not wait for the rest.
                busy = self.run_step(self.handle_one_delivery, now) or busy
            if name not in EVERY_TICK and now < self._idle_until.get(name, 0.0):
                continue  # found nothing a moment ago: housekeeping need not look every tick
            busy = self.run_step(step, now) or busy
            if self.shutdown:
                break
        return busy

    def run_step(self, step: Callable[[], bool], now: float) -> bool:
        """Units of one step until it finds no more (at most MAX_UNITS_PER_STEP); True if any."""
        did = False
        for _ in range(MAX_UNITS_PER_STEP):
            if self.shutdown or not self.guarded(step):
                break
            if not did:
                self._idle_until.clear()  # later steps look in this cycle, earlier ones in the next
            did = True
        if not did:
            self._idle_until[step.__name__] = now + self.housekeeping
        return did

    def guarded(self, step: Callable[[], bool]) -> bool:
        name = step.__name__
        if not self.step_backoff.ready(name):
            return False
        try:
            did = bool(step())
        except Exception:
            delay = self.step_backoff.failed(name)
            log.exception("coordinator step %s crashed; it rests %.0f s", name, delay)
            refresh_connections()
            return False
        self.step_backoff.succeeded(name)
        return did

    def stop(self, *_args) -> None:
        """Finish the current step and leave the loop (the SIGTERM handler)."""
        self.shutdown = True
        self._wake.set()

    def beat(self) -> None:
        """Refresh the heartbeat row (at most every HEARTBEAT_SECONDS: it is a write)."""
        now = time.monotonic()
        if self.worker is None:
            self.worker = heartbeat.heartbeat_start(host=self.host)
            self._last_beat = now
        elif now - self._last_beat >= settings.TACX["HEARTBEAT_SECONDS"]:
            heartbeat.heartbeat_beat(self.worker)
            self._last_beat = now

    def close(self) -> None:
        if self.worker is not None:
            try:
                heartbeat.heartbeat_stop(self.worker)
            except Exception:
                log.exception("could not record the coordinator's exit")
            self.worker = None

    # --- the steps -------------------------------------------------------------------------------

    def handle_one_delivery(self) -> bool:
        if not self.unit_backoff.ready("github"):
            return False
        return deliveries.delivery_handle_one(
            self.client, owner=self.worker.name if self.worker else self.host, backoff=self.unit_backoff
        )

    def poll_one_source(self) -> bool:
        """Poll the next repository of this round that is due; False when the round is done."""
        if not self._poll_round:
            due = timezone.now() - timedelta(seconds=self.poll_interval)
            kinds = list(self.sources)
            self._poll_round = list(
                Repository.objects.filter(enabled=True)
                .filter(Q(tracker_kind__in=kinds) | Q(tracker_kind="", kind__in=kinds))
                .filter(Q(polled_at__isnull=True) | Q(polled_at__lte=due))
                .order_by("id")
                .values_list("id", flat=True)
            )
            if not self._poll_round:
                return False
        while self._poll_round:
            repository = Repository.objects.filter(pk=self._poll_round.pop(0), enabled=True).first()
            if repository is None:
                continue
            source = self.sources.get(repository.tracker)
            if source is None:
                continue
            if (
                source.blocked_for() > 0
                or not self.unit_backoff.ready("github")
                or not self.unit_backoff.ready(("repository", repository.pk))
            ):
                continue
            if not services.repository_poll_claim(repository=repository, interval=self.poll_interval):
                continue  # polled recently (by us or another coordinator)
            try:
                outcome = source.poll(repository)
            except SourceUnavailable as exc:
                self.unit_backoff.hold("github", exc.retry_after or 60.0)
                log.warning("polling %s: GitHub asks us to wait %.0f s: %s", repository, exc.retry_after or 60.0, exc)
                return True
            except GitHubError as exc:
                delay = self.unit_backoff.failed(("repository", repository.pk))
                log.warning("polling %s failed (next try in %.0f s): %s", repository, delay, exc)
                return True
            except Exception:
                delay = self.unit_backoff.failed(("repository", repository.pk))
                log.exception("polling %s crashed (next try in %.0f s)", repository, delay)
                return True
            self.unit_backoff.succeeded(("repository", repository.pk))
            if isinstance(source, GitHubSource):
                services.repository_poll_succeeded(repository=repository)  # other sources record it themselves
            log.debug("polled %s: %s", repository, outcome)
            return True
        return False

    def dispatch_one_task(self) -> bool:
        return self.dispatcher.dispatch_one_task()

    def poll_one_conversation(self) -> bool:
        if not self.unit_backoff.ready("github") or self.sources.get(Repository.Kind.GITHUB) is None:
            return False
        source = self.sources[Repository.Kind.GITHUB]
        if source.blocked_for() > 0:
            return False
        try:
            return self.conversations.poll_one()
        except GitHubError as exc:
            self.unit_backoff.hold("github", exc.retry_after or 60.0)
            log.warning("polling conversations: GitHub asks us to wait %.0f s: %s", exc.retry_after or 60.0, exc)
            return True

    def start_one_round(self) -> bool:
        """Start the oldest queued round whose task is idle (it waits while the task runs, and
        while the running tasks fill the limits: a round counts as a running task)."""
        for round_ in rounds.startable()[:MAX_UNITS_PER_STEP]:
            if not self.unit_backoff.ready(("round", round_.pk)):
                continue
            try:
                outcome = start_round(round_)
            except Exception:
                delay = self.unit_backoff.failed(("round", round_.pk))
                log.exception("round %s could not be started; trying again in %.0f s", round_.pk, delay)
                return True
            if outcome == "full":
                return False  # no slot now: the next pass looks again
            if outcome != "wait":
                log.info("round %s of task %s: %s", round_.pk, round_.task_id, outcome)
                return True
        return False

    def finish_one_round(self) -> bool:
        round_ = rounds.finishable().first()
        return bool(round_ and rounds.round_finish(round_=round_))

    def _on_github(self, step) -> bool:
        """One unit of work that writes to GitHub, unless GitHub asked to back off."""
        return self.unit_backoff.ready("github") and step(self.client)

    def react_one_round(self) -> bool:
        return self._on_github(replies.react_one) or forge_replies.react_one()

    def reply_one_round(self) -> bool:
        return self._on_github(replies.reply_one) or forge_replies.reply_one() or tracker_replies.reply_one()

    def post_one_plan(self) -> bool:
        return self._on_github(replies.post_one_plan)

    def post_one_pause(self) -> bool:
        return self._on_github(replies.post_one_pause)

    def expire_one_pause(self) -> bool:
        ended = services.budget_pause_expire(limit=1)
        for pause in ended:
            log.info("task %s: budget pause %s ended unanswered", pause.task_id, pause.pk)
        return bool(ended)

    def reap_one_stage(self) -> bool:
        return reaping.reap_one_stage(host=self.host)

    def requeue_lost_jobs(self) -> bool:
        return self.lost_jobs.requeue_lost_jobs()

    def kill_one_orphan(self) -> bool:
        return self.orphans.kill_one_orphan()

    def sync_one_comment(self) -> bool:
        if not self.unit_backoff.ready("github"):
            return False
        return self.comments.sync_one_comment()

    def sync_one_tracker_comment(self) -> bool:
        """One task's progress comment on a tracker other than GitHub (GitLab, Linear, Jira)."""
        return tracker_progress.sync_one_tracker_comment()

    def sync_one_check(self) -> bool:
        """One task's stage checks: check runs or statuses on GitHub, statuses on GitLab."""
        if self.unit_backoff.ready("github") and self.checks.sync_one_check():
            return True
        return forge_statuses.sync_one_status()

    def prune_old_events(self) -> bool:
        """One batch of old transcripts (off unless TACX_EVENT_RETENTION_DAYS is set); looked at
        once a minute while there is nothing to delete."""
        days = settings.TACX.get("EVENT_RETENTION_DAYS") or 0
        if days <= 0 or time.monotonic() < self._next_prune:
            return False
        deleted = services.events_prune(older_than_days=days)
        if not deleted:
            self._next_prune = time.monotonic() + 60.0
        return bool(deleted)

    def clean_one_worktree(self) -> bool:
        return reaping.clean_one_worktree(backoff=self.unit_backoff, host=self.host)
