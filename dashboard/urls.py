from django.urls import path

from . import attention, evaluations, live_diff, memory_views, repository_views, talk, views

app_name = "dashboard"
urlpatterns = [
    path("", views.task_list, name="tasks"),
    path("tasks/rows/", views.task_rows, name="task-rows"),
    path("tasks/new/", views.task_new, name="task-new"),
    path("repositories/new/", repository_views.repository_new, name="repository-new"),
    path("tasks/<int:task_id>/", views.task_detail, name="task-detail"),
    path("tasks/<int:task_id>/summary/", views.task_summary, name="task-summary"),
    path("tasks/<int:task_id>/documents/", views.task_documents, name="task-documents"),
    path("tasks/<int:task_id>/retry/", views.task_retry, name="task-retry"),
    path("tasks/<int:task_id>/cancel/", views.task_cancel, name="task-cancel"),
    path("tasks/<int:task_id>/approve/", views.task_approve, name="task-approve"),
    path("tasks/<int:task_id>/candidates/<int:k>/choose/", views.task_candidate_choose, name="task-candidate-choose"),
    path("tasks/<int:task_id>/budget/raise/", views.task_budget_raise, name="task-budget-raise"),
    path("tasks/<int:task_id>/budget/stop/", views.task_budget_stop, name="task-budget-stop"),
    path("tasks/<int:task_id>/message/", talk.task_message, name="task-message"),
    path("tasks/<int:task_id>/diff/live/", live_diff.task_live_diff, name="task-live-diff"),
    path("attention/", attention.attention_page, name="attention"),
    path("repositories/", repository_views.repository_list, name="repositories"),
    path("repositories/<int:repository_id>/workflow/", repository_views.repository_workflow, name="repository-workflow"),
    path("stats/", views.stats_page, name="stats"),
    path("evaluations/", evaluations.eval_compare, name="eval-compare"),
    path("workers/", views.workers_page, name="workers"),
    path("workers/rows/", views.worker_rows, name="worker-rows"),
    path("memory/", memory_views.memory_index, name="memory"),
    path("repositories/<int:repository_id>/memory/", memory_views.repository_memory, name="repository-memory"),
    path("repositories/<int:repository_id>/memory/add/", memory_views.memory_add, name="memory-add"),
    path("memory/<int:entry_id>/edit/", memory_views.memory_edit, name="memory-edit"),
    path("memory/<int:entry_id>/accept/", memory_views.memory_accept, name="memory-accept"),
    path("memory/<int:entry_id>/reject/", memory_views.memory_reject, name="memory-reject"),
    path("memory/<int:entry_id>/delete/", memory_views.memory_delete, name="memory-delete"),
    path("health", views.health_view, name="health"),
    path("api/docs/", views.api_docs, name="api-docs"),
]
