from django.contrib import admin

from .models import EvalResult, EvalRun
from .selectors import run_summary


class EvalResultInline(admin.TabularInline):
    model = EvalResult
    fields = ("instance_id", "status", "outcome", "cost_usd", "wall_seconds", "attempts", "rounds", "task")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(EvalRun)
class EvalRunAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "workflow_source", "short_fingerprint", "status", "progress", "created_at")
    list_filter = ("status",)
    search_fields = ("name", "workflow_source", "workflow_fingerprint", "instances_source")
    readonly_fields = [f.name for f in EvalRun._meta.fields]
    inlines = [EvalResultInline]

    @admin.display(description="fingerprint")
    def short_fingerprint(self, run: EvalRun) -> str:
        return run.workflow_fingerprint[:12]

    @admin.display(description="progress")
    def progress(self, run: EvalRun) -> str:
        return run_summary(run).progress()


@admin.register(EvalResult)
class EvalResultAdmin(admin.ModelAdmin):
    list_display = ("instance_id", "run", "status", "outcome", "cost_usd", "wall_seconds", "attempts", "rounds")
    list_filter = ("outcome", "status")
    search_fields = ("instance_id", "reason")
    readonly_fields = [f.name for f in EvalResult._meta.fields]
    list_select_related = ("run",)
