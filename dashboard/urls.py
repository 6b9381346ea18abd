from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.task_list, name="tasks"),
    path("tasks/rows/", views.task_rows, name="task-rows"),
    path("tasks/new/", views.task_new, name="task-new"),
    path("repositories/new/", views.repository_new, name="repository-new"),
    path("tasks/<int:task_id>/", views.task_detail, name="task-detail"),
    path("tasks/<int:task_id>/summary/", views.task_summary, name="task-summary"),
    path("tasks/<int:task_id>/documents/", views.task_documents, name="task-documents"),
    path("tasks/<int:task_id>/retry/", views.task_retry, name="task-retry"),
    path("tasks/<int:task_id>/cancel/", views.task_cancel, name="task-cancel"),
    path("tasks/<int:task_id>/approve/", views.task_approve, name="task-approve"),
    path("tasks/<int:task_id>/budget/raise/", views.task_budget_raise, name="task-budget-raise"),
    path("tasks/<int:task_id>/budget/stop/", views.task_budget_stop, name="task-budget-stop"),
    path("stats/", views.stats_page, name="stats"),
    path("workers/", views.workers_page, name="workers"),
    path("workers/rows/", views.worker_rows, name="worker-rows"),
    path("health", views.health_view, name="health"),
    path("api/docs/", views.api_docs, name="api-docs"),
]
