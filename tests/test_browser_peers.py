# ruff: noqa: F811 (the fixtures of test_browser are imported by name and used as parameters)
"""What users of the peers expect (issue 22), in real Chromium against daphne (see test_browser.py
for the set-up, shared here): talking to a task, the diff beside the log, the needs-attention
view, the transcript as steps, and repositories with their workflow from the UI."""

from __future__ import annotations

import os

import pytest
from test_browser import SERVED, chromium, login, page, server, shot  # noqa: F401 (fixtures)

from harness import fake_runner
from pipeline import git
from pipeline.models import Repository, Round, Task

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="Debian's chromium is not installed"),
]


@pytest.fixture
def served(server):
    """The browser tests' daphne (shared with test_browser) and its var directory."""
    return server, SERVED["var"].parent


def finish_all(task: Task) -> None:
    for name in ("planning", "building", "reviewing", "pr_creation"):
        fake_runner.attempt_finish(
            fake_runner.stage_claim(task, name), output_text=f"{name} done", verdict="APPROVE" if name == "reviewing" else ""
        )


def test_a_message_from_the_task_page_queues_a_round_that_the_page_follows(
    served, page, transactional_db, alice, local_repository
):
    from playwright.sync_api import expect

    from pipeline.services import rounds

    server, _ = served
    task = fake_runner.task_running(repository=local_repository, issue_number=21, title="Add a greeting")
    Task.objects.filter(pk=task.pk).update(branch="tacx/21-add-a-greeting")
    finish_all(task)
    login(page, server)
    page.goto(server + f"/tasks/{task.pk}/")
    expect(page.locator("#task-status")).to_have_text("Succeeded")
    page.fill("#message-text", "Please greet in <b>French</b> too")
    page.click("#message-send")
    expect(page.locator(".messages")).to_contain_text("queued (comment by alice): it starts in a moment")
    (round_,) = Round.objects.filter(task=task)
    assert (round_.source, round_.actor, round_.text, round_.status) == (
        "dashboard",
        "alice",
        "Please greet in <b>French</b> too",
        "queued",
    )
    expect(page.locator(f'#rounds li[data-round="{round_.pk}"]')).to_contain_text("via dashboard")
    expect(page.locator(f'#rounds li[data-round="{round_.pk}"] pre.round-text')).to_have_text("Please greet in <b>French</b> too")
    page.evaluate("window.__notReloaded = true")
    assert rounds.round_start(round_=round_, enqueue=False) == "started"  # what the coordinator does next
    expect(page.locator("#task-status")).to_have_text("Running")
    expect(page.locator('[data-stage="building"]')).to_have_attribute("data-status", "queued")
    assert page.evaluate("window.__notReloaded") is True
    shot(page, "40-talk")


def test_the_live_diff_grows_beside_the_transcript_and_the_result_keeps_the_final_diff(
    served, page, transactional_db, alice, local_repository, clone, settings
):
    from playwright.sync_api import expect

    server, tmp = served
    settings.VAR_DIR = tmp / "var"  # the server's: the task store is where it looks
    task = fake_runner.task_running(repository=local_repository, issue_number=22, title="Greet")
    fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), output_text="# Plan")
    base = git.head(clone)
    worktree = tmp / "trees" / f"sample-22-{task.pk}"
    git.worktree_at(clone, worktree, "tacx/22-greet", base)
    Task.objects.filter(pk=task.pk).update(branch="tacx/22-greet", base_commit=base, worktree_path=str(worktree))
    building = fake_runner.stage_claim(task, "building")
    login(page, server)
    page.goto(server + f"/tasks/{task.pk}/")
    pane = page.locator("#live-diff")
    expect(pane).to_contain_text("No changes yet.")
    # The agent writes a file: the next tool result refreshes the pane, per file, escaped.
    (worktree / "greet.py").write_text("def greet():\n    return '<script>alert(1)</script>'\n")
    fake_runner.events_add(
        building,
        [
            ("tool_call", {"id": "w", "name": "Write", "input": {"file_path": "greet.py"}}),
            ("tool_result", {"id": "w", "output": "ok"}),
        ],
    )
    expect(pane.locator('details.file-diff[data-path="greet.py"]')).to_contain_text("+2")
    pane.locator('details.file-diff[data-path="greet.py"] summary').click()
    expect(pane.locator("pre.diff")).to_contain_text("+    return '<script>alert(1)</script>'")
    (worktree / "secret").symlink_to("/etc/passwd")
    fake_runner.events_add(building, [("tool_result", {"id": "x", "output": "ok"})])
    expect(pane.locator('details.file-diff[data-path="secret"]')).to_contain_text("refused")
    expect(pane.locator('details.file-diff[data-path="greet.py"]')).to_have_attribute(
        "open", ""
    )  # the reader's open file stays open
    bbox_t, bbox_d = page.locator("#transcript").bounding_box(), pane.bounding_box()
    assert bbox_d["x"] > bbox_t["x"] + bbox_t["width"] - 1  # beside the log, not under it
    shot(page, "41-live-diff")
    (worktree / "secret").unlink()
    git.commit_all(worktree, "Add greet")
    fake_runner.attempt_finish(building, output_text="built")
    for name in ("reviewing", "pr_creation"):
        fake_runner.attempt_finish(
            fake_runner.stage_claim(task, name), output_text="ok", verdict="APPROVE" if name == "reviewing" else ""
        )
    expect(page.locator("#task-status")).to_have_text("Succeeded")
    final = page.locator("#final-diff")
    expect(final).to_contain_text("The final diff: 1 file")
    final.locator("summary").first.click()
    expect(final.locator('details.file-diff[data-path="greet.py"]')).to_be_visible()
    shot(page, "42-final-diff")


