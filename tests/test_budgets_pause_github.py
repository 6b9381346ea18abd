"""Answering a budget pause from GitHub (`/tacx budget` on the issue or the PR, through the webhook
and the coordinator), from the dashboard and from the REST API: who may, what they are told, and
what happens. The agent is the looping `spend` program of tests/agents/scripted_agent.py (the
`command` provider, Claude's stream format, priced as claude-sonnet-4-5); GitHub is the stand-in."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from github_standin import standin  # noqa: F401
from rounds_helpers import coordinator_for, deliver, drive

from pipeline.models import BudgetPause, Repository, Round, Stage, StageResult, Task

AGENT = str(Path(__file__).parent / "agents" / "scripted_agent.py")


def budget_workflow(budget: dict) -> str:
    building = {
        "name": "building",
        "provider": "command",
        "model": "claude-sonnet-4-5",
        "timeout": 60,
        "max_attempts": 2,
        "budget": budget,
        "options": {"argv": [sys.executable, AGENT, "spend", "4", "0.4"], "format": "claude-stream-json"},
    }
    return yaml.safe_dump({"stages": [building, {"name": "pr_creation"}]})


@pytest.fixture
def paused(db, standin, tmp_path):  # noqa: F811
    """octo/sample with a building stage whose $1.00 budget pauses; issue 12's task paused."""
    from conftest import make_origin_and_clone

    files = {"README.md": "# sample\n", ".tac/workflow.yaml": budget_workflow({"usd": "1.00", "on_exceed": "pause"})}
    origin, _ = make_origin_and_clone(tmp_path, "sample", files)
    standin.repos["octo/sample"].origin = str(origin)
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=str(origin), default_branch="main")
    coordinator = coordinator_for(standin)
    standin.add_issue("octo/sample", number=12, title="Loop and spend", body="Write work.txt.", labels=("rpi-auto",), labeled_by="alice")
    drive(coordinator)
    task = Task.objects.get(issue_number=12)
    assert task.status == Task.Status.PAUSED, task.status_reason
    return coordinator, task


def say(client, standin, number: int, body: str, *, author: str):  # noqa: F811
    c = standin.add_comment("octo/sample", number, body, author=author)
    answer = deliver(client, standin, "issue_comment.created", delivery=f"c-{c['id']}", sender=author, number=number, comment_id=c["id"])
    assert answer.status_code == 202
    return c


def replies(standin, number: int, round_: Round) -> list[str]:  # noqa: F811
    return [c["body"] for c in standin.comments_on("octo/sample", number) if f"tacx:round:{round_.pk}" in c["body"]]


def test_the_pause_asks_on_the_issue_a_reader_is_refused_and_a_writer_s_raise_finishes_the_task(client, paused, standin):  # noqa: F811
    coordinator, task = paused
    pause = BudgetPause.objects.get(task=task)
    (question,) = [c["body"] for c in standin.comments_on("octo/sample", 12) if f"tacx:pause:{pause.pk}" in c["body"]]
    assert "the stage budget of stage `building` ($1.00) was reached in stage `building`; $1.35 (330,000 tokens) spent" in question
    assert "`/tacx budget +1.35`" in question and "`/tacx budget stop`" in question and "Nobody answering ends the task at" in question
    assert BudgetPause.objects.get(pk=pause.pk).comment_id  # posted once, recorded
    drive(coordinator)
    assert len([c for c in standin.comments_on("octo/sample", 12) if f"tacx:pause:{pause.pk}" in c["body"]]) == 1

    say(client, standin, 12, "/tacx budget +5.00", author="rita")  # read access only
    drive(coordinator)
    refused = Round.objects.get(task=task, kind=Round.Kind.COMMAND)
    assert refused.status == Round.Status.REFUSED
    (reply,) = replies(standin, 12, refused)
    assert "`/tacx budget` is refused: rita has read access to octo/sample; write, maintain or admin is required" in reply
    assert Task.objects.get(pk=task.pk).status == Task.Status.PAUSED and BudgetPause.objects.get(pk=pause.pk).status == "waiting"

    say(client, standin, 12, "/tacx budget +2", author="alice")
    drive(coordinator)
    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    raised = Round.objects.filter(task=task, kind=Round.Kind.COMMAND).order_by("id").last()
    assert raised.status == Round.Status.DONE and raised.text == "/tacx budget +2"
    (reply,) = replies(standin, 12, raised)
    assert "Raised the stage budget of stage building by $2.00 (now $3.00): stage building goes on where it stopped." in reply
    pause.refresh_from_db()
    assert (pause.status, pause.answered_by, pause.answer_source, pause.raise_usd) == ("raised", "alice", "github", Decimal("2.00"))
    second = StageResult.objects.get(task=task, stage__name="building", attempt=2)
    assert second.success and "BUDGET PAUSE ANSWERED" in second.prompt
    assert task.pr_number and len(standin.pulls_of("octo/sample")) == 1


