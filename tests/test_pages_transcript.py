"""How the task page writes the transcript and the timeline: tool calls with paths relative to
the worktree, system rows that say something, attempt times that tick like the strip's, and an
attempt line without a model that does not start with a separator."""

from __future__ import annotations

import re

import pytest

from dashboard.rendering import event_summary, worktree_relative
from harness import fake_runner
from pipeline.models import StageResult, Task

pytestmark = pytest.mark.django_db

TREE = "/var/tacx/worktrees/task-1"


@pytest.fixture
def page(client, alice, local_repository):
    client.force_login(alice)
    task = fake_runner.task_running(repository=local_repository, issue_number=7)
    Task.objects.filter(pk=task.pk).update(worktree_path=TREE)
    result = fake_runner.stage_claim(task, "planning")

    def render(events):
        fake_runner.events_add(result, events)
        return client.get(task.get_absolute_url()).content.decode()

    render.task, render.result = task, result
    return render


def test_worktree_paths_read_relative_and_a_longer_sibling_is_left_alone():
    assert worktree_relative(f"{TREE}/src/app.py", TREE) == "src/app.py"
    assert worktree_relative(f"cd {TREE} && pytest {TREE}/tests -q", TREE) == "cd . && pytest tests -q"
    assert worktree_relative(f"{TREE}0/src/app.py", TREE) == f"{TREE}0/src/app.py"
    assert worktree_relative(f"ls {TREE}/ && ls {TREE}/.git", TREE) == "ls . && ls .git"
    assert worktree_relative("/etc/passwd", TREE) == "/etc/passwd"
    assert worktree_relative(f"{TREE}/a", "") == f"{TREE}/a"  # no worktree yet: as written
    assert event_summary("tool_call", {"name": "Read", "input": {"file_path": f"{TREE}/README.md"}}, TREE) == "Read: README.md"


def test_tool_calls_show_paths_and_commands_relative_to_the_worktree(page):
    html = page(
        [
            ("tool_call", {"id": "1", "name": "Edit", "input": {"file_path": f"{TREE}/src/app.py", "old_string": "a", "new_string": "b"}}),
            ("tool_call", {"id": "2", "name": "Bash", "input": {"command": f"cd {TREE} && pytest {TREE}/tests"}}),
            ("tool_call", {"id": "3", "name": "Read", "input": {"file_path": "/etc/hosts"}}),
        ]
    )
    assert '<span class="path">src/app.py</span>' in html
    assert '<pre class="code">$ cd . &amp;&amp; pytest tests</pre>' in html
    assert '<span class="path">/etc/hosts</span>' in html  # outside the worktree: as it is
    assert 'data-now="Read: /etc/hosts"' in html


def test_a_system_status_row_says_its_status(page):
    html = page([("system", {"subtype": "status", "status": "requesting", "session_id": "s"})])
    assert re.search(r'<div class="role">system</div><div class="muted">status · requesting</div>', html)


def test_a_running_attempt_in_the_timeline_ticks_from_the_same_start_as_the_strip(page):
    html = page([])
    started = page.result.started_at.isoformat()
    strip = re.search(r'id="attempt-timer" class="timer" data-since="([^"]+)"', html).group(1)
    timeline = re.search(r'<span class="attempt-time" data-since="([^"]+)"', html).group(1)
    assert strip == timeline and strip[:19] == started[:19]


def test_a_finished_attempt_does_not_tick(page):
    fake_runner.attempt_finish(page.result)
    html = page([])
    assert re.search(r'<span class="attempt-time">\d+s</span>', html)
    assert 'class="attempt-time" data-since' not in html


def test_an_attempt_without_a_model_has_no_leading_separator(page):
    StageResult.objects.filter(pk=page.result.pk).update(model="", prompt_hash="ab" * 32, base_commit="c0ffee" * 6)
    html = page([])
    assert f'<div class="fingerprint muted">prompt {"ab" * 6} · from {("c0ffee" * 6)[:10]}</div>' in html
    StageResult.objects.filter(pk=page.result.pk).update(prompt_hash="", base_commit="")
    assert 'class="fingerprint' not in page([])  # nothing to say: no empty line