def test_the_attention_view_puts_waiting_tasks_first_with_one_click_actions(
    served, page, transactional_db, alice, local_repository
):
    from playwright.sync_api import expect

    server, _ = served
    waiting = fake_runner.task_running(repository=local_repository, issue_number=31, title="Plan awaiting")
    Task.objects.filter(pk=waiting.pk).update(status=Task.Status.AWAITING_APPROVAL)
    waiting.stages.filter(name="planning").update(status="succeeded")
    failed = fake_runner.task_running(repository=local_repository, issue_number=32, title="It broke")
    fake_runner.attempt_finish(fake_runner.stage_claim(failed, "planning"), success=False, error="the agent exited 1")
    blocked = fake_runner.task_running(repository=local_repository, issue_number=33, title="Phones home")
    fake_runner.events_add(fake_runner.stage_claim(blocked, "planning"), [("sandbox", {"host": "evil.example", "port": 443})])
    login(page, server)
    page.click("#nav-attention")
    expect(page).to_have_url(server + "/attention/")
    groups = page.locator("section.attention-group")
    expect(groups).to_have_count(3)
    assert [groups.nth(i).get_attribute("id") for i in range(3)] == [
        "attention-approval",
        "attention-failed",
        "attention-blocked",
    ]
    expect(page.locator("#attention-failed")).to_contain_text("the agent exited 1")
    shot(page, "43-attention")
    page.locator(f'#attention-approval li[data-task="{waiting.pk}"] button.approve').click()
    expect(page).to_have_url(server + "/attention/")
    expect(page.locator(".messages")).to_contain_text(f"Plan of task {waiting.pk} approved.")
    expect(page.locator("#attention-approval")).to_have_count(0)
    page.locator(f'#attention-failed li[data-task="{failed.pk}"] button.retry').click()
    expect(page.locator(".messages")).to_contain_text(f"Task {failed.pk} retried.")
    expect(page.locator("#attention-failed")).to_have_count(0)
    page.evaluate("window.confirm = () => true")  # the confirmation a person answers
    page.locator(f'#attention-blocked li[data-task="{blocked.pk}"] button.cancel').click()
    expect(page.locator(".messages")).to_contain_text(f"Task {blocked.pk} cancelled.")
    assert Task.objects.get(pk=blocked.pk).status == Task.Status.CANCELLED


