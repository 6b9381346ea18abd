"""The pages users of the peers expect: the transcript as steps (dashboard.steps), the needs-
attention view (dashboard.attention) and repositories with their workflow (dashboard.repository_views)."""

from __future__ import annotations

import pytest
from conftest import grant

from dashboard import steps
from harness import fake_runner
from pipeline import services
from pipeline.models import AgentEvent, Repository, Task

pytestmark = pytest.mark.django_db


def two_steps():
    return [
        ("message", {"role": "assistant", "text": "## Reading the code\nfirst"}),
        ("tool_call", {"id": "a", "name": "Read", "input": {"file_path": "a.py"}}),
        ("tool_result", {"id": "a", "output": "x"}),
        ("usage", {"input_tokens": 1000, "output_tokens": 100}),
        ("tool_call", {"id": "b", "name": "Edit", "input": {"file_path": "a.py"}}),
        ("tool_call", {"id": "c", "name": "Edit", "input": {"file_path": "b.py"}}),
        ("tool_result", {"id": "b", "output": "ok"}),
        ("tool_result", {"id": "c", "output": "ok"}),
        ("usage", {"input_tokens": 1500, "output_tokens": 250}),
        ("message", {"role": "assistant", "text": "Done."}),
    ]


def test_events_group_into_steps_with_their_tools_and_the_tokens_each_used(local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=1)
    result = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(result, two_steps())
    events = list(AgentEvent.objects.filter(task=task).select_related("result__stage").order_by("id"))
    items = steps.transcript_items(events)
    kinds = [kind for kind, _ in items]
    assert set(kinds[: kinds.index("head")]) == {"event"}  # task-level status rows stand alone
    assert kinds[kinds.index("head") :] == ["head", "step", "step", "step"]
    first, second, third = (item for kind, item in items if kind == "step")
    assert (first.n, first.title, first.tool_text, first.tokens, len(first.events)) == (1, "Reading the code", "Read", 1100, 4)
    assert (second.tool_text, second.tokens, len(second.events)) == ("Edit ×2", 650, 5)  # parallel calls: one step
    assert (third.title, third.tokens) == ("Done.", 0)


def test_the_task_page_renders_steps_folded_but_the_last(client, alice, local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=2)
    fake_runner.events_add(fake_runner.stage_claim(task, "planning"), two_steps())
    client.force_login(alice)
    html = client.get(f"/tasks/{task.pk}/").content.decode()
    assert html.count('<li class="step"') == 3 and html.count('class="step-box" open') == 1
    assert '<span class="step-tools">Edit ×2</span>' in html and '<span class="step-tokens">650</span>' in html


def test_attention_groups_what_waits_for_a_person_first_with_actions_per_role(client, alice, django_user_model, local_repository):
    approval = fake_runner.task_running(repository=local_repository, issue_number=10, title="Plan me")
    Task.objects.filter(pk=approval.pk).update(status=Task.Status.AWAITING_APPROVAL)
    failed = fake_runner.task_running(repository=local_repository, issue_number=11, title="Broke")
    fake_runner.attempt_finish(fake_runner.stage_claim(failed, "planning"), success=False, error="boom")
    redone = fake_runner.task_running(repository=local_repository, issue_number=12, title="Old failure")
    fake_runner.attempt_finish(fake_runner.stage_claim(redone, "planning"), success=False, error="old")
    fake_runner.task_running(repository=local_repository, issue_number=12, title="Newer try")
    blocked = fake_runner.task_running(repository=local_repository, issue_number=13, title="Curious agent")
    result = fake_runner.stage_claim(blocked, "planning")
    fake_runner.events_add(
        result, [("sandbox", {"host": "evil.example", "port": 443}), ("sandbox", {"host": "evil.example", "port": 443})]
    )
    client.force_login(alice)
    html = client.get("/attention/").content.decode()
    order = [html.index(f'id="attention-{key}"') for key in ("approval", "failed", "blocked")]
    assert order == sorted(order)
    assert "Plan me" in html and "Broke" in html and "Old failure" not in html  # its issue has a newer task
    assert "2 connections refused" in html
    assert html.count('class="approve"') == 1 and html.count('class="retry"') == 1
    response = client.post(f"/tasks/{approval.pk}/approve/", {"next": "/attention/"})
    assert response.status_code == 302 and response["Location"] == "/attention/"
    assert client.post(f"/tasks/{failed.pk}/retry/", {"next": "https://elsewhere.example/"})["Location"] == f"/tasks/{failed.pk}/"
    viewer = grant(django_user_model.objects.create_user("vic", "v@example.com", None), "view_task")
    client.force_login(viewer)
    html = client.get("/attention/").content.decode()
    assert 'class="retry"' not in html and 'class="approve"' not in html and "Curious agent" in html


def test_a_github_repository_is_registered_with_add_repo_s_checks(client, django_user_model):
    admin = grant(
        django_user_model.objects.create_user("ada", "a@example.com", None),
        "view_repository",
        "add_repository",
        "change_repository",
    )
    client.force_login(admin)
    bad = client.post(
        "/repositories/new/",
        {"kind": "github", "full_name": "not a name", "trigger_label": "x", "max_concurrent_tasks": 0, "default_branch": "main"},
    )
    text = bad.content.decode()
    assert (
        bad.status_code == 400
        and "&#x27;not a name&#x27; is not OWNER/NAME." in text
        and 'id="errors-github-max_concurrent_tasks"' in text
    )
    assert not Repository.objects.exists()
    ok = client.post(
        "/repositories/new/",
        {
            "kind": "github",
            "full_name": "octo/sample",
            "trigger_label": "go",
            "max_concurrent_tasks": 3,
            "default_branch": "trunk",
        },
    )
    assert ok.status_code == 302 and ok["Location"] == "/repositories/"
    repository = Repository.objects.get(full_name="octo/sample")
    assert (repository.kind, repository.trigger_label, repository.max_concurrent_tasks, repository.default_branch) == (
        "github",
        "go",
        3,
        "trunk",
    )
    again = client.post(
        "/repositories/new/",
        {
            "kind": "github",
            "full_name": "octo/sample",
            "trigger_label": "go",
            "max_concurrent_tasks": 3,
            "default_branch": "main",
        },
    )
    assert again.status_code == 400 and "octo/sample is already registered." in again.content.decode()
    assert "octo/sample" in client.get("/repositories/").content.decode()


def test_a_workflow_kept_in_tacx_is_validated_in_place_and_used_by_the_next_task(client, django_user_model, local_repository):
    admin = grant(
        django_user_model.objects.create_user("ada", "a@example.com", None), "view_repository", "change_repository", "view_task"
    )
    client.force_login(admin)
    url = f"/repositories/{local_repository.pk}/workflow/"
    assert "Start from" in client.get(url).content.decode()
    bad = client.post(
        url,
        {"use": "tacx", "workflow": "review_rounds: 0\nstages:\n  - name: planning\n    provider: clod\n  - name: pr_creation\n"},
    )
    text = bad.content.decode()
    assert bad.status_code == 400 and 'id="errors-workflow"' in text and 'aria-invalid="true"' in text
    assert "review_rounds: must be &gt;= 1, got 0" in text and "unknown provider &#x27;clod&#x27;" in text
    assert "provider: clod" in text  # what was typed stays in the box
    assert Repository.objects.get(pk=local_repository.pk).workflow_text == ""
    good = "stages:\n  - name: building\n    provider: command\n    options: {argv: [echo, hi]}\n  - name: pr_creation\n"
    assert client.post(url, {"use": "tacx", "workflow": good}).status_code == 302
    local_repository.refresh_from_db()
    assert local_repository.workflow_text == good
    task, _ = services.task_create(repository=local_repository, issue_number=4, title="Uses it")
    workflow = services.task_workflow_read(task=task)
    assert [s.name for s in workflow.stages] == [
        "building",
        "pr_creation",
    ] and workflow.source == services.tasks.REPOSITORY_WORKFLOW_SOURCE
    assert client.post(url, {"use": "repository", "workflow": ""}).status_code == 302
    local_repository.refresh_from_db()
    assert local_repository.workflow_text == ""
    no_right = grant(django_user_model.objects.create_user("vic", "v@example.com", None), "view_repository")
    client.force_login(no_right)
    assert client.post(url, {"use": "tacx", "workflow": good}).status_code == 403


def test_the_workflow_page_offers_a_local_repository_s_own_file(client, django_user_model, local_repository, clone):
    from conftest import commit_workflow

    commit_workflow(clone, "review_rounds: 3\n")
    admin = grant(django_user_model.objects.create_user("ada", "a@example.com", None), "change_repository")
    client.force_login(admin)
    html = client.get(f"/repositories/{local_repository.pk}/workflow/?start=file").content.decode()
    assert 'id="load-file"' in html and "review_rounds: 3" in html
