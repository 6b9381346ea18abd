"""A real browser against the real server: Debian's chromium driven by Playwright, the ASGI app
served by daphne in a subprocess on the test database (so websockets work), the embedded
configuration (no Redis: the consumers poll the events table).

The test plays the stage runner itself (``dashboard.testing``), moving a task on while the pages
are open, and checks that they follow without a reload. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from dashboard import testing
from pipeline.models import Task

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"),
]


def database_url() -> str:
    """The test database, as the server process must see it."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne serving the app on the test database, for every test of this module (each test
    still gets an empty database: they use transactional_db)."""
    tmp = tmp_path_factory.mktemp("server")
    with django_db_blocker.unblock():
        url = database_url()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
        "DJANGO_SETTINGS_MODULE": "tacx_site.settings",
        "DATABASE_URL": url,
        "TACX_VAR_DIR": str(tmp / "var"),
        "TACX_WORKTREE_ROOT": str(tmp / "trees"),
    }
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    with testing.daphne_serving(env=env, log_path=tmp / "daphne.log") as url:
        yield url


@pytest.fixture
def page(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's ORM calls are still
    # plain synchronous code between its steps.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(10_000)
        yield page
        context.close()
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)


def test_a_user_watches_a_task_advance_reads_its_transcript_and_retries_it(server, page, transactional_db, alice, local_repository):
    from playwright.sync_api import expect

    task = testing.task_running(repository=local_repository, issue_number=7, title="Add a greeting")
    planning = testing.stage_claim(task, "planning")
    testing.events_add(planning, testing.sample_conversation())

    # Log in through the form.
    page.goto(server + "/")
    expect(page).to_have_url(server + "/accounts/login/?next=/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "correct-horse-battery")
    shot(page, "01-login")
    page.click("button[type=submit]")
    expect(page).to_have_url(server + "/")

    # The list follows the task from planning to building without a reload.
    row = page.locator(f'tr[data-task="{task.pk}"]')
    expect(row.locator("td.current-stage")).to_have_text("planning")
    expect(page.locator("#live-state")).to_have_class("live-state live")
    page.evaluate("window.__notReloaded = true")
    shot(page, "02-tasks-planning")
    testing.attempt_finish(planning, output_text="# Plan\n\n1. Add `greet()`\n2. Test it")
    building = testing.stage_claim(task, "building")
    expect(row.locator("td.current-stage")).to_have_text("building")
    assert page.evaluate("window.__notReloaded") is True
    shot(page, "03-tasks-building")

    # The task page follows building -> reviewing without a reload.
    row.locator("a").first.click()
    expect(page).to_have_url(server + f"/tasks/{task.pk}/")
    expect(page.locator('[data-stage="building"]')).to_have_attribute("data-status", "running")
    expect(page.locator("#plan")).to_contain_text("Add greet()")
    page.evaluate("window.__notReloaded = true")
    testing.events_add(building, [("message", {"role": "assistant", "text": "Building the greeting."})])
    testing.attempt_finish(building, output_text="1 file changed")
    reviewing = testing.stage_claim(task, "reviewing")
    expect(page.locator('[data-stage="reviewing"]')).to_have_attribute("data-status", "running")
    expect(page.locator('[data-stage="building"]')).to_have_attribute("data-status", "succeeded")
    assert page.evaluate("window.__notReloaded") is True
    shot(page, "04-task-reviewing")

    # The transcript: messages, tool calls with their input, tool results, usage; live.
    page.get_by_role("tab", name="Transcript").click()
    transcript = page.locator("#transcript")
    expect(transcript).to_contain_text("I will read the code and write the plan.")
    expect(transcript.locator(".kind-tool_call .tool-name").first).to_have_text("Write")
    expect(transcript.locator(".kind-tool_call .path").first).to_have_text("plan.md")
    expect(transcript).to_contain_text("File created successfully at: plan.md")
    expect(transcript).to_contain_text("in 1.2k · out 340")
    expect(transcript).to_contain_text("Building the greeting.")
    testing.events_add(reviewing, [("tool_call", {"id": "t9", "name": "Bash", "input": {"command": "git diff HEAD~1"}})])
    expect(transcript.locator(".kind-tool_call pre.code").last).to_contain_text("git diff HEAD~1")
    expect(transcript.locator(".attempt-head").last).to_have_text("reviewing · attempt 1")
    assert transcript.locator("li.event").count() == task.events.count()  # nothing twice
    shot(page, "05-transcript")

    # The review fails: the Retry button appears live; pressing it re-queues the stage.
    testing.attempt_finish(reviewing, success=False, error="the review has no verdict")
    expect(page.locator("#task-status")).to_have_text("Failed")
    expect(page.locator(".attempt.outcome-failed")).to_contain_text("the review has no verdict")
    shot(page, "06-failed")
    page.locator("#retry").click()
    expect(page.locator(".messages")).to_contain_text(f"Task {task.pk} retried.")
    expect(page.locator("#task-status")).to_have_text("Running")
    expect(page.locator('[data-stage="reviewing"]')).to_have_attribute("data-status", "queued")
    shot(page, "07-retried")
    task.refresh_from_db()
    assert task.status == Task.Status.RUNNING


def login(page, server: str) -> None:
    page.goto(server + "/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "correct-horse-battery")
    page.click("button[type=submit]")


def test_the_stats_charts_the_workers_and_the_api_docs_render_in_the_browser(server, page, transactional_db, alice, local_repository):
    from playwright.sync_api import expect

    task = testing.task_running(repository=local_repository, issue_number=3)
    testing.attempt_finish(testing.stage_claim(task, "planning"), output_text="# Plan")
    building = testing.stage_claim(task, "building")
    login(page, server)

    page.goto(server + "/stats/?days=7")
    expect(page.locator("#chart-tokens rect.bar")).to_have_count(7)
    expect(page.locator("#chart-cost polyline.line")).to_have_count(1)
    shot(page, "10-stats")

    page.goto(server + "/workers/")
    expect(page.locator(f'#worker-rows tr[data-worker="{building.worker_id}"]')).to_contain_text("building")
    testing.attempt_finish(building, output_text="done")  # the worker exits: the page follows
    expect(page.locator(f'#worker-rows tr[data-worker="{building.worker_id}"]')).to_have_count(0, timeout=8000)
    shot(page, "11-workers")

    page.goto(server + "/api/docs/")
    expect(page.locator("details.operation")).to_have_count(11)  # every operation, approve included
    page.locator("#tasks_create summary").click()
    expect(page.locator("#tasks_create")).to_contain_text("issue_number *")
    shot(page, "12-api-docs")
