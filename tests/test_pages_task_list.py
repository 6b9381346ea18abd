"""The task list as a reader meets it: one link per row that the keyboard focuses (the whole row
opens it, in tasks.js), a relative "started" time, the branch whole in a title attribute, and a
live dot that says in words what it means."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from dashboard.rendering import ago_text
from harness import fake_runner
from pipeline import services
from pipeline.models import Task

pytestmark = pytest.mark.django_db

BRANCH = "tacx/issue-7-add-a-greeting-with-a-very-long-branch-name-that-a-phone-cannot-show"


@pytest.fixture
def rows(client, alice, local_repository):
    client.force_login(alice)

    def get() -> dict[int, str]:
        html = client.get(reverse("dashboard:tasks")).content.decode()
        found = {}
        for task in Task.objects.all():
            row = html[html.index(f'<tr data-task="{task.pk}"') :]
            found[task.pk] = row[: row.index("</tr>")]
        found[0] = html
        return found

    return get


def test_relative_times_use_one_unit():
    assert [ago_text(s) for s in (3, 42, 300, 3 * 3600 + 59, 86400, 5 * 86400)] == [
        "just now",
        "42 s ago",
        "5 min ago",
        "3 h ago",
        "1 day ago",
        "5 days ago",
    ]


def test_a_row_has_one_focusable_link_and_a_relative_started_time(rows, local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=7)
    started = timezone.now() - timedelta(minutes=5, seconds=10)
    Task.objects.filter(pk=task.pk).update(started_at=started, branch=BRANCH)

    row = rows()[task.pk]
    assert f'<a class="row-link" href="{task.get_absolute_url()}" title="sample#7 Add a greeting">#7 Add a greeting</a>' in row
    assert f'<a href="{task.get_absolute_url()}" tabindex="-1">{task.pk}</a>' in row  # the id link is not a second tab stop
    assert row.count("<a ") == 2
    assert f'<time datetime="{started.isoformat()}" title="{started:%Y-%m-%d %H:%M:%S} UTC">5 min ago</time>' in row
    assert f'<code class="branch" title="{BRANCH}">{BRANCH}</code>' in row


def test_a_task_not_started_yet_says_since_when_it_waits(rows, local_repository):
    task, _ = services.task_create(
        repository=local_repository, issue_number=9, title="Later", trigger_source="api"
    )
    Task.objects.filter(pk=task.pk).update(triggered_at=timezone.now() - timedelta(hours=2, minutes=1))
    assert ">queued 2 h ago</time>" in rows()[task.pk]


def test_the_live_dot_has_words(rows):
    html = rows()[0]
    assert '<span id="live-state" class="live-state" title="Live updates: off on this page"><span aria-hidden="true">●</span> <span class="live-label">off</span></span>' in html


def test_the_page_costs_the_same_queries_for_3_tasks_as_for_a_full_page(client, alice, local_repository, django_assert_max_num_queries):
    """Issue 23: the page's time is its rows; no row may add a query (a lookup per row on a
    10,000-task database is what pushed the page past 50 ms before)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(alice)

    def page_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse("dashboard:tasks")).status_code == 200
        return len(queries.captured_queries)

    for n in range(3):
        fake_runner.task_running(repository=local_repository, issue_number=100 + n)
    few = page_queries()
    now = timezone.now()
    Task.objects.bulk_create(
        Task(repository=local_repository, issue_number=200 + n, title=f"t{n}", status=Task.Status.SUCCEEDED, branch=f"tacx/{n}",
             created_at=now, triggered_at=now, started_at=now, finished_at=now, workflow={})
        for n in range(60)
    )  # fmt: skip
    assert page_queries() == few
    with django_assert_max_num_queries(12):  # session, user, permissions, count, rows, repositories, live cursor
        client.get(reverse("dashboard:tasks"))


def test_hostile_text_in_a_row_is_escaped(rows, local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=8)
    Task.objects.filter(pk=task.pk).update(
        title='<script>alert(1)</script> "q" & \'s', branch='tacx/"><img src=x onerror=alert(1)>', pr_url='https://e.example/"><b>', pr_number=3
    )
    row = rows()[task.pk]
    assert "<script>" not in row and "<img" not in row and "<b>" not in row
    assert "#8 &lt;script&gt;alert(1)&lt;/script&gt; &quot;q&quot; &amp; &#x27;s</a>" in row
    assert '<a href="https://e.example/&quot;&gt;&lt;b&gt;" rel="noopener noreferrer">PR #3</a>' in row
