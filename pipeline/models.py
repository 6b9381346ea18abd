"""The domain tables of TAC-X. They are the source of truth: a process may die at any line and
what these rows say must still be true (claims by conditional update, leases with heartbeats,
a StageResult saved for every attempt)."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

ZERO = Decimal("0")


class Repository(models.Model):
    class Kind(models.TextChoices):
        GITHUB = "github", "GitHub"
        GITLAB = "gitlab", "GitLab"
        LOCAL = "local", "Local"

    class TrackerKind(models.TextChoices):
        """Where a repository's issues come from when not from its forge (`pipeline.trackers`)."""

        FORGE = "", "the forge's own issues"
        GITHUB = "github", "GitHub"
        GITLAB = "gitlab", "GitLab"
        LINEAR = "linear", "Linear"
        JIRA = "jira", "Jira"

    # The forge: where the code lives and pull/merge requests go (`pipeline.forges`).
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.GITHUB)
    full_name = models.CharField(max_length=200, help_text="owner/name on GitHub, or a name for a local repository")
    local_path = models.CharField(max_length=1000, blank=True, help_text="Path of the repository on disk (local kind)")
    clone_url = models.CharField(max_length=1000, blank=True)
    default_branch = models.CharField(max_length=200, default="main")
    trigger_label = models.CharField(max_length=100, default="rpi-auto")
    enabled = models.BooleanField(default=True)
    max_concurrent_tasks = models.PositiveIntegerField(default=2)
    draft_prs = models.BooleanField(default=True)
    allow_non_writers = models.BooleanField(
        default=False, help_text="Let labels from people without write access start tasks (risky)."
    )
    daily_budget_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    daily_budget_tokens = models.BigIntegerField(null=True, blank=True)
    memory_auto_accept = models.BooleanField(
        default=False,
        help_text="Use the memory entries this repository's own tasks propose without a person accepting them first "
        "(risky: whoever writes an issue can steer what the agent proposes).",
    )
    daily_budget_on_exceed = models.CharField(
        max_length=10,
        choices=[("fail", "fail"), ("pause", "pause")],
        default="fail",
        help_text="When the daily budget is reached by a running agent: fail its task, or pause it until a person answers.",
    )
    workflow_text = models.TextField(
        blank=True,
        help_text="A workflow kept in TAC-X for this repository (set on its dashboard page): when set, its tasks use it "
        "instead of the repository's .tac/workflow.yaml. A task's own override still comes first.",
    )
    forge_url = models.CharField(
        max_length=500,
        blank=True,
        help_text="Base URL of a self-hosted forge (e.g. https://gitlab.example.com); empty: the kind's default (GITLAB_URL)",
    )
    tracker_kind = models.CharField(
        max_length=20, choices=TrackerKind.choices, blank=True, default="", help_text="Issues from another tracker than the forge"
    )
    tracker_settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="The tracker's settings for this repository (e.g. Linear team and label, Jira project or JQL); never secrets",
    )
    # The last poll of this repository's issue source that completed (shown on /health).
    poll_succeeded_at = models.DateTimeField(null=True, blank=True)
    # Conditional polling: GitHub answers 304 (free) when nothing changed since this ETag.
    poll_etag = models.CharField(max_length=200, blank=True)
    polled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "repositories"
        constraints = [models.UniqueConstraint(fields=["kind", "full_name"], name="unique_repository_name")]

    def __str__(self) -> str:
        return self.full_name

    @property
    def origin(self) -> str:
        """What `git clone` / `git push` talk to."""
        return self.local_path if self.kind == self.Kind.LOCAL and not self.clone_url else self.clone_url

    @property
    def tracker(self) -> str:
        """The kind of tracker this repository's triggers come from ("local" has none)."""
        return self.tracker_kind or self.kind


