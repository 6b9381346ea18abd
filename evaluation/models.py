"""The evaluation tables: a run of one workflow over a set of instances (`EvalRun`) and what came
of each instance (`EvalResult`). Each instance runs as a normal `pipeline.Task`; the result row
holds the claim (pending -> running -> grading -> done, each a conditional update), so a driver
that dies and is started again (`eval_run --resume`) loses no instance and starts none twice."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.urls import reverse
from django.utils import timezone

ZERO = Decimal("0")


class EvalRun(models.Model):
    """One workflow run over a set of instances. Runs started together (one `eval_run` with
    several `--workflow`) share `batch`; runs over the same instances share `instances_digest`,
    and the comparison page lines them up."""

    class Status(models.TextChoices):
        RUNNING = "running"
        FINISHED = "finished"

    name = models.CharField(max_length=200, blank=True)
    batch = models.CharField(max_length=64, blank=True, help_text="Runs started by one eval_run command")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    workflow_source = models.CharField(max_length=500, blank=True, help_text="Where the workflow came from (a file name)")
    workflow_text = models.TextField(help_text="The workflow as run: the given one, pr_creation replaced by recording the diff")
    workflow_fingerprint = models.CharField(max_length=64, help_text="sha256 of the workflow as run (its stages, prompts, models, limits)")
    instances_source = models.CharField(max_length=500, blank=True)
    instances_digest = models.CharField(max_length=64, help_text="sha256 of the sorted instance ids")
    input_errors = models.JSONField(default=list, blank=True, help_text="Lines of the instances file that are not instances")
    test_runner = models.JSONField(default=list, help_text="argv of the test runner; test ids are appended")
    test_timeout = models.FloatField(default=120.0, help_text="Seconds per test")
    concurrency = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"eval run {self.pk} {self.name or self.workflow_source} ({self.workflow_fingerprint[:12]})"

    def get_absolute_url(self) -> str:
        return reverse("dashboard:eval-compare") + f"?runs={self.pk}"


class EvalResult(models.Model):
    """One instance of one run: its claim, its task, its figures and its outcome."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"  # its task exists and runs through the stage jobs
        GRADING = "grading"  # its task finished; the tests run
        DONE = "done"

    class Outcome(models.TextChoices):
        RESOLVED = "resolved"
        UNRESOLVED = "unresolved"
        EMPTY_PATCH = "empty_patch"
        AGENT_ERROR = "agent_error"
        TIMEOUT = "timeout"
        BUDGET_EXCEEDED = "budget_exceeded"
        # The instance itself cannot be evaluated (its base_commit does not exist, its
        # test_patch does not apply, its repository is not on this machine); no agent ran.
        ERROR = "error"

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    position = models.PositiveIntegerField()
    instance_id = models.CharField(max_length=200)
    instance = models.JSONField(help_text="The instance as given (SWE-bench fields)")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    reason = models.TextField(blank=True, help_text="Why it ended so (the task's reason, the grading's, the instance's problem)")
    task = models.ForeignKey("pipeline.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="eval_results")
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=ZERO)
    wall_seconds = models.FloatField(null=True, blank=True, help_text="From the task's start to its end (grading not included)")
    grading_seconds = models.FloatField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Stage attempts of the task")
    rounds = models.PositiveIntegerField(default=0, help_text="Building rounds of the task")
    diff = models.TextField(blank=True, help_text="What the agent changed: the branch against base_commit")
    tests = models.JSONField(default=dict, blank=True, help_text="Verdict per FAIL_TO_PASS / PASS_TO_PASS test")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "instance_id"], name="one_result_per_instance_and_run")]
        indexes = [
            # The driver: the next pending result, and the running ones to look at (services).
            models.Index(fields=["run", "status", "position"], name="eval_result_run_status"),
        ]

    def __str__(self) -> str:
        return f"{self.instance_id} in run {self.run_id}: {self.outcome or self.status}"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens
