"""Explicit input and output serializers of the API (one pair per operation where it takes input).

Input serializers validate query strings and bodies and name the field in their errors; output
serializers are read-only views of the models.
"""

from __future__ import annotations

from decimal import Decimal

from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pipeline import budgets
from pipeline.models import AgentEvent, BudgetPause, MemoryEntry, Repository, Round, Stage, StageResult, Task, Worker

MAX_INT = 2_147_483_647  # PositiveIntegerField's range on every database
MAX_BIGINT = 2**63 - 1


# --- errors -----------------------------------------------------------------------------------


class ErrorDetailOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(required=False)


class ErrorOut(serializers.Serializer):
    error = ErrorDetailOut()


# --- input ------------------------------------------------------------------------------------


class TaskListQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=Task.Status.choices, required=False)
    repository = serializers.CharField(required=False, max_length=200, help_text="Repository id or name")
    issue = serializers.IntegerField(required=False, min_value=1, max_value=MAX_INT)
    search = serializers.CharField(required=False, max_length=200, help_text="In title and branch; #123 finds an issue")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)
    offset = serializers.IntegerField(required=False, min_value=0, max_value=MAX_INT, default=0)


class TaskCreateIn(serializers.Serializer):
    repository = serializers.CharField(max_length=200, help_text="Id or name of a local repository")
    issue_number = serializers.IntegerField(
        min_value=1, max_value=MAX_INT, required=False, allow_null=True, default=None,
        help_text="Optional: without it the task gets the repository's next free number",
    )
    title = serializers.CharField(max_length=500)
    body = serializers.CharField(required=False, allow_blank=True, default="", max_length=200_000)
    workflow = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=100_000,
        help_text="Optional workflow YAML used instead of the repository's .tac/workflow.yaml (validated first)",
    )
    start = serializers.BooleanField(required=False, default=False, help_text="Dispatch now instead of waiting for the coordinator")


class BudgetRaiseIn(serializers.Serializer):
    """One of the two: how much to add to the budget that paused the task."""

    usd = serializers.DecimalField(
        max_digits=12, decimal_places=6, min_value=Decimal("0.000001"), max_value=budgets.MAX_RAISE_USD, required=False,
        help_text="US dollars to add to a USD limit",
    )
    tokens = serializers.IntegerField(min_value=1, max_value=budgets.MAX_RAISE_TOKENS, required=False, help_text="Tokens to add to a token limit")

    def validate(self, data: dict) -> dict:
        if ("usd" in data) == ("tokens" in data):
            raise serializers.ValidationError({"usd": ["give usd or tokens (one of them)"]})
        return data


class EventsQuery(serializers.Serializer):
    after = serializers.IntegerField(required=False, min_value=0, max_value=MAX_BIGINT, default=0, help_text="Last event id seen")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=200)


class WorkersQuery(serializers.Serializer):
    include_exited = serializers.BooleanField(required=False, default=False)


class StatsQuery(serializers.Serializer):
    days = serializers.IntegerField(required=False, min_value=1, max_value=365, default=30)


MEMORY_TEXT_HELP = "One short line: how to build or test the repository, a quirk, a convention (cleaned up and capped like an agent's entry)"


class MemoryListQuery(serializers.Serializer):
    repository = serializers.CharField(required=False, max_length=200, help_text="Repository id or name (all repositories without it)")
    status = serializers.ChoiceField(choices=MemoryEntry.Status.choices, required=False)


class MemoryCreateIn(serializers.Serializer):
    repository = serializers.CharField(max_length=200, help_text="Repository id or name")
    text = serializers.CharField(max_length=10_000, help_text=MEMORY_TEXT_HELP)


class MemoryUpdateIn(serializers.Serializer):
    text = serializers.CharField(max_length=10_000, help_text=MEMORY_TEXT_HELP)


# --- output -----------------------------------------------------------------------------------


class RepositoryOut(serializers.ModelSerializer):
    class Meta:
        model = Repository
        fields = ("id", "full_name", "kind")


class TokensOut(serializers.Serializer):
    input = serializers.IntegerField(source="input_tokens")
    output = serializers.IntegerField(source="output_tokens")
    cache_read = serializers.IntegerField(source="cache_read_tokens")
    cache_write = serializers.IntegerField(source="cache_write_tokens")
    total = serializers.IntegerField(source="total_tokens")


class TaskOut(serializers.ModelSerializer):
    repository = RepositoryOut()
    current_stage = serializers.SerializerMethodField()
    tokens = TokensOut(source="*")
    cost_usd = serializers.DecimalField(max_digits=12, decimal_places=6)
    elapsed_seconds = serializers.SerializerMethodField()
    html_url = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = (
            "id",
            "repository",
            "issue_number",
            "title",
            "status",
            "status_reason",
            "current_stage",
            "trigger_source",
            "triggered_by",
            "branch",
            "pr_url",
            "pr_opened_at",
            "pr_outcome",
            "pr_outcome_at",
            "tokens",
            "cost_usd",
            "triggered_at",
            "created_at",
            "started_at",
            "finished_at",
            "elapsed_seconds",
            "html_url",
        )

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_current_stage(self, task: Task) -> str | None:
        if hasattr(task, "current_stage_name"):
            return task.current_stage_name
        stage = task.current_stage()
        return stage.name if stage else None

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_elapsed_seconds(self, task: Task) -> float | None:
        if task.started_at is None:
            return None
        return round(((task.finished_at or timezone.now()) - task.started_at).total_seconds(), 3)

    def get_html_url(self, task: Task) -> str:
        return reverse("dashboard:task-detail", args=[task.pk])


