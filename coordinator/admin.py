from django.contrib import admin

from .models import ProgressComment, TaskChecks, WebhookDelivery


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("delivery_id", "event", "action", "repository_full_name", "issue_number", "sender", "status", "result_short", "received_at")
    list_filter = ("status", "event", "action")
    search_fields = ("delivery_id", "repository_full_name", "sender", "result")
    readonly_fields = tuple(f.name for f in WebhookDelivery._meta.fields)
    date_hierarchy = "received_at"

    @admin.display(description="result")
    def result_short(self, obj: WebhookDelivery) -> str:
        return obj.result[:100]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ProgressComment)
class ProgressCommentAdmin(admin.ModelAdmin):
    list_display = ("task", "comment_id", "writes", "failures", "synced_at", "last_error")
    readonly_fields = tuple(f.name for f in ProgressComment._meta.fields)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(TaskChecks)
class TaskChecksAdmin(admin.ModelAdmin):
    list_display = ("task", "head_sha", "approval", "failures", "synced_at", "last_error")
    readonly_fields = tuple(f.name for f in TaskChecks._meta.fields)

    def has_add_permission(self, request) -> bool:
        return False
