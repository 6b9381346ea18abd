"""Needs attention: the tasks waiting for a person, first, grouped, each with the one-click
actions the viewer's role allows (the same endpoints as the task page: Approve, Retry, Cancel,
raise or end a budget pause; each comes back here).

Groups, in this order: plans awaiting approval; tasks paused at a budget; tasks stopped by a
budget; failed tasks; tasks whose agent had connections blocked by the sandbox (running, or
finished in the window). Finished tasks count for `WINDOW_DAYS` (`?days=`), and a finished task
whose issue has a newer task is left out (it was dealt with)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, Exists, OuterRef, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from pipeline import services
from pipeline.models import AgentEvent, Task

from .access import page_view

WINDOW_DAYS = 14
GROUP_MAX = 100


@dataclass
class Group:
    key: str
    title: str
    hint: str
    tasks: list[Task] = field(default_factory=list)


def _recent(queryset, since):
    newer = Task.objects.filter(repository=OuterRef("repository"), issue_number=OuterRef("issue_number"), pk__gt=OuterRef("pk"))
    return queryset.filter(Q(finished_at__gte=since) | Q(finished_at__isnull=True)).exclude(Exists(newer))


def attention_groups(*, days: int = WINDOW_DAYS) -> list[Group]:
    since = timezone.now() - timedelta(days=days)
    base = Task.objects.select_related("repository").order_by("-id")
    groups = [
        Group(
            "approval",
            "Plans awaiting approval",
            "Read the plan, then approve it (or send feedback from the task page).",
            list(base.filter(status=Task.Status.AWAITING_APPROVAL)[:GROUP_MAX]),
        ),
        Group(
            "paused",
            "Paused at a budget",
            "Raise the limit to go on, or end the task.",
            list(base.filter(status=Task.Status.PAUSED)[:GROUP_MAX]),
        ),
        Group(
            "budget",
            "Stopped by a budget",
            "Raise the budget in the workflow or settings, then retry.",
            list(_recent(base.filter(status=Task.Status.BUDGET_EXCEEDED), since)[:GROUP_MAX]),
        ),
        Group(
            "failed",
            "Failed",
            "The reason is on each task's page; retry resumes from the stage that failed.",
            list(_recent(base.filter(status=Task.Status.FAILED), since)[:GROUP_MAX]),
        ),
    ]
    blocked = (
        _recent(base, since)
        .exclude(status__in=[Task.Status.CANCELLED, Task.Status.SKIPPED])
        .filter(Exists(AgentEvent.objects.filter(task=OuterRef("pk"), kind=AgentEvent.Kind.SANDBOX)))
        .annotate(blocked_count=Count("events", filter=Q(events__kind=AgentEvent.Kind.SANDBOX)))
    )
    groups.append(
        Group(
            "blocked",
            "Connections blocked by the sandbox",
            "Allow the host in the workflow's sandbox settings if the agent needs it.",
            list(blocked[:GROUP_MAX]),
        )
    )
    for group in groups:
        for task in group.tasks:
            task.open_pause = services.open_pause(task) if task.status == Task.Status.PAUSED else None
    return groups


@page_view("pipeline.view_task", require_GET)
def attention_page(request: HttpRequest) -> HttpResponse:
    try:
        days = min(max(int(request.GET.get("days", WINDOW_DAYS)), 1), 365)
    except ValueError:
        days = WINDOW_DAYS
    groups = attention_groups(days=days)
    return render(
        request, "dashboard/attention.html", {"groups": groups, "days": days, "total": sum(len(g.tasks) for g in groups)}
    )


def attention_count() -> int:
    """For the nav: tasks waiting for a decision (approval or a budget pause)."""
    return Task.objects.filter(status__in=[Task.Status.AWAITING_APPROVAL, Task.Status.PAUSED]).count()