class AttemptOut(serializers.ModelSerializer):
    stage = serializers.CharField(source="stage.name")
    memory_entries = serializers.ListField(child=serializers.IntegerField(), help_text="Ids of the memory entries its prompt carried")
    tokens = TokensOut(source="*")
    cost_usd = serializers.DecimalField(max_digits=12, decimal_places=6)
    duration_seconds = serializers.FloatField(allow_null=True)

    class Meta:
        model = StageResult
        fields = (
            "id",
            "stage",
            "attempt",
            "round",
            "outcome",
            "success",
            "started_at",
            "completed_at",
            "duration_seconds",
            "exit_code",
            "error",
            "verdict",
            "tests_status",
            "tests_exit_code",
            "tests_duration",
            "provider",
            "model",
            "cli_version",
            "tokens",
            "cost_usd",
            "turns",
            "session_id",
            "output_file",
            "memory_entries",
        )


class StageAttemptOut(AttemptOut):
    """An attempt inside its stage (the stage name is known there)."""

    class Meta(AttemptOut.Meta):
        fields = tuple(f for f in AttemptOut.Meta.fields if f != "stage")


class StageOut(serializers.ModelSerializer):
    attempts_detail = StageAttemptOut(source="attempt_list", many=True)

    class Meta:
        model = Stage
        fields = (
            "id",
            "name",
            "position",
            "provider",
            "model",
            "status",
            "attempts",
            "failed_attempts",
            "max_attempts",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "lease_owner",
            "lease_expires_at",
            "error",
            # Best of N: a candidate's parent stage and number (0: not a candidate), its spec,
            # branch, pass; the parent's selection record per pass (pipeline.services.candidates).
            "parent",
            "candidate",
            "candidate_info",
            "attempts_detail",
        )


class StageBriefOut(serializers.ModelSerializer):
    class Meta:
        model = Stage
        fields = ("id", "name", "position", "provider", "model", "status", "attempts", "error", "parent", "candidate")


class RoundOut(serializers.ModelSerializer):
    """A follow-up round on the PR (or plan feedback, or a command) and what started it."""

    started_by = serializers.CharField()
    context = serializers.JSONField()

    class Meta:
        model = Round
        fields = (
            "id", "kind", "status", "reason", "source", "actor", "started_by", "text", "context", "head_sha", "triggered_at",
            "created_at", "started_at", "finished_at", "resumed_session_id", "tokens_saved", "input_tokens", "output_tokens",
            "cost_usd", "reply_comment_id",
        )


class BudgetPauseOut(serializers.ModelSerializer):
    """A budget pause (`on_exceed: pause`): what was reached, the estimate of the rest, the answer."""

    stage = serializers.CharField(source="stage.name")
    estimate = serializers.JSONField()

    class Meta:
        model = BudgetPause
        fields = (
            "id", "status", "stage", "scope", "stage_name", "reason", "limit_usd", "limit_tokens", "spent_usd", "spent_tokens",
            "estimate_usd", "estimate_tokens", "estimate", "created_at", "paused_at", "expires_at", "answered_at", "answered_by",
            "answer_source", "raise_usd", "raise_tokens",
        )


class TaskDetailOut(TaskOut):
    stages = StageBriefOut(many=True, source="stage_list")
    workflow = serializers.JSONField()
    rounds = serializers.SerializerMethodField()
    budget_pauses = serializers.SerializerMethodField()

    class Meta(TaskOut.Meta):
        fields = (*TaskOut.Meta.fields, "body", "issue_url", "review_round", "workflow", "workflow_source", "stages", "rounds", "budget_pauses")

    @extend_schema_field(RoundOut(many=True))
    def get_rounds(self, task) -> list[dict]:
        return RoundOut(task.rounds.order_by("id"), many=True).data

    @extend_schema_field(BudgetPauseOut(many=True))
    def get_budget_pauses(self, task) -> list[dict]:
        return BudgetPauseOut(task.budget_pauses.select_related("stage").order_by("id"), many=True).data


class TaskPageOut(serializers.Serializer):
    count = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = TaskOut(many=True)


class EventOut(serializers.ModelSerializer):
    task_id = serializers.IntegerField()
    attempt_id = serializers.IntegerField(source="result_id", allow_null=True)
    stage = serializers.SerializerMethodField()
    attempt = serializers.SerializerMethodField()
    data = serializers.JSONField()

    class Meta:
        model = AgentEvent
        fields = ("id", "task_id", "attempt_id", "stage", "attempt", "seq", "kind", "data", "created_at")

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_stage(self, event: AgentEvent) -> str | None:
        if event.result_id is None:
            return event.data.get("stage") if isinstance(event.data, dict) else None
        return event.result.stage.name

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_attempt(self, event: AgentEvent) -> int | None:
        return event.result.attempt if event.result_id is not None else None


