"""Starting a task from the dashboard (and the API) without an issue tracker: the issue number is
optional for a local repository, a workflow may be given for the task, and bad input is answered
with every problem at once."""

from __future__ import annotations

import pytest
from django.urls import reverse

from pipeline import services
from pipeline.models import Repository, Task
from tests.conftest import grant, make_origin_and_clone

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(client, alice):
    client.force_login(alice)
    return client


BAD_WORKFLOW = "stages:\n  - name: planning\n    provider: clod\n  - name: building\n    timeout: -1\n  - name: pr_creation\n"


def test_the_form_creates_and_starts_a_task_with_the_next_free_issue_number(browser, local_repository):
    services.task_create(repository=local_repository, issue_number=41, title="Earlier")
    response = browser.post(reverse("dashboard:task-new"), {"repository": local_repository.pk, "title": "Add a farewell", "body": "Please <b>now</b>."})
    task = Task.objects.get(title="Add a farewell")
    assert response.status_code == 302 and response["Location"] == task.get_absolute_url()
    assert task.issue_number == 42 and task.trigger_source == "dashboard" and task.triggered_by == "alice"
    assert task.status == Task.Status.RUNNING  # dispatched at once: stages exist, planning queued
    assert task.stages.get(name="planning").status == "queued"


def test_the_form_lists_only_local_repositories(browser, local_repository):
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/repo")
    html = browser.get(reverse("dashboard:task-new")).content.decode()
    assert f'<option value="{local_repository.pk}"' in html and "octo/repo" not in html
    assert "(optional)" in html


def test_an_invalid_workflow_override_lists_every_problem_and_creates_nothing(browser, local_repository):
    response = browser.post(reverse("dashboard:task-new"), {"repository": local_repository.pk, "title": "X", "workflow": BAD_WORKFLOW})
    html = response.content.decode()
    assert response.status_code == 400
    assert "workflow: stages[0] (planning).provider: unknown provider &#x27;clod&#x27;" in html
    assert "workflow: stages[1] (building).timeout: must be &gt;= 1, got -1" in html
    assert not Task.objects.exists()


def test_a_valid_workflow_override_is_the_one_the_task_runs(browser, local_repository):
    workflow = "review_rounds: 1\nstages:\n  - name: planning\n    provider: command\n    options: {argv: [echo, hi]}\n  - name: pr_creation\n"
    browser.post(reverse("dashboard:task-new"), {"repository": local_repository.pk, "title": "Y", "issue_number": 7, "workflow": workflow})
    task = Task.objects.get(issue_number=7)
    assert task.workflow_source == "workflow override"
    assert [s.name for s in task.stages.order_by("position")] == ["planning", "pr_creation"]
    assert task.stages.get(name="planning").model == ""  # a command stage has no model


def test_missing_title_is_an_error_on_the_field(browser, local_repository):
    response = browser.post(reverse("dashboard:task-new"), {"repository": local_repository.pk, "title": ""})
    assert response.status_code == 400 and 'id="errors-title"' in response.content.decode()


def test_the_api_gives_a_local_task_the_next_number_and_checks_the_workflow(client, alice, local_repository):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(alice)
    response = api.post("/api/tasks/create/", {"repository": "sample", "title": "No number"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["issue_number"] == 1
    bad = api.post("/api/tasks/create/", {"repository": "sample", "title": "Bad", "workflow": BAD_WORKFLOW}, format="json")
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["field"] == "workflow"
    assert "unknown provider 'clod'" in error["message"] and "timeout: must be >= 1" in error["message"]


def test_the_service_refuses_a_github_repository():
    repository = Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/repo")
    with pytest.raises(ValueError, match="start from their issues"):
        services.task_submit(repository=repository, title="x")


def test_an_automatic_number_taken_meanwhile_moves_on_to_the_next(local_repository, monkeypatch):
    # Another submission took number 1 between our look-up and our insert.
    taken, _ = services.task_create(repository=local_repository, issue_number=1, title="Theirs")
    calls = iter([1, 2])
    monkeypatch.setattr(services.tasks, "_next_issue_number", lambda repository: next(calls))
    task, created = services.task_submit(repository=local_repository, title="Ours", start=False)
    assert created and task.issue_number == 2 and task.title == "Ours" and task.pk != taken.pk


def test_registering_a_local_repository_needs_add_repository(browser, alice, tmp_path):
    _, clone = make_origin_and_clone(tmp_path, "other")
    url = reverse("dashboard:repository-new")
    # alice may create tasks, not register paths on the server: no link, and a 403 either way.
    assert 'id="register-repository"' not in browser.get(reverse("dashboard:task-new")).content.decode()
    assert browser.get(url).status_code == 403
    assert browser.post(url, {"name": "other", "path": str(clone), "default_branch": "main"}).status_code == 403
    assert not Repository.objects.filter(full_name="other").exists()


def test_the_new_task_form_offers_to_register_another_repository_on_disk(client, alice, tmp_path):
    client.force_login(grant(alice, "add_repository"))
    _, clone = make_origin_and_clone(tmp_path, "other")
    html = client.get(reverse("dashboard:task-new")).content.decode()
    assert 'id="register-repository"' in html
    url = reverse("dashboard:repository-new")

    # Bad input: every field named, nothing registered.
    (tmp_path / "plain").mkdir()
    bad = client.post(url, {"name": "../etc", "path": str(tmp_path / "plain"), "default_branch": "main"})
    assert bad.status_code == 400
    text = bad.content.decode()
    assert 'id="errors-name"' in text and f"{tmp_path / 'plain'} is not a git repository" in text
    assert client.post(url, {"name": "rel", "path": "relative/dir", "default_branch": "main"}).status_code == 400
    assert not Repository.objects.filter(kind=Repository.Kind.LOCAL).exists()

    response = client.post(url, {"name": "other", "path": str(clone), "default_branch": "main"})
    repository = Repository.objects.get(kind=Repository.Kind.LOCAL, full_name="other")
    assert repository.local_path == str(clone.resolve()) and repository.default_branch == "main"
    assert response.status_code == 302 and response["Location"] == f"{reverse('dashboard:task-new')}?repository={repository.pk}"
    html = client.get(response["Location"]).content.decode()
    assert f'<option value="{repository.pk}" selected>other</option>' in html
    # The same name again is refused, not silently repointed.
    again = client.post(url, {"name": "other", "path": str(tmp_path), "default_branch": "main"})
    assert again.status_code == 400 and "already registered" in again.content.decode()
    assert Repository.objects.get(pk=repository.pk).local_path == str(clone.resolve())
