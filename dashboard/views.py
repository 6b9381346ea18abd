"""Server-rendered pages (healthchecks' front/views.py style): each view parses its input, calls
a selector or one service, and renders a template. The live parts are partials that the page's
JS fetches again when the event stream says something changed."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from pipeline import accounting, budgets, pulls, sandbox, services, slots
from pipeline.models import AgentEvent, Repository, StageResult, Task
from pipeline.services import rounds
from pipeline.workflow import WorkflowError, load_workflow_text

from . import failures, health, live_diff, rendering, selectors, stats, steps, streams, talk
from .access import page_view

PAGE_SIZE = 50
TRANSCRIPT_LIMIT = 1000  # newest events rendered with the page; "show all" renders every one
# Transcript filter: (kind(s), label, shown at first). Usage rows follow every message; they are
# in the stage's totals already, so they start hidden.
TRANSCRIPT_KINDS = [
    ("message", "messages", True),
    ("output", "output", True),
    ("stderr", "stderr", True),
    ("tool_call", "tool calls", True),
    ("tool_result", "tool output", True),
    ("status", "status", True),
    ("error", "errors", True),
    ("usage", "usage", False),
    ("other", "other", True),
]


class TaskFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "any status"), *Task.Status.choices], required=False)
    repository = forms.CharField(required=False, max_length=200)
    search = forms.CharField(required=False, max_length=200)

    def filters(self) -> dict:
        if not self.is_valid():
            return {name: value for name, value in self.cleaned_data.items() if value and name not in self.errors}
        return {name: value for name, value in self.cleaned_data.items() if value}


class StatsForm(forms.Form):
    days = forms.IntegerField(required=False, min_value=1, max_value=365)




def _task_page(request: HttpRequest) -> dict:
    form = TaskFilterForm(request.GET)
    # The cursor is read before the rows: an event that lands in between makes the page refresh
    # a row that was already up to date, never miss one.
    after = streams.safe_latest_id()
    page = Paginator(selectors.task_list(**form.filters()), PAGE_SIZE).get_page(request.GET.get("page"))
    return {"form": form, "page": page, "tasks": page.object_list, "live_after": after}


@page_view("pipeline.view_task", require_GET)
def task_list(request: HttpRequest) -> HttpResponse:
    context = _task_page(request)
    context["repositories"] = selectors.repositories()
    return render(request, "dashboard/tasks.html", context)


@page_view("pipeline.view_task", require_GET, never_cache)
def task_rows(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/partials/task_rows.html", _task_page(request))


def _summary(task: Task, user) -> dict:
    stages = selectors.task_stages(task)
    running_tokens, running_cost = selectors.task_running_usage(task)
    blocked = sandbox.blocked_for_task(task)
    return {
        "task": task,
        "result": selectors.task_result(task) if task.status in Task.FINISHED else None,
        "failure": failures.failure_explain(task),
        "now_doing": selectors.task_now_doing(task) if task.is_active else None,
        "running_attempt": selectors.task_running_attempt(task) if task.is_active else None,
        "stages": stages,
        "candidates": selectors.task_candidates(stages),
        "rounds_sentence": pulls.rounds_sentence(task, StageResult.objects.filter(task=task)),
        "current_stage": selectors.task_current_stage(stages),
        "tokens_total": task.total_tokens + running_tokens,
        "cost_total": task.cost_usd + running_cost,
        "can_retry": task.status not in Task.ACTIVE
        and task.status not in (Task.Status.SUCCEEDED, Task.Status.SKIPPED)
        and user.has_perm("pipeline.retry_task"),
        # Cancelled, but the agent is still being stopped: Retry waits (the API answers 409 then).
        "stopping": selectors.stopping_stage(stages) if task.status not in Task.ACTIVE else None,
        "retry_from": selectors.retry_from(stages),
        "can_cancel": task.status in Task.ACTIVE and user.has_perm("pipeline.cancel_task"),
        "can_approve": task.status == Task.Status.AWAITING_APPROVAL and user.has_perm("pipeline.approve_task"),
        "pause": services.open_pause(task) if task.status == Task.Status.PAUSED else None,
        "can_answer_pause": task.status == Task.Status.PAUSED and user.has_perm("pipeline.approve_task"),
        "rounds": list(task.rounds.order_by("id")),
        "budgets": accounting.task_budget_lines(task),
        "blocked": blocked,
        "blocked_total": sum(n for _, n in blocked),
        # The result panel keeps the final diff, per file.
        **(live_diff.branch_files(task) if task.status in Task.FINISHED and task.branch else {}),
    }


def _documents(task: Task) -> dict:
    return {"task": task, "documents": selectors.task_documents(task), "diff": selectors.task_diff(task)}


@page_view("pipeline.view_task", require_GET)
def task_detail(request: HttpRequest, task_id: int) -> HttpResponse:
    task = selectors.task_get(task_id)
    after = streams.safe_latest_id(task_id=task.pk)
    events = AgentEvent.objects.filter(task=task, id__lte=after).select_related("result__stage", "task").order_by("-id")
    show_all = request.GET.get("transcript") == "all"
    shown = list(events if show_all else events[:TRANSCRIPT_LIMIT])
    shown.reverse()
    earlier = 0 if show_all or len(shown) < TRANSCRIPT_LIMIT else events.count() - len(shown)
    context = {
        **_summary(task, request.user),
        **_documents(task),
        "transcript_items": steps.transcript_items(shown),
        "earlier_events": earlier,
        "live_after": after,
        "workflow_yaml": rendering.workflow_yaml(task.workflow),
        # While it runs the transcript is what moves: open on it (a #hash still wins, in JS).
        "initial_tab": "transcript" if task.is_active else "documents",
        "tab_list": [("documents", "Plan & review"), ("transcript", "Transcript"), ("workflow", "Workflow")],
        "transcript_kinds": TRANSCRIPT_KINDS,
        "transcript_attempts": selectors.task_attempts(task),
        **talk.message_context(request, task),
        "live_diff_url": reverse("dashboard:task-live-diff", args=[task.pk]),
    }
    return render(request, "dashboard/task_detail.html", context)


class NewTaskForm(forms.Form):
    repository = forms.ModelChoiceField(
        queryset=Repository.objects.none(), empty_label=None, help_text="Local repositories; GitHub tasks start from labelled issues."
    )
    title = forms.CharField(max_length=500)
    body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 8}), max_length=200_000)
    issue_number = forms.IntegerField(
        required=False, min_value=1, max_value=2_147_483_647, help_text="Optional: the next free number otherwise."
    )
    workflow = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "code"}),
        max_length=100_000,
        help_text="Optional workflow YAML for this task instead of the repository's .tac/workflow.yaml.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["repository"].queryset = Repository.objects.filter(kind=Repository.Kind.LOCAL, enabled=True).order_by("full_name")

    def clean_workflow(self) -> str:
        text = self.cleaned_data.get("workflow", "").strip()
        if text:
            try:
                load_workflow_text(text, source="workflow")
            except WorkflowError as exc:
                raise forms.ValidationError(exc.errors) from None
        return text


@page_view("pipeline.add_task")
def task_new(request: HttpRequest) -> HttpResponse:
    """The form of `POST /api/tasks/create/`, with its permission: the form itself lists the local
    repositories and takes a workflow override (any `command` argv), so a GET needs it too."""
    form = NewTaskForm(request.POST or None, initial={"repository": request.GET.get("repository")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            task, created = services.task_submit(
                repository=data["repository"],
                title=data["title"],
                body=data["body"],
                issue_number=data["issue_number"],
                workflow_text=data["workflow"],
                triggered_by=request.user.get_username(),
                trigger_source="dashboard",
            )
        except (ValueError, WorkflowError) as exc:
            form.add_error(None, str(exc))
        else:
            if created:
                messages.success(request, f"Task {task.pk} created for {task.repository.full_name}#{task.issue_number}.")
            else:
                messages.info(request, f"Issue #{task.issue_number} already has an active task: task {task.pk}.")
            return redirect(task)
    return render(request, "dashboard/task_new.html", {"form": form}, status=400 if form.errors else 200)


@page_view("pipeline.view_task", require_GET, never_cache)
def task_summary(request: HttpRequest, task_id: int) -> HttpResponse:
    return render(request, "dashboard/partials/task_summary.html", _summary(selectors.task_get(task_id), request.user))


@page_view("pipeline.view_task", require_GET, never_cache)
def task_documents(request: HttpRequest, task_id: int) -> HttpResponse:
    return render(request, "dashboard/partials/task_documents.html", _documents(selectors.task_get(task_id)))


@page_view("pipeline.retry_task", require_POST)
def task_retry(request: HttpRequest, task_id: int) -> HttpResponse:
    task = selectors.task_get(task_id)
    try:
        services.task_retry(task=task)
    except ValueError as exc:
        messages.error(request, f"Not retried: {exc}")
    else:
        messages.success(request, f"Task {task.pk} retried.")
    return _back(request, task)


@page_view("pipeline.cancel_task", require_POST)
def task_cancel(request: HttpRequest, task_id: int) -> HttpResponse:
    task = selectors.task_get(task_id)
    if services.task_cancel(task=task, reason=f"cancelled by {request.user.get_username()}"):
        messages.success(request, f"Task {task.pk} cancelled.")
    else:
        messages.error(request, f"Not cancelled: the task is already {task.status}.")
    return _back(request, task)


@page_view("pipeline.view_task", require_GET)
def stats_page(request: HttpRequest) -> HttpResponse:
    form = StatsForm(request.GET)
    days = (form.cleaned_data.get("days") if form.is_valid() else None) or 30
    figures = stats.stats_compute(days=days)
    chart = [{"day": d.day.isoformat(), "tokens": d.tokens, "cost": float(d.cost_usd), "attempts": d.attempts} for d in figures.per_day]
    rate_tables = [
        (title, rates, stats.rates_total(rates)) for title, rates in (("stage", figures.by_stage), ("provider", figures.by_provider), ("model", figures.by_model))
    ]
    outcome_tables = [("all", [figures.pull_outcomes]), ("workflow", figures.outcomes_by_workflow), ("provider", figures.outcomes_by_provider)]
    context = {"stats": figures, "chart": chart, "rate_tables": rate_tables, "outcome_tables": outcome_tables, "form": form, "days": days}
    return render(request, "dashboard/stats.html", context)


def _workers() -> dict:
    return {"live": selectors.workers_live(), "counts": slots.counts(), "recent": selectors.workers_recent(), "stale_after": health.coordinator_max_age()}


@page_view("pipeline.view_task", require_GET)
def workers_page(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/workers.html", _workers())


@page_view("pipeline.view_task", require_GET, never_cache)
def worker_rows(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/partials/worker_rows.html", _workers())


@require_GET
@never_cache
def health_view(request: HttpRequest) -> JsonResponse:
    result = health.health_check()
    return JsonResponse(result.as_json(), status=200 if result.healthy else 503)


@page_view(None, require_GET)
def api_docs(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/api_docs.html")


@page_view("pipeline.approve_task", require_POST)
def task_candidate_choose(request: HttpRequest, task_id: int, k: int) -> HttpResponse:
    """Best of N at `approval: candidates`: a person chooses another candidate before approving."""
    task = selectors.task_get(task_id)
    problem = services.candidate_choose(task=task, k=k, chosen_by=request.user.get_username())
    if problem:
        messages.error(request, f"Not chosen: {problem}.")
    else:
        messages.success(request, f"Candidate c{k} chosen; approve to go on with it.")
    return redirect(task)


@page_view("pipeline.approve_task", require_POST)
def task_approve(request: HttpRequest, task_id: int) -> HttpResponse:
    task = selectors.task_get(task_id)
    if rounds.task_approve(task=task, approved_by=request.user.get_username()):
        messages.success(request, f"Plan of task {task.pk} approved.")
    else:
        messages.error(request, f"Not approved: the task is {task.status}.")
    return _back(request, task)


@page_view("pipeline.approve_task", require_POST)
def task_budget_raise(request: HttpRequest, task_id: int) -> HttpResponse:
    """The form of `POST /api/tasks/<id>/budget/raise/`: one field, `amount` ("+2.00", "+50000 tokens")."""
    task = selectors.task_get(task_id)
    try:
        usd, tokens = budgets.parse_raise(request.POST.get("amount", ""))
        pause = services.budget_raise(task=task, by=request.user.get_username(), source="dashboard", usd=usd, tokens=tokens)
    except ValueError as exc:  # NotPaused included
        messages.error(request, f"Not raised: {exc}")
    else:
        amount = budgets.money(usd) if usd is not None else f"{tokens:,} tokens"
        messages.success(request, f"The {pause.scope} budget of task {task.pk} was raised by {amount}; stage {pause.stage.name} goes on.")
    return _back(request, task)


@page_view("pipeline.approve_task", require_POST)
def task_budget_stop(request: HttpRequest, task_id: int) -> HttpResponse:
    task = selectors.task_get(task_id)
    try:
        services.budget_stop(task=task, by=request.user.get_username(), source="dashboard")
    except services.NotPaused as exc:
        messages.error(request, f"Not ended: {exc}")
    else:
        messages.success(request, f"Task {task.pk} ended at its budget pause.")
    return _back(request, task)


def _back(request: HttpRequest, task: Task) -> HttpResponse:
    """Back to the page the action was taken on: the task's, or the attention view's (the only
    other page allowed as `next`)."""
    if request.POST.get("next") == reverse("dashboard:attention"):
        return redirect("dashboard:attention")
    return redirect(task)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    # No context processors that touch the database: the error may be the database.
    from django.template import loader

    return HttpResponse(loader.get_template("500.html").render({}), status=500)
