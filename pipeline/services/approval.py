"""Plan approval and the running round: whether a task waits for `/tacx approve`, and how many
review rounds the current pass has used."""

from __future__ import annotations

from django.db import transaction

from ..models import Round, StageResult, Task
from ..workflow import Workflow
from .events import event_status


def running_round(task: Task) -> Round | None:
    return Round.objects.filter(task=task, status=Round.Status.RUNNING).first()


def review_rounds_used(task: Task) -> int:
    """Review rounds in the current pass: since the running round started (or the task)."""
    current = running_round(task)
    base = current.first_review_round if current is not None else 1
    return task.review_round - base + 1


def _pass_base(task: Task) -> int:
    current = running_round(task)
    return current.first_review_round if current is not None else 1


def review_requests_used(task: Task) -> int:
    """Reviews that requested changes in the current pass (the rounds `review_rounds` counts)."""
    return StageResult.objects.filter(
        task=task, stage__name="reviewing", success=True, verdict="REQUEST_CHANGES", round__gte=_pass_base(task)
    ).count()


def test_rounds_failed(task: Task) -> int:
    """Rounds in the current pass whose test command failed after building (`max_test_rounds`)."""
    return (
        StageResult.objects.filter(
            task=task, stage__name="building", stage__parent__isnull=True, success=True, round__gte=_pass_base(task)
        )
        .exclude(tests_status__in=["", "passed"])
        .values("round")
        .distinct()
        .count()
    )


def approval_required(task: Task, workflow: Workflow) -> bool:
    if workflow.approval != "plan":
        return False
    skip = workflow.approval_skip_label.casefold()
    return not any(str(label).casefold() == skip for label in task.trigger_labels or [])


def choice_approval_required(task: Task, workflow: Workflow) -> bool:
    """Whether a selection among candidates waits for a person (who may choose another):
    always with `approval: candidates`; with `approval: plan` too (the issue's override before
    pr_creation), unless the task carries the skip label, as for the plan."""
    return workflow.approval == "candidates" or approval_required(task, workflow)


def task_await_approval(*, task: Task) -> bool:
    """running -> awaiting_approval after planning (conditional)."""
    with transaction.atomic():
        changed = Task.objects.filter(pk=task.pk, status=Task.Status.RUNNING).update(
            status=Task.Status.AWAITING_APPROVAL, status_reason="the plan awaits approval: comment `/tacx approve`"
        )
        if changed:
            task.refresh_from_db()
            event_status(task, "plan ready: awaiting approval")
    return bool(changed)
