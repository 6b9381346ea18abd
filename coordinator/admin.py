from django.contrib import admin

from .models import ProgressComment, TaskChecks, WebhookDelivery


class RecordAdmin(admin.ModelAdmin):
    """The coordinator's own records: shown as they are, never added by hand."""

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(RecordAdmin):
    list_display = ("delivery_id", "event", "action", "repository_full_name", "issue_number", "sender", "status", "result_short", "received_at")
    list_filter = ("status", "event", "action")
    search_fields = ("delivery_id", "repository_full_name", "sender", "result")
    readonly_fields = tuple(f.name for f in WebhookDelivery._meta.fields)
    date_hierarchy = "received_at"

    @admin.display(description="result")
    def result_short(self, obj: WebhookDelivery) -> str:
        return obj.result[:100]


@admin.register(ProgressComment)
class ProgressCommentAdmin(RecordAdmin):
    list_display = ("task", "comment_id", "writes", "failures", "synced_at", "last_error")
    readonly_fields = tuple(f.name for f in ProgressComment._meta.fields)


@admin.register(TaskChecks)
class TaskChecksAdmin(RecordAdmin):
    list_display = ("task", "head_sha", "approval", "failures", "synced_at", "last_error")
    readonly_fields = tuple(f.name for f in TaskChecks._meta.fields)
