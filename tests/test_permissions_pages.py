"""Every dashboard URL, walked with every role, GET and POST: each answers as its API twin does.

Issue 19 (item 7): the New task form checked only that someone was logged in, so a user with no
role saw the local repositories and started a task with a workflow override naming any `command`
argv, while `POST /api/tasks/create/` refused the same user with 403.

The rule (README "Roles"): a page or page action needs the permission of its API twin; the API
docs page needs a login (as `/api/schema/`); `/health` is open. A new URL in dashboard/urls.py
fails `test_every_dashboard_url_has_a_rule` until it is given one here.
"""

from __future__ import annotations

import pytest
from conftest import MEMORY_PERMISSIONS, TASK_PERMISSIONS, grant
from django.test import Client
from django.urls import URLPattern, reverse

from dashboard.urls import urlpatterns
from harness import fake_runner
from pipeline.models import MemoryEntry, Task

pytestmark = pytest.mark.django_db

OPEN, LOGIN = "open", "login"
# url name -> (permission needed, the API twin: method and path, or None)
RULES: dict[str, tuple[str, tuple[str, str] | None]] = {
    "tasks": ("view_task", ("get", "/api/tasks/")),
    "task-rows": ("view_task", ("get", "/api/tasks/")),
    "task-new": ("add_task", ("post", "/api/tasks/create/")),
    # Registering a path on the server: the model permission only (no API twin yet).
    "repository-new": ("add_repository", None),
    "task-detail": ("view_task", ("get", "/api/tasks/{id}/")),
    "task-summary": ("view_task", ("get", "/api/tasks/{id}/")),
    "task-documents": ("view_task", ("get", "/api/tasks/{id}/")),
    "task-retry": ("retry_task", ("post", "/api/tasks/{id}/retry/")),
    "task-cancel": ("cancel_task", ("post", "/api/tasks/{id}/cancel/")),
    "task-approve": ("approve_task", ("post", "/api/tasks/{id}/approve/")),
    "task-budget-raise": ("approve_task", ("post", "/api/tasks/{id}/budget/raise/")),
    # Choosing another candidate is part of approving the choice (README "Best of N").
    "task-candidate-choose": ("approve_task", ("post", "/api/tasks/{id}/approve/")),
    "task-budget-stop": ("approve_task", ("post", "/api/tasks/{id}/budget/stop/")),
    # A message starts a round: running the task's agents again, as Retry does.
    "task-message": ("retry_task", ("post", "/api/tasks/{id}/retry/")),
    "task-live-diff": ("view_task", ("get", "/api/tasks/{id}/")),
    "attention": ("view_task", ("get", "/api/tasks/")),
    # Repositories and their workflows: the model permissions (no API twin yet).
    "repositories": ("view_repository", None),
    "repository-workflow": ("change_repository", None),
    "stats": ("view_task", ("get", "/api/stats/")),
    "workers": ("view_task", ("get", "/api/workers/")),
    "worker-rows": ("view_task", ("get", "/api/workers/")),
    "eval-compare": ("view_task", ("get", "/api/evaluations/")),
    "api-docs": (LOGIN, ("get", "/api/schema/")),
    "health": (OPEN, None),
    # A repository's memory (README "A memory that carries over").
    "memory": ("view_memoryentry", ("get", "/api/memory/")),
    "repository-memory": ("view_memoryentry", ("get", "/api/memory/?repository={repository}")),
    "memory-add": ("add_memoryentry", ("post", "/api/memory/create/")),
    "memory-edit": ("change_memoryentry", ("post", "/api/memory/{entry}/update/")),
    "memory-accept": ("change_memoryentry", ("post", "/api/memory/{entry}/accept/")),
    "memory-reject": ("change_memoryentry", ("post", "/api/memory/{entry}/reject/")),
    "memory-delete": ("delete_memoryentry", ("post", "/api/memory/{entry}/delete/")),
}
VIEWER = ("view_task", "view_memoryentry")
OPERATOR = (*TASK_PERMISSIONS, *MEMORY_PERMISSIONS)
ROLES = ["anonymous", "stranger", "viewer", "operator", "superuser"]
COMMAND_WORKFLOW = "stages:\n  - name: planning\n    provider: command\n    options: {argv: [sh, -c, 'echo owned > /tmp/x']}\n  - name: pr_creation\n"


