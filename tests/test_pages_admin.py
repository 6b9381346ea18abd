"""The admin: tasks with their stages and attempts inline, and django-q2's pages."""

from __future__ import annotations

import pytest

from dashboard import testing

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-the-admin")
    client.force_login(admin)
    return client


def test_the_task_admin_shows_stages_and_attempts_inline(admin_client, local_repository):
    task = testing.task_running(repository=local_repository, issue_number=3)
    testing.stage_claim(task, "planning")
    html = admin_client.get(f"/admin/pipeline/task/{task.pk}/change/").content.decode()
    assert "planning" in html and "building" in html
    assert admin_client.get("/admin/pipeline/task/").status_code == 200


@pytest.mark.parametrize("model", ["success", "failure", "schedule", "ormq"])
def test_django_q2_admin_pages_are_there(admin_client, model):
    assert admin_client.get(f"/admin/django_q/{model}/").status_code == 200
