"""A real browser against the real server: Debian's chromium driven by Playwright, the ASGI app
served by daphne in a subprocess on the test database (so websockets work), the embedded
configuration (no Redis: the consumers poll the events table).

The test plays the stage runner itself (``harness.fake_runner``), moving a task on while the pages
are open, and checks that they follow without a reload. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection

from harness import fake_runner
from pipeline import jobs
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


# Where the running server keeps its var directory (a test that makes a task's worktree makes it
# where the server looks for the task store).
SERVED: dict[str, Path] = {}


@pytest.fixture(scope="session")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne serving the app on the test database, for every browser test of the session (each
    test still gets an empty database: they use transactional_db)."""
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
    SERVED["var"] = tmp / "var"
    with fake_runner.daphne_serving(env=env, log_path=tmp / "daphne.log") as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    """One browser for the whole module (each test gets its own context: cookies, storage)."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's ORM calls are still
    # plain synchronous code between its steps.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
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
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def new_page(chromium, *, width: int = 1400, height: int = 1000):
    context = chromium.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}") or dialog.dismiss())
    page.js_errors = errors
    return context, page


@pytest.fixture
def page(chromium):
    context, page = new_page(chromium)
    yield page
    context.close()
    assert page.js_errors == [], page.js_errors


@pytest.fixture
def phone(chromium):
    """A 390 × 844 phone (iPhone 12-14 size)."""
    context, page = new_page(chromium, width=390, height=844)
    yield page
    context.close()
    assert page.js_errors == [], page.js_errors


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)


def test_a_user_watches_a_task_advance_reads_its_transcript_and_retries_it(server, page, transactional_db, alice, local_repository):
    from playwright.sync_api import expect

    task = fake_runner.task_running(repository=local_repository, issue_number=7, title="Add a greeting")
    planning = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(planning, fake_runner.sample_conversation())

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
    fake_runner.attempt_finish(planning, output_text="# Plan\n\n1. Add `greet()`\n2. Test it")
    building = fake_runner.stage_claim(task, "building")
    expect(row.locator("td.current-stage")).to_have_text("building")
    assert page.evaluate("window.__notReloaded") is True
    shot(page, "03-tasks-building")

    # The task page follows building -> reviewing without a reload.
    row.locator("a").first.click()
    expect(page).to_have_url(server + f"/tasks/{task.pk}/")
    expect(page.locator('[data-stage="building"]')).to_have_attribute("data-status", "running")
    expect(page.locator("#plan")).to_contain_text("Add greet()")
    page.evaluate("window.__notReloaded = true")
    fake_runner.events_add(building, [("message", {"role": "assistant", "text": "Building the greeting."})])
    fake_runner.attempt_finish(building, output_text="1 file changed")
    reviewing = fake_runner.stage_claim(task, "reviewing")
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
    fake_runner.events_add(reviewing, [("tool_call", {"id": "t9", "name": "Bash", "input": {"command": "git diff HEAD~1"}})])
    expect(transcript.locator(".kind-tool_call pre.code").last).to_contain_text("git diff HEAD~1")
    expect(transcript.locator(".attempt-head").last).to_have_text("reviewing · attempt 1")
    assert transcript.locator("li.event").count() == task.events.count()  # nothing twice
    shot(page, "05-transcript")

    # The review fails: the Retry button appears live; pressing it re-queues the stage.
    fake_runner.attempt_finish(reviewing, success=False, error="the review has no verdict")
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

    task = fake_runner.task_running(repository=local_repository, issue_number=3)
    fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), output_text="# Plan")
    building = fake_runner.stage_claim(task, "building")
    login(page, server)

    page.goto(server + "/stats/?days=7")
    expect(page.locator("#chart-tokens rect.bar")).to_have_count(7)
    expect(page.locator("#chart-cost polyline.line")).to_have_count(1)
    shot(page, "10-stats")

    page.goto(server + "/workers/")
    expect(page.locator(f'#worker-rows tr[data-worker="{building.worker_id}"]')).to_contain_text("building")
    fake_runner.attempt_finish(building, output_text="done")  # the worker exits: the page follows
    expect(page.locator(f'#worker-rows tr[data-worker="{building.worker_id}"]')).to_have_count(0, timeout=8000)
    shot(page, "11-workers")

    schema = page.request.get(server + "/api/schema/?format=json").json()
    operations = sum(1 for item in schema["paths"].values() for method in item if method in ("get", "post", "put", "patch", "delete"))
    assert operations >= 11
    page.goto(server + "/api/docs/")
    expect(page.locator("details.operation")).to_have_count(operations)  # every operation of the schema, approve included
    page.locator("#tasks_create > summary").click()
    expect(page.locator("#tasks_create")).to_contain_text("title *")
    expect(page.locator("#tasks_create")).to_contain_text("issue_number: integer Optional")
    # Answers list their fields and show an example; bodies too.
    page.locator("#tasks_create details.example summary", has_text="Example body").click()
    expect(page.locator("#tasks_create details.example pre").first).to_contain_text('"repository": "string"')
    page.locator("#tasks_create details.fields summary").first.click()
    expect(page.locator("#tasks_create details.fields").first).to_contain_text("pr_url")
    shot(page, "12-api-docs")


# --- the cockpit (issue 13): markdown, new task, result, failure, live transcript, phone -------

AGENT = str(ROOT / "tests" / "agents" / "scripted_agent.py")


def command_workflow() -> str:
    """Three real command stages (the scripted agent acts on the worktree) and pr_creation."""
    import yaml

    def stage(name: str, action: str) -> dict:
        return {"name": name, "provider": "command", "max_attempts": 1, "options": {"argv": [sys.executable, AGENT, action], "format": "claude-stream-json"}}

    return yaml.safe_dump(
        {"stages": [stage("planning", "plan"), stage("building", "build"), stage("reviewing", "review"), {"name": "pr_creation"}]}
    )


def test_markdown_keeps_angle_brackets_and_never_runs_markup(server, page, transactional_db, alice, local_repository):
    from playwright.sync_api import expect

    task = fake_runner.task_running(repository=local_repository, issue_number=21)
    plan = (
        '# Plan\n\n1. Add `farewell(name)` returning "Goodbye, <name>".\n2. Accept a `List<String>` of names.\n\n'
        "<script>window.__pwned = true; alert(1)</script>\n\n<img src=x onerror=\"window.__pwned = true\">\n"
    )
    fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), output_text=plan)
    fake_runner.stage_claim(task, "building")
    login(page, server)
    page.goto(server + f"/tasks/{task.pk}/#documents")
    plan_box = page.locator("#plan")
    expect(plan_box).to_contain_text('returning "Goodbye, <name>".')
    expect(plan_box.locator("code", has_text="List<String>")).to_have_count(1)
    expect(plan_box).to_contain_text("<script>window.__pwned = true; alert(1)</script>")
    expect(plan_box).to_contain_text('<img src=x onerror="window.__pwned = true">')
    assert plan_box.locator("img, script").count() == 0
    assert page.evaluate("window.__pwned") is None  # and the page fixture saw no alert()
    shot(page, "20-markdown")


def test_a_user_creates_a_task_in_the_ui_and_watches_it_finish_with_its_result(server, page, transactional_db, alice, local_repository, origin_and_clone):
    from playwright.sync_api import expect


    login(page, server)
    page.click("#new-task-button")
    expect(page).to_have_url(server + "/tasks/new/")
    page.select_option("select[name=repository]", str(local_repository.pk))
    page.fill("input[name=title]", "Add a farewell")
    page.fill("textarea[name=body]", "farewell(name) returns 'Goodbye, <name>'.")
    page.fill("textarea[name=workflow]", command_workflow())
    shot(page, "21-new-task")
    page.click("#create-task")
    task = Task.objects.get(title="Add a farewell")
    expect(page).to_have_url(server + f"/tasks/{task.pk}/")
    assert task.issue_number == 1  # none given: the next free number
    expect(page.locator(".messages")).to_contain_text(f"Task {task.pk} created")
    expect(page.locator("#task-status")).to_have_text("Running")
    # While it runs, the page opens on the transcript.
    expect(page.get_by_role("tab", name="Transcript")).to_have_attribute("aria-selected", "true")
    page.evaluate("window.__notReloaded = true")

    # The stage runner (this test, in place of a q2 worker) runs the real stages.
    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason

    expect(page.locator("#task-status")).to_have_text("Succeeded")
    result = page.locator("#result")
    expect(result).to_contain_text("Branch pushed")
    expect(result.locator("#result-branch")).to_have_text(task.branch)
    expect(result.locator("#result-origin")).to_have_text(str(origin_and_clone[0]))
    expect(result.locator("#result-command")).to_contain_text(f"git fetch {origin_and_clone[0]} {task.branch} && git diff")
    expect(page.locator("#transcript")).to_contain_text("done build")
    assert page.evaluate("window.__notReloaded") is True
    shot(page, "22-finished-result")

    # The task list shows the branch in its PR column.
    page.goto(server + "/")
    expect(page.locator(f'tr[data-task="{task.pk}"] td.result')).to_have_text(task.branch)


def test_the_failure_callout_lists_every_workflow_error_and_the_next_step(server, page, transactional_db, alice, local_repository, origin_and_clone):
    import yaml
    from playwright.sync_api import expect

    from pipeline import services
    from tests.conftest import git

    _, clone = origin_and_clone
    (clone / ".tac").mkdir()
    (clone / ".tac" / "workflow.yaml").write_text(
        yaml.safe_dump({"review_rounds": 0, "stages": [{"name": "planning", "provider": "clod"}, {"name": "building", "timeout": -1}, {"name": "pr_creation"}]})
    )
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "a broken workflow")
    task, _ = services.task_create(repository=local_repository, issue_number=5, title="Broken workflow")
    services.task_dispatch(task=task, enqueue=False)
    login(page, server)
    page.goto(server + f"/tasks/{task.pk}/")
    callout = page.locator("#failure")
    expect(callout).to_be_visible()
    expect(callout.locator("h2")).to_have_text("Failed")
    expect(callout.locator(".reasons li")).to_have_count(3)
    expect(callout).to_contain_text("review_rounds: must be >= 1, got 0")
    expect(callout).to_contain_text("stages[0] (planning).provider: unknown provider 'clod'")
    expect(callout).to_contain_text("stages[1] (building).timeout: must be >= 1, got -1")
    expect(callout.locator(".next-step")).to_contain_text("Fix these problems in .tac/workflow.yaml")
    color = callout.evaluate("el => getComputedStyle(el).borderLeftColor")
    assert color == "rgb(185, 28, 28)", color  # the red of --red
    expect(page.locator("#retry")).to_be_visible()
    shot(page, "23-failure-callout")

    # The same file given in the new-task form is refused with every error listed.
    page.goto(server + "/tasks/new/")
    page.fill("input[name=title]", "Try it anyway")
    page.fill("textarea[name=workflow]", (clone / ".tac" / "workflow.yaml").read_text())
    page.click("#create-task")
    expect(page.locator("#errors-workflow li")).to_have_count(3)


def test_a_running_task_opens_on_its_live_transcript_with_now_doing_a_timer_and_filters(server, page, transactional_db, alice, local_repository):
    from playwright.sync_api import expect

    task = fake_runner.task_running(repository=local_repository, issue_number=8)
    planning = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(planning, fake_runner.sample_conversation())
    login(page, server)
    page.goto(server + f"/tasks/{task.pk}/")
    tab = page.get_by_role("tab", name="Transcript")
    expect(tab).to_have_attribute("aria-selected", "true")
    expect(tab).to_have_attribute("aria-controls", "tab-transcript")
    expect(page.locator("#tab-transcript")).to_be_visible()
    expect(page.locator("#tab-documents")).to_be_hidden()
    expect(page.get_by_role("tabpanel")).to_have_attribute("aria-labelledby", "tab-button-transcript")
    expect(page.locator("#now-doing")).to_have_text("Write: plan.md")
    # Usage rows start hidden; tool calls can be hidden too.
    expect(page.locator("#transcript li.kind-usage")).to_be_hidden()
    expect(page.locator("#transcript li.kind-tool_call")).to_be_visible()
    page.locator("#transcript-filters input[value=tool_call]").uncheck()
    expect(page.locator("#transcript li.kind-tool_call")).to_be_hidden()
    expect(page.locator("#hidden-count")).to_contain_text("hidden by the filters")

    # The timer ticks and "now doing" follows new events, without a reload.
    timer = page.locator("#attempt-timer")
    first = timer.text_content()
    expect(timer).not_to_have_text(first, timeout=5000)
    fake_runner.events_add(planning, [("tool_call", {"id": "t2", "name": "Bash", "input": {"command": "pytest -q"}})])
    expect(page.locator("#now-doing")).to_have_text("Bash: $ pytest -q")
    expect(page.locator("#transcript li.kind-tool_call").last).to_be_hidden()  # the filter applies to new events

    # Arrow keys move between tabs (WAI-ARIA tabs).
    tab.focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Workflow")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#tab-workflow")).to_be_visible()
    shot(page, "24-live-transcript")


WIDE_ELEMENTS = "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 391).slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"


def test_every_page_fits_a_390_px_phone_without_horizontal_scrolling(server, phone, transactional_db, alice, local_repository):
    from playwright.sync_api import expect

    task = fake_runner.task_running(repository=local_repository, issue_number=9, title="A rather long title " * 4)
    planning = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(planning, fake_runner.sample_conversation())
    fake_runner.events_add(planning, [("tool_call", {"id": "t3", "name": "Bash", "input": {"command": "x" * 300}})])
    fake_runner.attempt_finish(planning, output_text="# Plan\n\n" + "a_very_long_identifier_without_spaces_" * 8)
    fake_runner.stage_claim(task, "building")
    login(phone, server)
    for path, name in [("/", "tasks"), (f"/tasks/{task.pk}/", "task"), (f"/tasks/{task.pk}/#documents", "documents"), ("/stats/", "stats"),
                       ("/workers/", "workers"), ("/attention/", "attention"), ("/tasks/new/", "new-task"), ("/api/docs/", "api-docs"), ("/no/such/page/", "404")]:
        phone.goto(server + path)
        expect(phone.locator("main")).to_be_visible()
        width = phone.evaluate("document.documentElement.scrollWidth")
        if width > 390:
            print(path, phone.evaluate(WIDE_ELEMENTS))
        assert width <= 390, f"{path} is {width} px wide on a 390 px phone"
        shot(phone, f"30-phone-{name}")


# --- the web surface as an attacker (issue 19, item 7): agent-chosen images, CSP ------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

    def log_message(self, *args):
        pass


@pytest.fixture
def image_host():
    """A loopback HTTP server standing for the agent's host: it records every request."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.paths = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_agent_written_images_load_nothing_and_the_csp_holds_with_the_live_transcript(server, page, transactional_db, alice, local_repository, image_host):
    from playwright.sync_api import expect

    base = f"http://127.0.0.1:{image_host.server_address[1]}"
    task = fake_runner.task_running(repository=local_repository, issue_number=31)
    planning = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(planning, [("message", {"role": "assistant", "text": f"Look: ![seen]({base}/message?who=viewer)"})])
    fake_runner.attempt_finish(planning, output_text=f"# Plan\n\n![chart]({base}/plan?d=c2VjcmV0)\n\n1. Do it\n")
    building = fake_runner.stage_claim(task, "building")
    page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.blockedURI + ' ' + e.violatedDirective));")
    login(page, server)

    response = page.goto(server + f"/tasks/{task.pk}/#documents")
    policy = response.headers["content-security-policy"]
    assert "img-src 'self'" in policy and "script-src 'self'" in policy and "style-src 'self'" in policy
    host = server.split("://", 1)[1]
    assert f"connect-src 'self' ws://{host} wss://{host}" in policy
    plan_box = page.locator("#plan")
    expect(plan_box.locator(".image-ref")).to_have_text(f"[image: chart] {base}/plan?d=c2VjcmV0")
    assert page.locator("img").count() == 0

    # The transcript still goes live over the websocket under the policy, and a new message's
    # image is inert too.
    page.get_by_role("tab", name="Transcript").click()
    transcript = page.locator("#transcript")
    expect(transcript.locator(".image-ref").first).to_have_text(f"[image: seen] {base}/message?who=viewer")
    expect(page.locator("#live-state")).to_have_class("live-state live")
    fake_runner.events_add(building, [("message", {"role": "assistant", "text": f"Again ![live]({base}/live)"})])
    expect(transcript.locator(".image-ref").last).to_have_text(f"[image: live] {base}/live")

    # The second wall: an <img> that got onto the page anyway is refused by the browser.
    page.evaluate(f"() => {{ const i = document.createElement('img'); i.src = '{base}/injected'; document.body.append(i); }}")
    page.wait_for_function("window.__csp.length > 0")
    assert page.evaluate("window.__csp") == [f"{base}/injected img-src"]
    page.wait_for_timeout(300)
    assert image_host.paths == []
    shot(page, "30-inert-images")


