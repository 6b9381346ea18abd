"""The server-rendered pages: login required, what each page shows, the retry and cancel buttons,
and the partials the pages' JS fetches when the event stream says something changed."""

from __future__ import annotations

import pytest
from django.urls import reverse

from harness import fake_runner
from pipeline.models import Stage, Task
from tests.conftest import git

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def running_task(local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=7, title="Add a greeting")
    result = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(result, fake_runner.sample_conversation())
    return task


@pytest.mark.parametrize(
    "name,args",
    [
        ("dashboard:tasks", []),
        ("dashboard:task-rows", []),
        ("dashboard:task-detail", [1]),
        ("dashboard:task-summary", [1]),
        ("dashboard:task-documents", [1]),
        ("dashboard:stats", []),
        ("dashboard:workers", []),
        ("dashboard:worker-rows", []),
        ("dashboard:api-docs", []),
    ],
)
def test_every_page_sends_an_anonymous_visitor_to_the_login_page(client, name, args):
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_the_login_page_logs_a_user_in(client, alice):
    page = client.get(reverse("login"))
    assert b'name="password"' in page.content
    response = client.post(reverse("login"), {"username": "alice", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert client.get(reverse("dashboard:tasks")).status_code == 200


def test_the_task_list_shows_status_repository_issue_current_stage_tokens_and_cost(browser, running_task):
    response = browser.get(reverse("dashboard:tasks"))
    assert response.status_code == 200
    html = response.content.decode()
    row = html[html.index(f'data-task="{running_task.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "Running" in row
    assert "sample" in row
    assert "#7 Add a greeting" in row
    assert '<td class="current-stage">planning</td>' in row
    assert "1.5k" in row  # the running attempt's tokens (1200 + 340)
    assert "$0.0087" in row
    assert f'data-live-after="{running_task.events.order_by("-id").first().pk}"' in html


def test_the_task_list_filters_by_status_repository_and_search(browser, local_repository, running_task):
    other, _ = fake_runner.services.task_create(repository=local_repository, issue_number=8, title="Fix the parser")

    def shown(**params) -> set[int]:
        html = browser.get(reverse("dashboard:task-rows"), params).content.decode()
        return {t.pk for t in Task.objects.all() if f'data-task="{t.pk}"' in html}

    assert shown() == {running_task.pk, other.pk}
    assert shown(status="queued") == {other.pk}
    assert shown(status="running") == {running_task.pk}
    assert shown(search="parser") == {other.pk}
    assert shown(search="#7") == {running_task.pk}
    assert shown(repository=str(local_repository.pk)) == {running_task.pk, other.pk}
    assert shown(repository="nope") == set()
    assert shown(status="bogus") == {running_task.pk, other.pk}  # an invalid filter is ignored


def test_the_task_list_pages_through_many_tasks(browser, local_repository):
    for n in range(1, 56):
        fake_runner.services.task_create(repository=local_repository, issue_number=n, title=f"Issue {n}")
    first = browser.get(reverse("dashboard:tasks")).content.decode()
    assert "page 1 of 2" in first
    second = browser.get(reverse("dashboard:tasks"), {"page": 2}).content.decode()
    assert second.count("<tr data-task=") == 5


def test_the_task_page_shows_the_timeline_transcript_and_workflow(browser, running_task):
    html = browser.get(running_task.get_absolute_url()).content.decode()
    assert 'data-stage="planning" data-status="running"' in html
    assert 'data-stage="building" data-status="pending"' in html
    assert '<strong class="tool-name">Write</strong>' in html
    assert '<span class="path">plan.md</span>' in html
    assert "File created successfully at: plan.md" in html
    assert "<strong>the plan</strong>" in html  # assistant text rendered from markdown
    assert "in 1.2k · out 340" in html
    assert "planning · attempt 1" in html
    assert "review_rounds: 2" in html  # the workflow snapshot as YAML
    assert 'id="cancel"' in html and 'id="retry"' not in html


def test_the_task_page_renders_plan_and_review_markdown_without_scripts(browser, running_task):
    planning = running_task.results.get(stage__name="planning")
    fake_runner.attempt_finish(planning, output_text="# Plan\n\n<script>alert(1)</script>\n\n* step <b onclick='x()'>one</b>")
    building = fake_runner.stage_claim(running_task, "building")
    fake_runner.attempt_finish(building, output_text="1 file changed")
    reviewing = fake_runner.stage_claim(running_task, "reviewing")
    fake_runner.attempt_finish(reviewing, output_text="Looks good.\n\nVERDICT: APPROVE", verdict="APPROVE")
    html = browser.get(reverse("dashboard:task-documents", args=[running_task.pk])).content.decode()
    assert "<h1>Plan</h1>" in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # raw HTML is shown as text, not dropped
    assert "<b " not in html and "<li>step &lt;b onclick='x()'&gt;one&lt;/b&gt;</li>" in html
    assert "Looks good." in html and "verdict-approve" in html


def test_the_task_page_shows_the_branch_diff_from_the_repository(browser, running_task, origin_and_clone):
    _, clone = origin_and_clone
    base = git(clone, "rev-parse", "HEAD")
    git(clone, "checkout", "-q", "-b", "tacx/7-add-a-greeting")
    (clone / "greeting.txt").write_text("hello\n")
    git(clone, "add", "greeting.txt")
    git(clone, "commit", "-q", "-m", "greet")
    git(clone, "checkout", "-q", "main")
    Task.objects.filter(pk=running_task.pk).update(branch="tacx/7-add-a-greeting", base_commit=base)
    html = browser.get(reverse("dashboard:task-documents", args=[running_task.pk])).content.decode()
    assert '<span class="add">+hello</span>' in html
    assert "greeting.txt" in html


def test_the_summary_partial_follows_the_task_through_its_stages(browser, running_task):
    url = reverse("dashboard:task-summary", args=[running_task.pk])
    assert 'data-stage="planning" data-status="running"' in browser.get(url).content.decode()
    fake_runner.attempt_finish(running_task.results.get(stage__name="planning"), output_text="# Plan")
    fake_runner.stage_claim(running_task, "building")
    html = browser.get(url).content.decode()
    assert 'data-stage="planning" data-status="succeeded"' in html
    assert 'data-stage="building" data-status="running"' in html


def test_the_retry_button_requeues_a_failed_task(browser, running_task):
    fake_runner.attempt_finish(running_task.results.get(stage__name="planning"), success=False, error="agent exited with code 1")
    running_task.refresh_from_db()
    assert running_task.status == Task.Status.FAILED
    html = browser.get(running_task.get_absolute_url()).content.decode()
    assert 'id="retry"' in html and "agent exited with code 1" in html
    response = browser.post(reverse("dashboard:task-retry", args=[running_task.pk]), follow=True)
    running_task.refresh_from_db()
    assert running_task.status == Task.Status.RUNNING
    assert running_task.stages.get(name="planning").status == Stage.Status.QUEUED
    assert f"Task {running_task.pk} retried." in response.content.decode()


def test_the_retry_button_explains_why_a_running_task_cannot_be_retried(browser, running_task):
    response = browser.post(reverse("dashboard:task-retry", args=[running_task.pk]), follow=True)
    assert "Not retried: task" in response.content.decode()
    running_task.refresh_from_db()
    assert running_task.status == Task.Status.RUNNING


def test_the_cancel_button_cancels_a_running_task(browser, running_task):
    response = browser.post(reverse("dashboard:task-cancel", args=[running_task.pk]), follow=True)
    running_task.refresh_from_db()
    assert running_task.status == Task.Status.CANCELLED
    assert "cancelled by alice" in running_task.status_reason
    assert f"Task {running_task.pk} cancelled." in response.content.decode()
    again = browser.post(reverse("dashboard:task-cancel", args=[running_task.pk]), follow=True)
    assert "Not cancelled" in again.content.decode()


def test_retry_and_cancel_need_a_post_with_a_csrf_token(alice, running_task):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.get(reverse("dashboard:task-cancel", args=[running_task.pk])).status_code == 405
    assert strict.post(reverse("dashboard:task-cancel", args=[running_task.pk])).status_code == 403
    running_task.refresh_from_db()
    assert running_task.status == Task.Status.RUNNING


def test_an_unknown_task_is_a_404(browser):
    assert browser.get(reverse("dashboard:task-detail", args=[999999])).status_code == 404
    assert browser.post(reverse("dashboard:task-retry", args=[999999])).status_code == 404


def test_the_stats_page_shows_rates_charts_and_the_median_time_to_pr(browser, running_task):
    fake_runner.attempt_finish(running_task.results.get(stage__name="planning"), output_text="# Plan")
    html = browser.get(reverse("dashboard:stats")).content.decode()
    assert 'id="chart-tokens"' in html and 'id="chart-data"' in html
    assert '<td>planning</td><td class="num">1</td><td class="num">1</td>' in html
    assert "100%" in html
    assert browser.get(reverse("dashboard:stats"), {"days": "abc"}).status_code == 200


def test_the_workers_page_lists_live_workers_with_their_heartbeat(browser, running_task):
    html = browser.get(reverse("dashboard:workers")).content.decode()
    assert "planning" in html and f"task {running_task.pk}" in html
    assert "No live workers" not in html


def test_the_task_page_shows_spend_against_budget_and_each_attempts_fingerprint(browser, local_repository):
    from decimal import Decimal

    from pipeline.models import StageResult

    local_repository.daily_budget_usd = Decimal("3.00")
    local_repository.save()
    task = fake_runner.task_running(repository=local_repository, issue_number=8)
    result = fake_runner.stage_claim(task, "planning")
    StageResult.objects.filter(pk=result.pk).update(
        cost_usd=Decimal("0.75"), model="claude-sonnet-4-5", prompt_hash="ab" * 32, base_commit="c0ffee" * 6
    )
    page = browser.get(reverse("dashboard:task-detail", args=[task.pk])).content.decode()
    assert "Spend against budget" in page
    assert "repository daily" in page and "$0.75" in page and "$3.00" in page
    assert "model claude-sonnet-4-5" in page and "prompt " + "ab" * 6 in page and "from " + ("c0ffee" * 6)[:10] in page
