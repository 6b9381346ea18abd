"""Plan approval (`approval: plan`): the task stops after planning, the plan is posted on the
issue, `@tacx <feedback>` plans again with the feedback, `/tacx approve` (or the API or the
dashboard button) continues; the skip label goes straight through."""

from __future__ import annotations

import pytest
from github_standin import standin  # noqa: F401
from rounds_helpers import coordinator_for, deliver, drive, make_repo  # noqa: F401

from pipeline.models import Round, StageResult, Task


@pytest.fixture
def gated(make_repo, standin):  # noqa: F811
    make_repo(extra="approval: plan")
    return coordinator_for(standin)


def say(client, standin, number: int, body: str, author: str = "alice"):  # noqa: F811
    c = standin.add_comment("octo/sample", number, body, author=author)
    deliver(client, standin, "issue_comment.created", delivery=f"c-{c['id']}", sender=author, number=number, comment_id=c["id"])
    return c


def plan_comments(standin, number: int) -> list[str]:  # noqa: F811
    return [c["body"] for c in standin.comments_on("octo/sample", number) if "<!-- tacx:plan:" in c["body"]]


def test_the_task_waits_after_planning_replans_on_feedback_and_continues_on_approve(client, gated, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=5, title="Add a changelog", labels=("rpi-auto",), labeled_by="alice")
    drive(gated)
    task = Task.objects.get(issue_number=5)
    assert task.status == Task.Status.AWAITING_APPROVAL
    assert task.stages.get(name="building").status == "pending" and task.pr_number is None
    (posted,) = plan_comments(standin, 5)
    assert "```markdown\n# Plan\n\nAdd CHANGES.md.\n```" in posted and "/tacx approve" in posted

    say(client, standin, 5, "@tacx please also cover the README")
    drive(gated)
    task.refresh_from_db()
    assert task.status == Task.Status.AWAITING_APPROVAL
    (replan,) = Round.objects.filter(task=task)
    assert replan.kind == Round.Kind.REPLAN and replan.status == Round.Status.SUCCEEDED
    prompt = StageResult.objects.get(followup=replan, stage__name="planning").prompt
    assert "please also cover the README" in prompt and "TACX-STAGE: planning" in prompt
    assert StageResult.objects.filter(task=task, stage__name="planning", success=True).count() == 2
    assert not StageResult.objects.filter(task=task, stage__name="building").exists()
    assert len(plan_comments(standin, 5)) == 2  # the new plan is posted too

    say(client, standin, 5, "/tacx approve", author="rita")  # no write access: refused
    drive(gated)
    assert Task.objects.get(pk=task.pk).status == Task.Status.AWAITING_APPROVAL
    say(client, standin, 5, "/tacx approve", author="mo")
    drive(gated)
    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED and task.pr_number
    assert len(standin.pulls_of("octo/sample")) == 1
    commands = list(Round.objects.filter(task=task, kind=Round.Kind.COMMAND).order_by("id").values_list("status", flat=True))
    assert commands == ["refused", "done"]


def test_the_api_and_the_dashboard_button_approve_a_waiting_task_once(client, gated, standin, alice):  # noqa: F811
    standin.add_issue("octo/sample", number=6, labels=("rpi-auto",), labeled_by="alice")
    standin.add_issue("octo/sample", number=8, labels=("rpi-auto",), labeled_by="alice")
    drive(gated)
    task, other = Task.objects.get(issue_number=6), Task.objects.get(issue_number=8)
    assert task.status == other.status == Task.Status.AWAITING_APPROVAL
    client.force_login(alice)
    page = client.get(f"/tasks/{task.pk}/")
    assert b'id="approve"' in page.content
    answer = client.post(f"/api/tasks/{task.pk}/approve/")
    assert answer.status_code == 200 and answer.json()["status"] == "running"
    assert client.post(f"/api/tasks/{task.pk}/approve/").status_code == 409
    assert client.post(f"/tasks/{other.pk}/approve/").status_code == 302
    assert Task.objects.get(pk=other.pk).status == Task.Status.RUNNING
    assert b'id="approve"' not in client.get(f"/tasks/{other.pk}/").content
    drive(gated)
    task.refresh_from_db(), other.refresh_from_db()
    assert task.status == other.status == Task.Status.SUCCEEDED
    assert client.get(f"/api/tasks/{task.pk}/").json()["rounds"] == []


def test_the_skip_label_goes_straight_through(gated, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=7, labels=("rpi-auto", "rpi-auto-approved"), labeled_by="alice")
    drive(gated)
    task = Task.objects.get(issue_number=7)
    assert task.status == Task.Status.SUCCEEDED and task.pr_number
    assert plan_comments(standin, 7) == []