def test_the_pane_follows_cancel_shows_stopping_retry_keeps_the_tab_and_says_where_and_which_attempt(server, page, transactional_db, alice, local_repository):
    """Should-fix items of the first week: the transcript follows inside its pane (never the
    window) and stops when the reader scrolls up; a cancelled task whose agent is still being
    stopped says "stopping…" with Retry disabled; stages that never ran say "not run"; Retry
    says where it resumes, keeps the open tab, and its attempt reads "(manual retry)"."""
    from django.db.models.functions import Now
    from playwright.sync_api import expect

    from pipeline import services
    from pipeline.models import Stage, StageResult

    task = fake_runner.task_running(repository=local_repository, issue_number=9)
    planning = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(planning, fake_runner.sample_conversation() * 30)  # 30 steps: the pane overflows even with them folded
    login(page, server)
    page.goto(server + f"/tasks/{task.pk}/")
    pane = page.locator("#transcript")
    expect(page.get_by_role("tab", name="Transcript")).to_have_attribute("aria-selected", "true")
    at_bottom = "e => e.scrollHeight - e.scrollTop - e.clientHeight < 24"
    page.wait_for_function(f"({at_bottom})(document.getElementById('transcript'))")
    assert page.evaluate("window.scrollY") == 0  # the pane scrolled, not the window

    # The reader scrolls the pane up: following stops and "Jump to latest" appears.
    pane.evaluate("e => e.scrollTop = 0")
    expect(page.locator("#follow")).not_to_be_checked()
    expect(page.locator("#jump-latest")).to_be_visible()
    fake_runner.events_add(planning, [("message", {"role": "assistant", "text": "One more thing."})])
    expect(pane).to_contain_text("One more thing.")
    assert pane.evaluate("e => e.scrollTop") == 0  # left where the reader put it
    page.locator("#jump-latest").click()
    expect(page.locator("#follow")).to_be_checked()
    expect(page.locator("#jump-latest")).to_be_hidden()
    assert pane.evaluate(at_bottom)

    # Cancelled while the agent is still being stopped: "stopping…", Retry disabled; the stages
    # after it never ran.
    services.task_cancel(task=task, reason="cancelled by alice")
    expect(page.locator("#stopping")).to_contain_text("stopping planning")
    expect(page.locator("#retry")).to_be_disabled()
    expect(page.locator('[data-stage="building"] .badge').first).to_have_text("not run")
    shot(page, "30-stopping")

    # The runner ends the attempt as cancelled: Retry says where it resumes, and keeps the tab.
    StageResult.objects.filter(pk=planning.pk).update(outcome=StageResult.Outcome.CANCELLED, completed_at=Now())
    Stage.objects.filter(pk=planning.stage_id).update(status=Stage.Status.CANCELLED, lease_owner="", lease_expires_at=None)
    services.event_status(task, "stage planning cancelled", stage="planning", stage_status="cancelled")
    retry = page.locator("#retry")
    expect(retry).to_be_enabled()
    expect(retry).to_have_text("Retry from planning")
    retry.click()
    expect(page.locator(".messages")).to_contain_text(f"Task {task.pk} retried.")
    expect(page).to_have_url(server + f"/tasks/{task.pk}/#transcript")
    expect(page.get_by_role("tab", name="Transcript")).to_have_attribute("aria-selected", "true")

    # The retried attempt is named as such, and the count starts again from it.
    again = fake_runner.stage_claim(task, "planning")
    fake_runner.attempt_finish(again, success=False, error="still no plan")
    attempt = page.locator('[data-stage="planning"] .attempt[data-attempt="2"]')
    expect(attempt).to_contain_text("attempt 2 (manual retry)")
    expect(page.locator('[data-stage="planning"] .stage-head')).to_contain_text("attempts 1/")
    expect(page.locator('[data-stage="planning"] .stage-head')).to_contain_text("1 manual retry")
    shot(page, "31-manual-retry")