class Task(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        WAITING = "waiting"  # held back by a budget until it resets
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        BUDGET_EXCEEDED = "budget_exceeded"
        SKIPPED = "skipped"  # trigger refused (e.g. labeler without write access)
        AWAITING_APPROVAL = "awaiting_approval"  # planned; waits for `/tacx approve` (workflow `approval: plan`)
        # A budget with `on_exceed: pause` was reached: waits for a person to raise it or end the
        # task (`/tacx budget`, the dashboard, the API), or for BUDGET_PAUSE_SECONDS to pass.
        PAUSED = "paused", "paused: budget"

    class PullOutcome(models.TextChoices):
        """What became of the task's pull request on GitHub (empty: it has none)."""

        OPEN = "open"
        MERGED = "merged"
        CLOSED = "closed", "closed unmerged"

    ACTIVE = (Status.QUEUED, Status.WAITING, Status.RUNNING, Status.AWAITING_APPROVAL, Status.PAUSED)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.BUDGET_EXCEEDED, Status.SKIPPED)

    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="tasks")
    issue_number = models.PositiveIntegerField()
    # A tracker whose issues are named by a key, not a number (Linear "ENG-123", Jira "PROJ-7"):
    # the key, and `issue_number` is its numeric part (for display and branch names only). Empty
    # for GitHub and GitLab, whose issue number (GitLab: the project's `iid`) names the issue.
    tracker_issue_key = models.CharField(max_length=100, blank=True, default="")
    title = models.CharField(max_length=500)
    body = models.TextField(blank=True)
    issue_url = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    status_reason = models.TextField(blank=True)
    triggered_by = models.CharField(max_length=100, blank=True)
    trigger_source = models.CharField(max_length=20, blank=True)  # webhook | poll | api | admin | cli
    triggered_at = models.DateTimeField(default=timezone.now)
    branch = models.CharField(max_length=250, blank=True)
    worktree_path = models.CharField(max_length=1000, blank=True)
    worktree_host = models.CharField(max_length=200, blank=True, help_text="Machine that holds the worktree")
    setup_host = models.CharField(
        max_length=200, blank=True, help_text="Machine whose worktree ran the workflow's setup hook successfully"
    )
    base_commit = models.CharField(max_length=64, blank=True)
    head_commit = models.CharField(
        max_length=64,
        blank=True,
        help_text="Where the branch must be when the next stage starts: the head the last successful stage pushed",
    )
    workflow = models.JSONField(default=dict, blank=True, help_text="The workflow config as used (snapshot)")
    workflow_source = models.CharField(max_length=300, blank=True)
    workflow_override = models.TextField(
        blank=True, help_text="Workflow YAML given when the task was created; used instead of the repository's file"
    )
    review_round = models.PositiveIntegerField(default=1)
    pr_url = models.CharField(max_length=500, blank=True)
    pr_number = models.PositiveIntegerField(null=True, blank=True)
    pr_opened_at = models.DateTimeField(null=True, blank=True, help_text="When TAC-X opened the task's first pull request")
    pr_outcome = models.CharField(
        max_length=10, choices=PullOutcome.choices, blank=True, help_text="What became of the pull request: open, merged or closed unmerged"
    )
    pr_outcome_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="GitHub's time of that outcome (merged_at, closed_at, or the reopening's updated_at); empty while open as first opened",
    )
    pr_outcome_source = models.CharField(max_length=20, blank=True, help_text="What told TAC-X: webhook or poll")
    progress_comment_id = models.BigIntegerField(null=True, blank=True)
    trigger_labels = models.JSONField(default=list, blank=True, help_text="The issue's labels when the task was triggered")
    plan_comment_id = models.BigIntegerField(null=True, blank=True, help_text="The issue comment showing the plan awaiting approval")
    plan_comment_result = models.ForeignKey(
        "StageResult", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="The plan that comment shows"
    )
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=ZERO)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worktree_removed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Who may do what (dashboard, API, websockets, admin): see "Roles" in the README.
        # view_task reads everything, add_task creates tasks, and these two act on them.
        permissions = [("retry_task", "Can retry a task"), ("cancel_task", "Can cancel a task"), ("approve_task", "Can approve a task's plan")]
        constraints = [
            # A duplicate trigger (webhook redelivery, poller, two coordinators) cannot create a
            # second active task for one issue, whatever the race.
            models.UniqueConstraint(
                fields=["repository", "issue_number"],
                condition=Q(status__in=["queued", "waiting", "running", "awaiting_approval", "paused"], tracker_issue_key=""),
                name="one_active_task_per_issue",
            ),
            # The same for issues named by a key (Linear, Jira): two teams' ENG-7 and OPS-7 share
            # the number 7 but are two issues.
            models.UniqueConstraint(
                fields=["repository", "tracker_issue_key"],
                condition=Q(status__in=["queued", "waiting", "running", "awaiting_approval", "paused"]) & ~Q(tracker_issue_key=""),
                name="one_active_task_per_issue_key",
            ),
        ]
        indexes = [
            # Dispatch: oldest queued tasks first (coordinator.dispatch).
            models.Index(fields=["status", "created_at"], name="task_status_created"),
            # Task list (dashboard, API): newest first with LIMIT, without sorting every task.
            models.Index(fields=["-created_at", "-id"], name="task_created_desc"),
            # The conversation poller: open pull requests whose outcome is still to learn.
            models.Index(fields=["pr_outcome", "pr_opened_at"], name="task_pr_outcome"),
        ]

    def __str__(self) -> str:
        return f"{self.repository.full_name}{self.issue_ref}: {self.title[:60]}"

    @property
    def issue_ref(self) -> str:
        """How people name the issue: "#12" (GitHub, GitLab, local) or the tracker's key "ENG-123"."""
        return self.tracker_issue_key or f"#{self.issue_number}"

    def get_absolute_url(self) -> str:
        return reverse("dashboard:task-detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def current_stage(self) -> Stage | None:
        return self.stages.exclude(status__in=[Stage.Status.PENDING, Stage.Status.SUCCEEDED]).order_by("position").first()


class Stage(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        PAUSED = "paused"  # stopped by a budget that pauses; queued again when it is raised

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="stages")
    name = models.CharField(max_length=50)
    position = models.PositiveIntegerField()
    provider = models.CharField(max_length=50)
    model = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    failed_attempts = models.PositiveIntegerField(default=0, help_text="Failed attempts since the stage was last (re)queued")
    max_attempts = models.PositiveIntegerField(default=3)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When its current q2 job was enqueued")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Best of N (issue 25, pipeline.services.candidates): a candidate is a stage of its own (its
    # claim, lease, attempts and results) under the stage it runs for, numbered from 1, at the
    # same position. `candidate_info`: a candidate's spec, branch, pass, tests and diff; the
    # parent's selections, one per pass.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="candidates")
    candidate = models.PositiveSmallIntegerField(default=0)
    candidate_info = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["task", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["task", "position"], condition=models.Q(parent__isnull=True), name="unique_stage_position"
            ),
            models.UniqueConstraint(
                fields=["parent", "candidate"], condition=models.Q(parent__isnull=False), name="unique_stage_candidate"
            ),
        ]
        indexes = [
            # Reaper: running stages whose lease expired (coordinator.reaping).
            models.Index(fields=["status", "lease_expires_at"], name="stage_status_lease"),
            # Reaper: queued stages whose q2 job may be lost (services.stage_requeue_lost).
            models.Index(fields=["status", "queued_at"], name="stage_status_queued"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id}/{self.name}"

    @property
    def is_agent_stage(self) -> bool:
        return self.name != "pr_creation"


class StageResult(models.Model):
    """One attempt of one stage, saved whatever happened."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        TIMED_OUT = "timed_out"
        STALLED = "stalled"
        BUDGET_EXCEEDED = "budget_exceeded"
        CANCELLED = "cancelled"
        WORKER_LOST = "worker_lost"
        RUNNING = "running"

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="results")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="results")
    attempt = models.PositiveIntegerField()
    round = models.PositiveIntegerField(default=1)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.RUNNING)
    success = models.BooleanField(default=False)
    started_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    output_file = models.CharField(max_length=300, blank=True)
    output_text = models.TextField(blank=True, help_text="plan.md / review / final message, as left by the agent")
    verdict = models.CharField(max_length=20, blank=True)
    provider = models.CharField(max_length=50, blank=True)
    model = models.CharField(max_length=100, blank=True)
    cli_version = models.CharField(max_length=100, blank=True)
    prompt = models.TextField(blank=True)
    prompt_hash = models.CharField(max_length=64, blank=True)
    base_commit = models.CharField(max_length=64, blank=True)
    head_commit = models.CharField(max_length=64, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=ZERO)
    turns = models.PositiveIntegerField(default=0)
    session_id = models.CharField(max_length=200, blank=True)
    resumed_session_id = models.CharField(max_length=200, blank=True, help_text="The earlier session this attempt resumed")
    followup = models.ForeignKey("Round", null=True, blank=True, on_delete=models.SET_NULL, related_name="results")
    # The workflow's test_command, run by TAC-X after a building attempt ("" when not run).
    tests_status = models.CharField(max_length=20, blank=True, help_text="passed | failed | timed_out | error")
    tests_exit_code = models.IntegerField(null=True, blank=True)
    tests_duration = models.FloatField(null=True, blank=True)
    tests_output = models.TextField(blank=True, help_text="Tail of the test command's output")
    worker = models.ForeignKey("Worker", null=True, blank=True, on_delete=models.SET_NULL, related_name="results")
    memory_entries = models.JSONField(
        default=list, blank=True, help_text="Ids of the repository's memory entries this attempt's prompt carried"
    )

    class Meta:
        ordering = ["stage__position", "attempt"]
        constraints = [models.UniqueConstraint(fields=["stage", "attempt"], name="unique_attempt_per_stage")]

    def __str__(self) -> str:
        return f"{self.stage} attempt {self.attempt}: {self.outcome}"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def duration_seconds(self) -> float | None:
        if not self.completed_at:
            return None
        return (self.completed_at - self.started_at).total_seconds()


class Worker(models.Model):
    """A process doing TAC-X work: an agent run (stage attempt) or the coordinator."""

    class Kind(models.TextChoices):
        AGENT = "agent"
        COORDINATOR = "coordinator"
        SLOT = "slot"  # a django-q2 worker process: a stage host of `slots` attempts (pipeline.slots)

    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.AGENT)
    name = models.CharField(max_length=200, help_text="Lease owner id")
    host = models.CharField(max_length=200)
    pid = models.IntegerField(null=True, blank=True, help_text="The TAC-X process")
    pgid = models.IntegerField(null=True, blank=True, help_text="Process group of the agent it runs")
    stage = models.ForeignKey(Stage, null=True, blank=True, on_delete=models.SET_NULL, related_name="workers")
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    exited_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    slots = models.PositiveIntegerField(default=1, help_text="Attempts this stage host runs at once (kind slot)")

    class Meta:
        indexes = [models.Index(fields=["kind", "exited_at"], name="worker_kind_exited")]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


class AgentEvent(models.Model):
    """The live stream: agent events of an attempt, and task/stage status changes.

    Ids only grow, so a client resumes after the last id it saw (nothing lost, nothing twice).
    """

    class Kind(models.TextChoices):
        SYSTEM = "system"
        MESSAGE = "message"
        TOOL_CALL = "tool_call"
        TOOL_RESULT = "tool_result"
        USAGE = "usage"
        ERROR = "error"
        RESULT = "result"
        RAW = "raw"
        STATUS = "status"  # task / stage state change (no attempt)
        SANDBOX = "sandbox"  # a connection the agent sandbox refused (host, port, reason, time)
        OUTPUT = "output"  # a stdout line of a non-model program (the command provider)
        STDERR = "stderr"  # a stderr line of a command stage

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")
    result = models.ForeignKey(StageResult, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField(default=0, help_text="Order within the attempt")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Websocket/API cursor reads: events of a task after an id.
            models.Index(fields=["task", "id"], name="event_task_id"),
            # Progress comments and result panels: the newest events of one kind of a task
            # (coordinator.progress), without reading the whole transcript.
            models.Index(fields=["task", "kind", "id"], name="event_task_kind_id"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class TaskWorktree(models.Model):
    """A machine that holds (or held) a worktree of a task: every machine that ran a stage of it.
    Each machine's coordinator removes its own once the task is finished (coordinator.reaping)."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="worktrees")
    host = models.CharField(max_length=200)
    path = models.CharField(max_length=1000)
    created_at = models.DateTimeField(default=timezone.now)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "host", "path"], name="unique_task_worktree")]
        indexes = [
            # Clean-up: this host's worktrees not yet removed (coordinator.reaping.clean_one_worktree).
            models.Index(fields=["host", "removed_at"], name="task_worktree_host_removed"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id}@{self.host}:{self.path}"


class SentAlert(models.Model):
    """One row per alert incident that must be sent once across every process and machine
    (e.g. one stale period of the coordinator heartbeat): the unique key is the claim."""

    key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.key


class Round(models.Model):
    """One turn of the conversation on a task's pull request or issue: a review, an `@tacx`
    comment, a failing check, plan feedback, or a `/tacx` command.

    Not to be confused with `Task.review_round` (reviewer → builder loops inside a pass). A
    round re-runs building → reviewing (→ the same PR) with the trigger's text, frozen here
    when it was triggered. `trigger_key` names what triggered it (`comment:<id>`,
    `review:<id>`, `ci:<sha>`): the unique constraint makes a webhook redelivery and the poller
    seeing the same comment one round. At most one round per task runs at a time.
    """

    class Kind(models.TextChoices):
        REVIEW = "review"
        COMMENT = "comment"
        CI_FIX = "ci_fix"
        REPLAN = "replan"
        COMMAND = "command"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        REFUSED = "refused"  # not allowed (no write access, limits) — the reason says why
        CANCELLED = "cancelled"
        DONE = "done"  # a command that was carried out

    OPEN = (Status.QUEUED, Status.RUNNING)

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="rounds")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    trigger_key = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    reason = models.TextField(blank=True)
    source = models.CharField(max_length=20, blank=True)  # webhook | poll | api | dashboard
    actor = models.CharField(max_length=100, blank=True)
    text = models.TextField(blank=True, help_text="The trigger's text as it was when triggered (sanitised)")
    context = models.JSONField(default=dict, blank=True, help_text="Inline comments, failing checks, where to reply")
    head_sha = models.CharField(max_length=64, blank=True)
    triggered_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    first_review_round = models.PositiveIntegerField(default=1, help_text="task.review_round when the round started")
    reacted_at = models.DateTimeField(null=True, blank=True)
    reply_claimed_at = models.DateTimeField(null=True, blank=True)
    reply_comment_id = models.BigIntegerField(null=True, blank=True)
    replied_at = models.DateTimeField(null=True, blank=True)
    resumed_session_id = models.CharField(max_length=200, blank=True)
    tokens_saved = models.BigIntegerField(default=0, help_text="Input tokens a cold start would have re-read (estimate)")
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=ZERO)

    class Meta:
        ordering = ["task", "id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "trigger_key"], name="one_round_per_trigger"),
            models.UniqueConstraint(fields=["task"], condition=Q(status="running"), name="one_running_round_per_task"),
        ]
        indexes = [
            # Coordinator: queued rounds oldest first; running rounds to finish (coordinator.rounds).
            models.Index(fields=["status", "created_at"], name="round_status_created"),
        ]

    def __str__(self) -> str:
        return f"round {self.pk} of task {self.task_id} ({self.kind}: {self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN

    def started_by(self) -> str:
        """What started it, for people: "review by X", "comment by Y", "check Z failed on SHA"."""
        if self.kind == self.Kind.CI_FIX:
            names = ", ".join(c.get("name", "?") for c in self.context.get("checks", [])) or "a check"
            return f"{names} failed on {self.head_sha[:7]}"
        if self.kind == self.Kind.REVIEW:
            return f"review by {self.actor}"
        if self.kind == self.Kind.REPLAN:
            return f"plan feedback by {self.actor}"
        if self.kind == self.Kind.COMMAND:
            return f"/tacx {self.context.get('command', '')} by {self.actor}"
        return f"comment by {self.actor}"