def test_budget_stop_ends_the_task_and_a_bad_amount_or_a_plain_budget_command_gets_an_answer(client, paused, standin):  # noqa: F811
    coordinator, task = paused
    say(client, standin, 12, "/tacx budget", author="mo")
    say(client, standin, 12, "/tacx budget +lots", author="mo")
    say(client, standin, 12, "/tacx budget +0.10", author="mo")
    drive(coordinator)
    status, bad, short = Round.objects.filter(task=task, kind=Round.Kind.COMMAND).order_by("id")
    assert status.status == Round.Status.DONE and status.reason.startswith("paused: budget: stage budget $1.00 reached")
    assert bad.status == Round.Status.REFUSED and "cannot read the amount: write +2.00 (US dollars) or +50000 tokens" in bad.reason
    assert short.status == Round.Status.REFUSED and "still reached ($1.35 spent): raise it by more than $0.35" in short.reason
    assert Task.objects.get(pk=task.pk).status == Task.Status.PAUSED

    say(client, standin, 12, "/tacx budget stop", author="ada")
    drive(coordinator)
    task.refresh_from_db()
    assert task.status == Task.Status.BUDGET_EXCEEDED and task.status_reason.startswith("ended at the budget pause by ada")
    stop = Round.objects.filter(task=task, kind=Round.Kind.COMMAND).order_by("id").last()
    assert stop.status == Round.Status.DONE and f"`{task.branch}`" in stop.reason
    assert BudgetPause.objects.get(task=task).status == BudgetPause.Status.STOPPED
    say(client, standin, 12, "/tacx budget +1", author="ada")
    drive(coordinator)
    late = Round.objects.filter(task=task, kind=Round.Kind.COMMAND).order_by("id").last()
    assert late.status == Round.Status.REFUSED and "not paused by a budget" in late.reason


def test_the_api_and_the_dashboard_answer_a_pause_with_the_approve_permission(client, paused, standin, alice, django_user_model):  # noqa: F811
    from conftest import grant
    from rest_framework.test import APIClient

    _, task = paused
    viewer = grant(django_user_model.objects.create_user("vic", "v@example.com", None), "view_task")
    api = APIClient()
    api.force_authenticate(viewer)
    assert api.post(f"/api/tasks/{task.pk}/budget/raise/", {"usd": "2.00"}, format="json").status_code == 403
    api.force_authenticate(alice)
    detail = api.get(f"/api/tasks/{task.pk}/").json()
    assert detail["status"] == "paused"
    (shown,) = detail["budget_pauses"]
    assert (shown["status"], shown["scope"], shown["stage"], shown["limit_usd"], shown["spent_usd"]) == ("waiting", "stage", "building", "1.000000", "1.350000")
    answer = api.post(f"/api/tasks/{task.pk}/budget/raise/", {"tokens": 1000}, format="json")
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "tokens" and "has no token limit" in answer.json()["error"]["message"]
    answer = api.post(f"/api/tasks/{task.pk}/budget/raise/", {"usd": "1.00", "tokens": 5}, format="json")
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "usd"

    # The page shows the figures and, to who may approve, the answers.
    client.force_login(alice)
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert 'id="budget-pause"' in page and 'id="budget-raise"' in page and 'id="budget-stop"' in page
    assert "$1.35" in page and "$1.00" in page
    client.force_login(viewer)
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert 'id="budget-pause"' in page and 'id="budget-raise"' not in page
    assert client.post(f"/tasks/{task.pk}/budget/raise/", {"amount": "+2.00"}).status_code == 403
    client.force_login(alice)
    assert client.post(f"/tasks/{task.pk}/budget/raise/", {"amount": "+2.00"}).status_code == 302
    task.refresh_from_db()
    assert task.status == Task.Status.RUNNING and task.stages.get(name="building").status == Stage.Status.QUEUED
    assert BudgetPause.objects.get(task=task).answer_source == "dashboard"
    answer = api.post(f"/api/tasks/{task.pk}/budget/stop/")
    assert answer.status_code == 409 and "not paused by a budget" in answer.json()["error"]["message"]