def test_on_a_phone_the_list_is_cards_a_row_opens_its_task_and_a_command_stage_shows_output_and_stderr(server, phone, transactional_db, alice, local_repository):
    """Should-fix items of the first week, as a phone user meets them: each task a two-line card
    (title at most two lines, the branch ellipsised with its whole name in a title, a live dot
    with words), the whole row opens the task (its link stays the keyboard's target), and a
    command stage's transcript has OUTPUT and STDERR rows, live."""
    from playwright.sync_api import expect

    branch = "tacx/issue-9-" + "a-long-branch-name-" * 4
    task = fake_runner.task_running(repository=local_repository, issue_number=9, title="A rather long title that wraps " * 4)
    Task.objects.filter(pk=task.pk).update(branch=branch)
    planning = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(planning, [("output", {"text": "compiling 3 files"}), ("stderr", {"text": "warning: x is unused"})])
    login(phone, server)
    phone.goto(server + "/")

    row = phone.locator(f'tr[data-task="{task.pk}"]')
    expect(phone.locator("#live-state .live-label")).to_have_text("live")
    title, status, started, result = (row.locator(f"td.{c}") for c in ("title", "status", "started", "result"))
    expect(started).to_contain_text("just now")
    line = phone.evaluate("parseFloat(getComputedStyle(document.querySelector('td.title a')).lineHeight)")
    assert title.locator("a").bounding_box()["height"] <= 2 * line + 1  # four lines of title, shown in two
    assert abs(status.bounding_box()["y"] - title.bounding_box()["y"]) < line  # badge and title share the first line
    second = started.bounding_box()
    assert second["y"] >= title.bounding_box()["y"] + title.bounding_box()["height"] - 1  # the rest below it
    code = result.locator("code.branch")
    expect(code).to_have_attribute("title", branch)
    box = code.bounding_box()
    assert box["x"] + box["width"] <= 390 and code.evaluate("e => e.scrollWidth > e.clientWidth")  # ellipsised, not clipped off-screen
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert row.bounding_box()["height"] < 110
    shot(phone, "40-phone-task-cards")

    # The keyboard reaches the row through its one link; the id link is no second stop.
    expect(row.locator("td.col-id a")).to_have_attribute("tabindex", "-1")
    row.locator("a.row-link").focus()
    phone.keyboard.press("Enter")
    expect(phone).to_have_url(server + f"/tasks/{task.pk}/")
    # A tap anywhere on the row (here: its started time) opens the task too.
    phone.goto(server + "/")
    row.locator("td.started").click()
    expect(phone).to_have_url(server + f"/tasks/{task.pk}/")

    transcript = phone.locator("#transcript")
    expect(transcript.locator("li.kind-output .role")).to_have_text("output", ignore_case=True)
    expect(transcript.locator("li.kind-output pre")).to_have_text("compiling 3 files")
    expect(transcript.locator("li.kind-stderr pre")).to_have_text("warning: x is unused")
    assert transcript.locator(".role-assistant").count() == 0
    fake_runner.events_add(planning, [("stderr", {"text": "error: 1 test failed"}), ("output", {"text": "done"})])
    expect(transcript.locator("li.kind-stderr pre").last).to_have_text("error: 1 test failed")
    expect(phone.locator("#now-doing")).to_have_text("done")
    shot(phone, "41-phone-command-transcript")