class EventPageOut(serializers.Serializer):
    events = EventOut(many=True)
    next_after = serializers.IntegerField(help_text="Pass as `after` to get the events that follow")
    has_more = serializers.BooleanField(help_text="More events are ready now")
    held_back = serializers.BooleanField(help_text="An event still being committed stopped the page; ask again shortly")


class WorkerOut(serializers.ModelSerializer):
    task_id = serializers.IntegerField(source="stage.task_id", allow_null=True, default=None)
    stage = serializers.CharField(source="stage.name", allow_null=True, default=None)
    heartbeat_age_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Worker
        fields = (
            "id",
            "kind",
            "name",
            "host",
            "pid",
            "pgid",
            "task_id",
            "stage",
            "started_at",
            "heartbeat_at",
            "heartbeat_age_seconds",
            "exited_at",
            "exit_code",
        )

    @extend_schema_field(serializers.FloatField())
    def get_heartbeat_age_seconds(self, worker: Worker) -> float:
        return round((timezone.now() - worker.heartbeat_at).total_seconds(), 1)


class RateOut(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField(help_text='What the page shows: "no model (command, tacx)" for the key "(none)"')
    attempts = serializers.IntegerField(help_text="succeeded + failed: what the rate is of")
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Ended without success (failed, timed out, stalled, lost), not by a cancel")
    cancelled = serializers.IntegerField(help_text="Attempts ended by a cancel: not counted in `attempts` or the rate")
    ended = serializers.IntegerField(help_text="succeeded + failed + cancelled")
    rate = serializers.FloatField(allow_null=True)


class DayOut(serializers.Serializer):
    day = serializers.DateField()
    tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=6)
    attempts = serializers.IntegerField()


class OutcomesOut(serializers.Serializer):
    key = serializers.CharField(help_text="The workflow (source · fingerprint), the building stage's provider, or `all`")
    tasks = serializers.IntegerField(help_text="GitHub tasks triggered in the period (skipped ones left out)")
    pull_requests = serializers.IntegerField()
    merged = serializers.IntegerField()
    closed = serializers.IntegerField(help_text="Closed without merging")
    open = serializers.IntegerField()
    merge_rate = serializers.FloatField(allow_null=True, help_text="merged / (merged + closed); open PRs have no outcome yet")
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=6, help_text="What every task of the group cost")
    cost_per_merged_usd = serializers.DecimalField(max_digits=14, decimal_places=6, allow_null=True, help_text="cost_usd / merged")
    median_trigger_to_first_pr_seconds = serializers.FloatField(allow_null=True)
    rounds_per_merged = serializers.FloatField(allow_null=True, help_text="Conversation rounds that ran on merged PRs, per merged PR")


class StatsOut(serializers.Serializer):
    days = serializers.IntegerField()
    since = serializers.DateField()
    by_stage = RateOut(many=True)
    by_provider = RateOut(many=True)
    by_model = RateOut(many=True)
    per_day = DayOut(many=True)
    tasks_by_status = serializers.DictField(child=serializers.IntegerField())
    median_trigger_to_pr_seconds = serializers.FloatField(allow_null=True)
    results = serializers.IntegerField(help_text="Tasks that delivered: pull requests plus branches pushed to a local origin")
    pull_requests = serializers.IntegerField()
    branches = serializers.IntegerField(help_text="Local repositories: branches pushed to their origin")
    total_tokens = serializers.IntegerField()
    total_cost_usd = serializers.DecimalField(max_digits=14, decimal_places=6)
    pull_outcomes = OutcomesOut(help_text="What became of the pull requests of GitHub tasks")
    outcomes_by_workflow = OutcomesOut(many=True)
    outcomes_by_provider = OutcomesOut(many=True, help_text="Per provider of the building stage")


class MemorySourceOut(serializers.Serializer):
    task = serializers.IntegerField(source="source_task_id", allow_null=True)
    attempt = serializers.IntegerField(source="source_result_id", allow_null=True, help_text="Id of the attempt (StageResult)")
    stage = serializers.SerializerMethodField()
    proposer = serializers.CharField()

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_stage(self, entry: MemoryEntry) -> str | None:
        return entry.source_result.stage.name if entry.source_result_id else None


class MemoryEntryOut(serializers.ModelSerializer):
    repository = RepositoryOut()
    source = MemorySourceOut(source="*")
    in_prompts = serializers.SerializerMethodField(help_text="Accepted and within the prompt size cap: later prompts carry it")

    class Meta:
        model = MemoryEntry
        fields = ("id", "repository", "text", "status", "source", "created_at", "decided_by", "decided_at", "edited_by", "edited_at", "in_prompts")

    def get_in_prompts(self, entry: MemoryEntry) -> bool:
        given = self.context.get("given")
        if given is None:
            return False
        return entry.pk in given
