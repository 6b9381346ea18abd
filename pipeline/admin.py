from django import forms
from django.contrib import admin, messages
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html

from . import services
from .accounting import TOKEN_FIELDS
from .models import AgentEvent, BudgetPause, MemoryEntry, Repository, Round, Stage, StageResult, Task, Worker


class RepositoryForm(forms.ModelForm):
    """The forge and tracker kinds and their settings (issue 26): settings hold no secrets."""

    class Meta:
        model = Repository
        fields = "__all__"

    def clean_tracker_settings(self):
        value = self.cleaned_data.get("tracker_settings") or {}
        if problem := services.tracker_settings_problem(value):
            raise forms.ValidationError(problem)
        return value

    def clean(self):
        data = super().clean()
        url = (data.get("forge_url") or "").strip()
        if url and (data.get("kind") != Repository.Kind.GITLAB or not url.startswith(("https://", "http://"))):
            self.add_error("forge_url", "a self-hosted forge's base URL (http or https), for a GitLab repository only")
        return data


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    form = RepositoryForm
    list_display = ["full_name", "kind", "tracker_kind", "trigger_label", "enabled", "max_concurrent_tasks", "daily_budget_usd", "daily_budget_on_exceed", "memory_auto_accept", "poll_succeeded_at"]
    list_filter = ["kind", "tracker_kind", "enabled", "memory_auto_accept"]
    search_fields = ["full_name", "local_path"]
    readonly_fields = ["poll_etag", "polled_at", "poll_succeeded_at", "created_at"]
    actions = ["clear_setup_cache"]

    @admin.action(description="Clear the setup cache of selected repositories", permissions=["change"])
    def clear_setup_cache(self, request, queryset):
        for repository in queryset:
            freed, busy = services.repository_setup_cache_clear(repository=repository)
            text = f"{repository.full_name}: setup cache cleared ({filesizeformat(freed)} freed)."
            if busy:
                text += f" {len(busy)} key(s) in use by a running setup were left: {', '.join(busy)}."
            self.message_user(request, text, messages.WARNING if busy else messages.SUCCESS)


class StageInline(admin.TabularInline):
    model = Stage
    extra = 0
    can_delete = False
    fields = ["position", "name", "provider", "model", "status", "attempts", "failed_attempts", "lease_owner", "lease_expires_at", "error"]
    readonly_fields = fields
    show_change_link = True


class StageResultInline(admin.TabularInline):
    model = StageResult
    extra = 0
    can_delete = False
    fields = [
        "stage",
        "attempt",
        "round",
        "outcome",
        "exit_code",
        *TOKEN_FIELDS,
        "cost_usd",
        "turns",
        "cli_version",
        "error",
    ]
    readonly_fields = fields
    show_change_link = True


class RoundInline(admin.TabularInline):
    """Rounds on the PR: what started each, and how it ended (read-only: they come from GitHub)."""

    model = Round
    extra = 0
    can_delete = False
    fields = ["kind", "status", "actor", "source", "trigger_key", "reason", "started_at", "finished_at", "cost_usd", "resumed_session_id", "tokens_saved"]
    readonly_fields = fields


