from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView

from . import evaluations, views

app_name = "api"
urlpatterns = [
    path("tasks/", views.TaskListApi.as_view(), name="task-list"),
    path("tasks/create/", views.TaskCreateApi.as_view(), name="task-create"),
    path("tasks/<int:task_id>/", views.TaskDetailApi.as_view(), name="task-detail"),
    path("tasks/<int:task_id>/retry/", views.TaskRetryApi.as_view(), name="task-retry"),
    path("tasks/<int:task_id>/cancel/", views.TaskCancelApi.as_view(), name="task-cancel"),
    path("tasks/<int:task_id>/approve/", views.TaskApproveApi.as_view(), name="task-approve"),
    path("tasks/<int:task_id>/budget/raise/", views.TaskBudgetRaiseApi.as_view(), name="task-budget-raise"),
    path("tasks/<int:task_id>/budget/stop/", views.TaskBudgetStopApi.as_view(), name="task-budget-stop"),
    path("tasks/<int:task_id>/stages/", views.TaskStagesApi.as_view(), name="task-stages"),
    path("tasks/<int:task_id>/attempts/", views.TaskAttemptsApi.as_view(), name="task-attempts"),
    path("tasks/<int:task_id>/events/", views.TaskEventsApi.as_view(), name="task-events"),
    path("stats/", views.StatsApi.as_view(), name="stats"),
    path("workers/", views.WorkersApi.as_view(), name="workers"),
    path("evaluations/", evaluations.EvalRunListApi.as_view(), name="evaluation-list"),
    path("evaluations/<int:run_id>/", evaluations.EvalRunDetailApi.as_view(), name="evaluation-detail"),
    path("evaluations/<int:run_id>/export/", evaluations.EvalRunExportApi.as_view(), name="evaluation-export"),
    path("memory/", views.MemoryListApi.as_view(), name="memory-list"),
    path("memory/create/", views.MemoryCreateApi.as_view(), name="memory-create"),
    path("memory/<int:entry_id>/", views.MemoryDetailApi.as_view(), name="memory-detail"),
    path("memory/<int:entry_id>/update/", views.MemoryUpdateApi.as_view(), name="memory-update"),
    path("memory/<int:entry_id>/accept/", views.MemoryAcceptApi.as_view(), name="memory-accept"),
    path("memory/<int:entry_id>/reject/", views.MemoryRejectApi.as_view(), name="memory-reject"),
    path("memory/<int:entry_id>/delete/", views.MemoryDeleteApi.as_view(), name="memory-delete"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Anything else under /api/ (an id that is not a number, a typo) gets a JSON 404 too.
    re_path(r"^.*$", views.NotFoundApi.as_view(), name="not-found"),
]
