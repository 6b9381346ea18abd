"""The coordinator's own bookkeeping. Pipeline state (repositories, tasks, stages) lives in
`pipeline.models` and changes only through `pipeline.services`; these tables only remember what
the coordinator received from GitHub and what it last wrote there."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class WebhookDelivery(models.Model):
    """One GitHub webhook delivery we act on, recorded before anything else happens.

    The unique `delivery_id` (GitHub's `X-GitHub-Delivery`, kept on redelivery) makes a second
    delivery of the same event a no-op. The row is also the queue: the coordinator handles
    pending rows oldest first, so the webhook answers at once and no trigger is lost when the
    GitHub API is slow or a process dies.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        DONE = "done"
        IGNORED = "ignored"
        FAILED = "failed"

    delivery_id = models.CharField(max_length=100, unique=True)
    event = models.CharField(max_length=50)
    action = models.CharField(max_length=50, blank=True)
    repository_full_name = models.CharField(max_length=200, blank=True)
    issue_number = models.PositiveIntegerField(null=True, blank=True)
    sender = models.CharField(max_length=100, blank=True)
    # The parts of the payload the coordinator needs (issue, label, sender), not all 25 MB.
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    result = models.TextField(blank=True, help_text="What the coordinator did with it")
    task = models.ForeignKey("pipeline.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_by = models.CharField(max_length=200, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ("-id",)
        indexes = (
            # coordinator.deliveries: the oldest pending delivery that is due.
            models.Index(fields=["status", "next_attempt_at"], name="delivery_status_due"),
        )

    def __str__(self) -> str:
        return f"{self.event}.{self.action} {self.delivery_id}"


class ProgressComment(models.Model):
    """The one progress comment TAC-X keeps on a task's issue, and what it last wrote there.

    `last_event_id` is the last status event of the task the comment reflects: a newer one means
    the comment may be stale. `body` is compared before writing so GitHub is only asked to PATCH
    when the text really changes.
    """

    task = models.OneToOneField("pipeline.Task", on_delete=models.CASCADE, related_name="progress_comment")
    comment_id = models.BigIntegerField(null=True, blank=True)
    # The comment's id on a tracker other than GitHub (coordinator.tracker_progress): GitLab note
    # ids are numbers, Linear's are UUIDs, Jira's numeric strings.
    comment_key = models.CharField(max_length=100, blank=True)
    body = models.TextField(blank=True)
    last_event_id = models.BigIntegerField(default=0)
    # Set before the first POST: if we die before saving the id, the next try looks for the
    # marker on the issue instead of posting a second comment.
    create_attempted_at = models.DateTimeField(null=True, blank=True)
    writes = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"progress comment of task {self.task_id}"


class CoordinatorLock(models.Model):
    """Named rows locked with SELECT ... FOR UPDATE so several coordinators take turns where
    counting and acting must be one step (dispatch: "fewer than N running, so start one")."""

    name = models.CharField(max_length=50, unique=True)

    def __str__(self) -> str:
        return self.name


class TaskChecks(models.Model):
    """What TAC-X last posted to GitHub about a task's stages on its branch head: one check run
    per stage (GitHub App identity) or one commit status per stage (token identity), plus the
    optional "human approval" status.

    `posted` maps a stage name to {"sha", "id" (check run id), "sig"}: a stage is posted again
    only when its state (`sig`) or the head commit changes. `claimed_at` lets one coordinator at a
    time post for a task, so two never create two check runs for one stage.
    """

    task = models.OneToOneField("pipeline.Task", on_delete=models.CASCADE, related_name="checks")
    last_event_id = models.BigIntegerField(default=0)
    head_sha = models.CharField(max_length=64, blank=True)
    posted = models.JSONField(default=dict, blank=True)
    approval = models.CharField(max_length=20, blank=True, help_text="'' (not required), pending or success")
    approval_checked_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "task checks"

    def __str__(self) -> str:
        return f"checks of task {self.task_id}"