class MemoryEntry(models.Model):
    """One lesson in a repository's memory (how to build it, a quirk of its tests, a convention),
    carried into the prompts of its later tasks.

    An agent proposes entries through the hand-back gate (pipeline.attempt.memory); because an
    issue's author can steer the agent, an agent's entry is only `proposed` until a person with
    the `change_memoryentry` permission accepts it (or the repository sets `memory_auto_accept`).
    Only `accepted` entries reach prompts. An entry a person adds is accepted at once.
    """

    class Status(models.TextChoices):
        PROPOSED = "proposed"
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="memory")
    text = models.TextField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROPOSED)
    source_task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="memory_proposed", help_text="The task whose agent proposed it"
    )
    source_result = models.ForeignKey(
        StageResult, null=True, blank=True, on_delete=models.SET_NULL, related_name="memory_proposed", help_text="The attempt that proposed it"
    )
    proposer = models.CharField(max_length=200, help_text='Who wrote it: "agent (claude, reviewing)" or a username')
    created_at = models.DateTimeField(default=timezone.now)
    decided_by = models.CharField(max_length=150, blank=True, help_text="Who accepted or rejected it")
    decided_at = models.DateTimeField(null=True, blank=True)
    edited_by = models.CharField(max_length=150, blank=True)
    edited_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["repository", "id"]
        verbose_name_plural = "memory entries"
        indexes = [
            # Every agent prompt: the accepted entries of one repository in id order
            # (services.memory_in_prompts); the memory page filters by status too.
            models.Index(fields=["repository", "status", "id"], name="memory_repository_status"),
        ]

    def __str__(self) -> str:
        return f"{self.repository.full_name} memory #{self.pk} ({self.status}): {self.text[:60]}"


