"""The failure callout: a task that ended without delivering says why in a red box, lists every
problem of an invalid workflow, and names the next step. A failed planner's output is not shown
as the plan."""

from __future__ import annotations

import pytest
import yaml
from django.urls import reverse

from dashboard import failures
from harness import fake_runner
from pipeline import services
from pipeline.models import Task
from tests.conftest import git

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(client, alice):
    client.force_login(alice)
    return client


def test_an_invalid_workflow_lists_every_error_and_says_to_fix_and_retry(browser, local_repository, origin_and_clone):
    _, clone = origin_and_clone
    (clone / ".tac").mkdir()
    (clone / ".tac" / "workflow.yaml").write_text(
        yaml.safe_dump({"stages": [{"name": "planning", "provider": "clod"}, {"name": "building", "timeout": -1}, {"name": "pr_creation"}]})
    )
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "broken workflow")
    task, _ = services.task_create(repository=local_repository, issue_number=3, title="Broken")
    services.task_dispatch(task=task, enqueue=False)
    html = browser.get(reverse("dashboard:task-summary", args=[task.pk])).content.decode()
    callout = html.split('id="failure"')[1].split("</div>")[0]
    assert "callout-failed" in html and 'role="alert"' in html
    assert "<li>.tac/workflow.yaml: stages[0] (planning).provider: unknown provider &#x27;clod&#x27;" in callout
    assert "<li>.tac/workflow.yaml: stages[1] (building).timeout: must be &gt;= 1, got -1</li>" in callout
    assert "Next step:" in callout and "press Retry" in callout


@pytest.mark.parametrize(
    "reason, status, step",
    [
        ("stage planning failed: agent's API key was refused (HTTP 401)", Task.Status.FAILED, "API key"),
        ("stage building: task budget $1.00 reached", Task.Status.BUDGET_EXCEEDED, "Raise the budget"),
        ("stage building failed: timed out after 60 s", Task.Status.FAILED, "timeout"),
        ("stage planning failed: something unheard of", Task.Status.FAILED, "Read the failed attempt"),
    ],
)
def test_the_next_step_follows_the_reason(local_repository, reason, status, step):
    task = fake_runner.task_running(repository=local_repository, issue_number=4)
    services.task_fail(task=task, reason=reason, status=status)
    failure = failures.failure_explain(Task.objects.get(pk=task.pk))
    assert failure.reasons == [reason] and step in failure.next_step


def test_a_running_or_succeeded_task_has_no_callout(local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=5)
    assert failures.failure_explain(task) is None


def test_a_failed_planners_output_is_not_shown_as_the_plan(browser, local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=6)
    fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), success=False, error="planning left no plan", output_text="I could not decide.")
    html = browser.get(reverse("dashboard:task-documents", args=[task.pk])).content.decode()
    assert "I could not decide." not in html and "No plan yet." in html