def test_a_long_attempt_reads_as_foldable_steps_that_grow_live(served, page, transactional_db, alice, local_repository):
    from playwright.sync_api import expect

    server, _ = served
    task = fake_runner.task_running(repository=local_repository, issue_number=41)
    planning = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(planning, fake_runner.sample_conversation() * 5)  # message, call, result, usage: five steps
    login(page, server)
    page.goto(server + f"/tasks/{task.pk}/")
    steps = page.locator("#transcript li.step")
    expect(steps).to_have_count(5)
    expect(steps.first.locator(".step-title")).to_have_text("I will read the code and write the plan.")
    expect(steps.first.locator(".step-tools")).to_have_text("Write")
    expect(steps.first.locator(".step-tokens")).to_have_text("1.5k")
    expect(steps.first.locator("li.kind-tool_call")).to_be_hidden()  # folded
    expect(steps.last.locator("li.kind-tool_call")).to_be_visible()  # the latest is open
    steps.first.locator("summary").first.click()
    expect(steps.first.locator("li.kind-tool_call")).to_be_visible()
    # Live: a new step is appended, the one before folds, the reader's unfolded step stays open.
    fake_runner.events_add(
        planning,
        [
            ("message", {"role": "assistant", "text": "Now the tests."}),
            ("tool_call", {"id": "t", "name": "Bash", "input": {"command": "pytest -q"}}),
            ("tool_result", {"id": "t", "output": "1 passed"}),
            ("usage", {"input_tokens": 2000, "output_tokens": 400}),
        ],
    )
    expect(steps).to_have_count(6)
    expect(steps.last.locator(".step-title")).to_have_text("Now the tests.")
    expect(steps.last.locator(".step-tools")).to_have_text("Bash")
    expect(steps.last.locator(".step-tokens")).to_have_text("860")  # 2400 - 1540 before it
    expect(steps.nth(4).locator("li.kind-tool_call")).to_be_hidden()
    expect(steps.first.locator("li.kind-tool_call")).to_be_visible()
    assert page.locator("#transcript li.event").count() == task.events.count()  # nothing twice, nothing lost
    # The filters still apply inside steps; a step with nothing left to show is hidden.
    boxes = page.locator("#transcript-filters input[name=kind]")
    for i in range(boxes.count()):
        boxes.nth(i).uncheck()
    expect(page.locator("#transcript li.step:visible")).to_have_count(0)
    page.locator("#transcript-filters input[value=message]").check()
    expect(page.locator("#transcript li.step:visible")).to_have_count(6)
    shot(page, "44-steps")


def test_repositories_and_their_workflow_from_the_ui_with_errors_in_place(
    served, page, transactional_db, django_user_model, local_repository
):
    from conftest import grant
    from playwright.sync_api import expect

    server, _ = served
    user = django_user_model.objects.create_user("ada", "ada@example.com", "correct-horse-battery")
    grant(user, "view_task", "add_task", "view_repository", "add_repository", "change_repository")
    page.goto(server + "/accounts/login/")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", "correct-horse-battery")
    page.click("button[type=submit]")
    page.click("#nav-repositories")
    expect(page.locator(f'#repositories tr[data-repository="{local_repository.pk}"]')).to_contain_text(
        "the repository's .tac/workflow.yaml"
    )
    page.click("#add-repository")
    page.fill("#gh-id_full_name", "octo sample")
    page.click("#register-github")
    expect(page.locator("#errors-github-full_name")).to_have_text("'octo sample' is not OWNER/NAME.")
    expect(page.locator("#gh-id_full_name")).to_have_value("octo sample")
    shot(page, "45-repository-form")
    page.fill("#gh-id_full_name", "octo/sample")
    page.click("#register-github")
    expect(page.locator(".messages")).to_contain_text("Registered octo/sample")
    assert Repository.objects.filter(kind="github", full_name="octo/sample").exists()

    page.locator(f'#repositories tr[data-repository="{local_repository.pk}"] a.edit-workflow').click()
    page.check("input[name=use][value=tacx]")
    page.fill("#id_workflow", "review_rounds: 0\nstages:\n  - name: building\n    provider: clod\n  - name: pr_creation\n")
    page.click("#save-workflow")
    errors = page.locator("#errors-workflow li")
    expect(errors).to_have_count(2)
    expect(page.locator("#errors-workflow")).to_contain_text("unknown provider 'clod'")
    expect(page.locator("#id_workflow")).to_have_attribute("aria-invalid", "true")
    assert "provider: clod" in page.locator("#id_workflow").input_value()  # what was typed stays
    shot(page, "46-workflow-errors")
    page.click("#load-default")
    page.check("input[name=use][value=tacx]")
    page.click("#save-workflow")
    expect(page.locator(".messages")).to_contain_text("new tasks use the workflow kept in TAC-X")
    expect(page.locator("#workflow-now")).to_have_text("the workflow kept in TAC-X")
    local_repository.refresh_from_db()
    assert "pr_creation" in local_repository.workflow_text