class BudgetPause(models.Model):
    """A budget with `on_exceed: pause` stopped (or refused to start) an attempt: the task waits
    for a person to raise the limit or end it, or for the pause to expire.

    Life: `stopping` (written as soon as the meter stops the agent, before its work is committed
    and pushed: a worker that dies here leaves this row, and the reaper pauses the task instead
    of retrying the stage) → `waiting` (the task is `paused`) → `raised` (the stage runs again,
    with the raise added to the limit) | `stopped` (a person ended the task) | `expired` (nobody
    answered in time) | `cancelled` (the task ended otherwise). The raise of a `raised` row
    counts in the limit of every later attempt of the task (`pipeline.budgets`).
    """

    class Status(models.TextChoices):
        STOPPING = "stopping"
        WAITING = "waiting"
        RAISED = "raised"
        STOPPED = "stopped"
        EXPIRED = "expired"
        CANCELLED = "cancelled"

    OPEN = (Status.STOPPING, Status.WAITING)

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="budget_pauses")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="budget_pauses")
    result = models.ForeignKey(StageResult, on_delete=models.CASCADE, related_name="budget_pauses", help_text="The attempt it stopped")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.STOPPING)
    scope = models.CharField(max_length=30, help_text="stage, task, repository daily or global daily")
    stage_name = models.CharField(max_length=50, blank=True, help_text="For a stage budget: which stage's")
    reason = models.TextField(blank=True, help_text="What the meter said when it stopped the agent")
    limit_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True, help_text="The limit reached (raises included)")
    limit_tokens = models.BigIntegerField(null=True, blank=True)
    spent_usd = models.DecimalField(max_digits=12, decimal_places=6, default=ZERO, help_text="Spend against the limit when it paused")
    spent_tokens = models.BigIntegerField(default=0)
    estimate_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True, help_text="What the rest of the workflow may cost")
    estimate_tokens = models.BigIntegerField(null=True, blank=True)
    estimate = models.JSONField(default=dict, blank=True, help_text="The estimate per stage and how it was made")
    created_at = models.DateTimeField(default=timezone.now)
    paused_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.CharField(max_length=100, blank=True)
    answer_source = models.CharField(max_length=20, blank=True)  # github | dashboard | api | timeout
    raise_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    raise_tokens = models.BigIntegerField(null=True, blank=True)
    comment_id = models.BigIntegerField(null=True, blank=True, help_text="The question posted on the issue or pull request")
    comment_claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["task", "id"]
        constraints = [
            # One open pause per task, whatever the race between a worker and the reaper.
            models.UniqueConstraint(fields=["task"], condition=Q(status__in=["stopping", "waiting"]), name="one_open_budget_pause_per_task"),
        ]
        indexes = [
            # Coordinator: waiting pauses past their time (services.budget_pause_expire).
            models.Index(fields=["status", "expires_at"], name="budget_pause_status_expires"),
        ]

    def __str__(self) -> str:
        return f"budget pause {self.pk} of task {self.task_id} ({self.scope}: {self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN
