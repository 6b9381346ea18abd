"""The admin: tasks with their stages and attempts inline, and django-q2's pages."""

from __future__ import annotations

import pytest

from harness import fake_runner

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-the-admin")
    client.force_login(admin)
    return client


def test_the_task_admin_shows_stages_and_attempts_inline(admin_client, local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=3)
    fake_runner.stage_claim(task, "planning")
    html = admin_client.get(f"/admin/pipeline/task/{task.pk}/change/").content.decode()
    assert "planning" in html and "building" in html
    assert admin_client.get("/admin/pipeline/task/").status_code == 200


@pytest.mark.parametrize("model", ["success", "failure", "schedule", "ormq"])
def test_django_q2_admin_pages_are_there(admin_client, model):
    assert admin_client.get(f"/admin/django_q/{model}/").status_code == 200


def test_a_finished_task_is_read_only_in_the_admin_and_its_actions_still_work(admin_client, local_repository):
    from pipeline import services
    from pipeline.models import Task

    task = fake_runner.task_running(repository=local_repository, issue_number=4)
    services.task_cancel(task=task, reason="test")
    html = admin_client.get(f"/admin/pipeline/task/{task.pk}/change/").content.decode()
    assert 'name="_save"' not in html and 'name="title"' not in html  # no form to save
    response = admin_client.post(f"/admin/pipeline/task/{task.pk}/change/", {"title": "changed"})
    assert response.status_code == 403
    admin_client.post("/admin/pipeline/task/", {"action": "retry_tasks", "_selected_action": [task.pk]})
    assert Task.objects.get(pk=task.pk).status == Task.Status.RUNNING


def test_adding_a_task_in_the_admin_asks_only_for_the_issue(admin_client, local_repository):
    from pipeline.models import Task

    html = admin_client.get("/admin/pipeline/task/add/").content.decode()
    assert 'name="title"' in html and 'name="issue_number"' in html
    assert 'name="status"' not in html and 'name="worktree_path"' not in html and 'name="pr_url"' not in html
    response = admin_client.post(
        "/admin/pipeline/task/add/", {"repository": local_repository.pk, "issue_number": 8, "title": "From the admin", "body": ""}
    )
    assert response.status_code == 302
    task = Task.objects.get(issue_number=8)
    assert task.trigger_source == "admin" and task.triggered_by == "root" and task.status == Task.Status.QUEUED


def test_the_task_admin_opens_on_a_summary_and_collapses_the_internals(admin_client, local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=5)
    fake_runner.stage_claim(task, "planning")
    response = admin_client.get(f"/admin/pipeline/task/{task.pk}/change/")
    fieldsets = [(name, options) for name, options in response.context["adminform"].fieldsets]
    assert [name for name, _ in fieldsets] == ["Summary", "Issue", "Internals"]
    assert fieldsets[0][1]["fields"][:3] == ["status", "status_reason", "current_stage"]
    assert "collapse" in fieldsets[2][1]["classes"] and "worktree_path" in fieldsets[2][1]["fields"]
    html = response.content.decode()
    assert html.index("Summary") < html.index("worktree_path".replace("_", " ").capitalize())
    assert f'href="/tasks/{task.pk}/"' in html and "view on dashboard" in html
    assert "planning (running)" in html