def test_candidates_side_by_side_a_person_chooses_another_and_opens_its_transcript(server, page, transactional_db, alice, local_repository):
    """Best of N (issue 25): the candidates panel of a task waiting at `approval: candidates`,
    the stage runner played here (three candidates ended, the selection chose c2)."""
    from playwright.sync_api import expect

    from pipeline.models import Stage, StageResult

    task = fake_runner.task_running(repository=local_repository, issue_number=25)
    building = task.stages.get(name="building")
    rows = []
    for k, (tests, lines, cost) in enumerate([("failed", 3, "0.10"), ("1/1", 9, "0.31"), ("1/1", 4, "0.12")], start=1):
        child = Stage.objects.create(
            task=task, parent=building, candidate=k, name="building", position=building.position, provider="claude", model="claude-sonnet-4-5",
            status=Stage.Status.SUCCEEDED, candidate_info={"pass": "first", "spec": {"provider": "claude", "model": "claude-sonnet-4-5", "prompt_variant": ""}},
        )  # fmt: skip
        result = StageResult.objects.create(
            stage=child, task=task, attempt=1, outcome="succeeded", success=True, provider="claude", cost_usd=cost, tests_status="failed" if k == 1 else "passed"
        )
        fake_runner.events_add(result, [("message", {"text": f"candidate c{k} at work"})])
        rows.append({"k": k, "label": "claude/claude-sonnet-4-5", "status": "succeeded", "tests": tests, "files": 1, "insertions": lines, "deletions": 0, "lines": lines, "cost_usd": cost, "error": "", "result_id": result.pk})
    record = {"candidates": rows, "passing": [2, 3], "judge": {"ok": True, "choice": 2, "reasons": "c2 documents it"}, "chosen": 2, "rule": "judge", "reasons": "c2 documents it", "applied": 2}
    Stage.objects.filter(pk=building.pk).update(status=Stage.Status.SUCCEEDED, candidate_info={"passes": {"first": record}})
    Task.objects.filter(pk=task.pk).update(status=Task.Status.AWAITING_APPROVAL, status_reason="the choice of candidate c2 awaits approval")

    login(page, server)
    page.goto(server + f"/tasks/{task.pk}/")
    panel = page.locator("#candidates-building")
    expect(panel.locator("tr.candidate")).to_have_count(3)
    expect(panel.locator("tr.candidate.chosen")).to_have_attribute("data-candidate", "2")
    expect(panel.locator("tr[data-candidate='1']")).to_contain_text("failed")
    expect(panel.locator("tr[data-candidate='3']")).to_contain_text("1 files, +4 -0")
    expect(panel).to_contain_text("Chosen: c2 by judge: c2 documents it")
    expect(panel.locator("button.choose-candidate")).to_have_count(1)  # only c3: c1's tests failed
    shot(page, "25-candidates")
    panel.locator("button.choose-candidate").click()
    expect(page.locator("#candidates-building tr.candidate.chosen")).to_have_attribute("data-candidate", "3")
    expect(page.locator("#candidates-building")).to_contain_text("Chosen: c3 by person: chosen by alice (the selection had chosen c2 by judge)")
    # A candidate's transcript link opens the transcript on its attempt.
    page.locator("#candidates-building tr[data-candidate='1'] a").click()
    expect(page.locator("#filter-attempt")).to_have_value(str(rows[0]["result_id"]))
    expect(page.locator("#transcript li.event:visible")).to_contain_text(["candidate c1 at work"])