class BudgetPauseInline(admin.TabularInline):
    """Budget pauses (`on_exceed: pause`) and their answers (read-only: answered through the
    dashboard, the API or `/tacx budget`)."""

    model = BudgetPause
    extra = 0
    can_delete = False
    fields = ["status", "stage", "scope", "limit_usd", "limit_tokens", "spent_usd", "spent_tokens", "estimate_usd", "paused_at", "expires_at", "answered_by", "answer_source", "raise_usd", "raise_tokens"]
    readonly_fields = fields


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "repository", "issue_number", "title", "status", "status_reason_short", "cost_usd", "created_at", "pr_link"]
    list_filter = ["status", "repository", "trigger_source"]
    search_fields = ["title", "issue_number", "branch", "triggered_by"]
    readonly_fields = [
        "status",
        "status_reason",
        "current_stage",
        "totals",
        "dashboard_link",
        "branch",
        "worktree_path",
        "base_commit",
        "workflow",
        "workflow_source",
        "review_round",
        "pr_url",
        "pr_number",
        "pr_opened_at",
        "pr_outcome",
        "pr_outcome_at",
        "pr_outcome_source",
        *TOKEN_FIELDS,
        "cost_usd",
        "created_at",
        "started_at",
        "finished_at",
    ]
    inlines = [StageInline, StageResultInline, RoundInline, BudgetPauseInline]
    actions = ["retry_tasks", "cancel_tasks"]
    date_hierarchy = "created_at"
    # Adding a task asks for what a person knows; the rest is TAC-X's to fill in (task_create).
    add_fields = ["repository", "issue_number", "title", "body"]

    # A task's page opens on what a person asks first: its status and why, where it is, what it
    # cost, and a link to the live page; the internals follow, collapsed.
    summary_fields = ["status", "status_reason", "current_stage", "totals", "dashboard_link", "pr_url", "pr_outcome"]

    def get_fields(self, request, obj=None):
        return self.add_fields if obj is None else super().get_fields(request, obj)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": self.add_fields})]
        shown = set(self.summary_fields)
        rest = [f for f in self.get_fields(request, obj) if f not in shown]
        return [
            ("Summary", {"fields": self.summary_fields}),
            ("Issue", {"fields": [f for f in ("repository", "issue_number", "title", "body", "triggered_by", "trigger_source") if f in rest]}),
            (
                "Internals",
                {"classes": ["collapse"], "fields": [f for f in rest if f not in ("repository", "issue_number", "title", "body", "triggered_by", "trigger_source")]},
            ),
        ]

    @admin.display(description="stage")
    def current_stage(self, obj: Task) -> str:
        stage = obj.stages.exclude(status__in=["pending", "succeeded"]).order_by("position").first()
        return f"{stage.name} ({stage.status})" if stage else "–"

    @admin.display(description="totals")
    def totals(self, obj: Task) -> str:
        return f"{obj.total_tokens:,} tokens, ${obj.cost_usd:.4f}"

    @admin.display(description="dashboard")
    def dashboard_link(self, obj: Task):
        return format_html('<a href="{}">view on dashboard</a>', obj.get_absolute_url())

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_inlines(self, request, obj=None):
        return [] if obj is None else self.inlines

    def has_change_permission(self, request, obj=None):
        # A finished task is a record: shown read-only (the retry/cancel actions still work
        # from the list, through the services).
        if obj is not None and obj.status in Task.FINISHED:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        task, created = services.task_create(
            repository=obj.repository,
            issue_number=obj.issue_number,
            title=obj.title,
            body=obj.body,
            triggered_by=request.user.get_username(),
            trigger_source="admin",
        )
        obj.pk = task.pk
        obj.refresh_from_db()
        if not created:
            self.message_user(request, f"Issue #{task.issue_number} already has an active task ({task.pk}).", messages.WARNING)

    @admin.display(description="reason")
    def status_reason_short(self, obj: Task) -> str:
        return obj.status_reason[:80]

    @admin.display(description="PR")
    def pr_link(self, obj: Task) -> str:
        return format_html('<a href="{}">#{}</a>', obj.pr_url, obj.pr_number) if obj.pr_url else ""

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("pipeline.retry_task")

    def has_cancel_permission(self, request) -> bool:
        return request.user.has_perm("pipeline.cancel_task")

    @admin.action(description="Retry selected tasks", permissions=["retry"])
    def retry_tasks(self, request, queryset):
        for task in queryset:
            try:
                services.task_retry(task=task)
            except ValueError as exc:
                self.message_user(request, f"Task {task.pk}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"Task {task.pk} re-queued.", messages.SUCCESS)

    @admin.action(description="Cancel selected tasks", permissions=["cancel"])
    def cancel_tasks(self, request, queryset):
        for task in queryset:
            if services.task_cancel(task=task, reason=f"cancelled by {request.user} in the admin"):
                self.message_user(request, f"Task {task.pk} cancelled.", messages.SUCCESS)
            else:
                self.message_user(request, f"Task {task.pk} had already finished ({task.status}).", messages.WARNING)


@admin.register(Stage)
class StageAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "name", "provider", "model", "status", "attempts", "lease_owner", "lease_expires_at"]
    list_filter = ["status", "name", "provider"]
    search_fields = ["task__title"]
    inlines = [StageResultInline]


@admin.register(StageResult)
class StageResultAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "stage", "attempt", "round", "outcome", "input_tokens", "output_tokens", "cost_usd", "started_at"]
    list_filter = ["outcome", "provider", "model"]
    search_fields = ["error", "session_id", "task__title"]


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "name", "host", "pid", "pgid", "stage", "heartbeat_at", "exited_at"]
    list_filter = ["kind", "host"]


@admin.register(AgentEvent)
class AgentEventAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "result", "seq", "kind", "created_at"]
    list_filter = ["kind"]
    raw_id_fields = ["task", "result"]


class MemoryEntryForm(forms.ModelForm):
    class Meta:
        model = MemoryEntry
        fields = ["repository", "text"]

    def clean_text(self) -> str:
        try:
            return services.memory_text_clean(self.cleaned_data["text"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(MemoryEntry)
class MemoryEntryAdmin(admin.ModelAdmin):
    """A repository's memory: the model permissions decide who sees (view), edits, accepts and
    rejects (change), adds and deletes entries, as on the dashboard and in the API. Accepting
    and rejecting are the actions; the status itself is not a form field."""

    form = MemoryEntryForm
    list_display = ["id", "repository", "status", "text_short", "proposer", "source_task", "created_at", "decided_by"]
    list_filter = ["status", "repository"]
    search_fields = ["text", "proposer"]
    readonly_fields = ["status", "source_task", "source_result", "proposer", "created_at", "decided_by", "decided_at", "edited_by", "edited_at"]
    actions = ["accept_entries", "reject_entries"]

    def get_readonly_fields(self, request, obj=None):
        # An entry stays in its repository; a new one is added by a person (accepted at once).
        return ["repository", *self.readonly_fields] if obj is not None else []

    def get_fields(self, request, obj=None):
        return ["repository", "text"] if obj is None else ["repository", "text", *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        by = request.user.get_username()
        if not change:
            entry = services.memory_add(repository=obj.repository, text=obj.text, by=by)
            obj.pk = entry.pk
            obj.refresh_from_db()
        elif "text" in form.changed_data:
            services.memory_edit(entry=obj, text=obj.text, by=by)

    @admin.display(description="entry")
    def text_short(self, obj: MemoryEntry) -> str:
        return obj.text if len(obj.text) <= 100 else obj.text[:99] + "…"

    @admin.action(description="Accept selected entries (later prompts carry them)", permissions=["change"])
    def accept_entries(self, request, queryset):
        for entry in queryset:
            services.memory_accept(entry=entry, by=request.user.get_username())
        self.message_user(request, f"{queryset.count()} entr{'y' if queryset.count() == 1 else 'ies'} accepted.", messages.SUCCESS)

    @admin.action(description="Reject selected entries", permissions=["change"])
    def reject_entries(self, request, queryset):
        for entry in queryset:
            services.memory_reject(entry=entry, by=request.user.get_username())
        self.message_user(request, f"{queryset.count()} entr{'y' if queryset.count() == 1 else 'ies'} rejected.", messages.SUCCESS)