def test_every_dashboard_url_has_a_rule():
    names = {p.name for p in urlpatterns if isinstance(p, URLPattern)}
    assert names == set(RULES), f"dashboard URLs without a rule here: {names - set(RULES)}; rules for no URL: {set(RULES) - names}"


def user_for(role: str, django_user_model):
    if role == "anonymous":
        return None
    if role == "superuser":
        return django_user_model.objects.create_superuser("root", "r@example.com", None)  # no password: no hashing
    user = django_user_model.objects.create_user(role, f"{role}@example.com", None, is_staff=role == "stranger")
    return grant(user, *{"stranger": (), "viewer": VIEWER, "operator": OPERATOR}[role])


def may(role: str, needed: str) -> bool:
    if needed == OPEN:
        return True
    if role == "anonymous":
        return False
    return needed == LOGIN or role == "superuser" or (role == "operator" and needed in OPERATOR) or (role == "viewer" and needed in VIEWER)


def page_refused(response) -> bool:
    """Refused: 403, or sent to the login page. Anything else (200, a redirect to the task, 400
    for a form's errors, 405 for the wrong method) means the permission check let it through."""
    if response.status_code == 403:
        return True
    return response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def api_refused(response) -> bool:
    return response.status_code in (401, 403)


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("name", sorted(RULES))
def test_each_page_answers_each_role_as_its_api_twin(django_user_model, local_repository, name, method):
    needed, twin = RULES[name]
    pattern = next(p for p in urlpatterns if p.name == name)
    for number, role in enumerate(ROLES, start=1):
        task = fake_runner.task_running(repository=local_repository, issue_number=100 + number)
        fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), success=False, error="boom")
        entry = MemoryEntry.objects.create(repository=local_repository, text=f"Run make test ({role})", proposer="agent (command, planning attempt 1)")
        ids = {"task_id": task.pk, "repository_id": local_repository.pk, "entry_id": entry.pk, "k": 1}
        kwargs = {key: value for key, value in ids.items() if key in pattern.pattern.converters}
        url = reverse(f"dashboard:{name}", kwargs=kwargs)
        user = user_for(role, django_user_model)
        before = Task.objects.count()
        title = f"by {role}"
        data = {"repository": local_repository.pk, "title": title, "issue_number": 200 + number, "workflow": COMMAND_WORKFLOW, "text": f"Added by {role}"}
        response = getattr(client_for(user), method)(url, data)
        refused = page_refused(response)
        assert refused is not may(role, needed), (role, method, url, response.status_code)
        if refused:
            assert Task.objects.count() == before and not Task.objects.filter(title=title).exists()
            assert Task.objects.get(pk=task.pk).status == Task.Status.FAILED
            assert MemoryEntry.objects.filter(pk=entry.pk, status=MemoryEntry.Status.PROPOSED, text=f"Run make test ({role})").exists()
            assert MemoryEntry.objects.filter(repository=local_repository).count() == number
        if twin is not None:
            twin_method, twin_path = twin
            body = {"repository": "sample", "issue_number": 300 + number, "title": "t", "text": f"Added through the API by {role}"}
            api = client_for(user)
            twin_url = twin_path.format(id=task.pk, repository=local_repository.pk, entry=entry.pk)
            twin_response = api.post(twin_url, body, content_type="application/json") if twin_method == "post" else api.get(twin_url)
            assert api_refused(twin_response) is refused, (role, url, response.status_code, twin_url, twin_response.status_code)


def test_the_new_task_links_are_shown_only_to_who_may_create(django_user_model, local_repository):
    viewer = user_for("viewer", django_user_model)
    operator = user_for("operator", django_user_model)
    html = client_for(viewer).get("/").content.decode()
    assert 'id="new-task-button"' not in html and 'id="nav-new-task"' not in html
    html = client_for(operator).get("/").content.decode()
    assert 'id="new-task-button"' in html and 'id="nav-new-task"' in html
