"""Who may do what: Django permissions on tasks, checked by the pages, the API, the websockets
and the admin; the websocket origin check compares scheme, host and port.

Issue 9 (item 7): any logged-in user, staff or not, could read, create, cancel and retry every
task; /api/schema/ was served anonymously; the origin check ignored the port.

Roles (README "Roles"): a *viewer* has pipeline.view_task; an *operator* also add_task,
retry_task, cancel_task and approve_task; superusers have everything.
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from conftest import grant
from django.test import Client

from harness import fake_runner
from pipeline.models import Task
from tacx_site.asgi import application


@pytest.fixture
def stranger(db, django_user_model):
    """Logged in, even staff, but given no permission on tasks."""
    return django_user_model.objects.create_user("mallory", "m@example.com", "pw", is_staff=True)


@pytest.fixture
def viewer(db, django_user_model):
    return grant(django_user_model.objects.create_user("victor", "v@example.com", "pw"), "view_task")


@pytest.fixture
def failed_task(local_repository) -> Task:
    task = fake_runner.task_running(repository=local_repository, issue_number=1)
    fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), success=False, error="boom")
    return Task.objects.get(pk=task.pk)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


PAGES = ["/", "/tasks/rows/", "/tasks/{id}/", "/tasks/{id}/summary/", "/tasks/{id}/documents/", "/stats/", "/workers/", "/workers/rows/"]


@pytest.mark.parametrize("page", PAGES)
def test_pages_need_view_task(stranger, viewer, failed_task, page):
    url = page.format(id=failed_task.pk)
    assert client_for(stranger).get(url).status_code == 403
    assert client_for(viewer).get(url).status_code == 200


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_page_actions_need_their_permission(viewer, alice, failed_task, action):
    url = f"/tasks/{failed_task.pk}/{action}/"
    assert client_for(viewer).post(url).status_code == 403
    assert Task.objects.get(pk=failed_task.pk).status == Task.Status.FAILED
    assert client_for(alice).post(url).status_code == 302


def test_the_detail_page_offers_retry_only_to_who_may_retry(viewer, alice, failed_task):
    assert b'id="retry"' not in client_for(viewer).get(f"/tasks/{failed_task.pk}/").content
    assert b'id="retry"' in client_for(alice).get(f"/tasks/{failed_task.pk}/").content


@pytest.mark.parametrize(
    "method, path, needed",
    [
        ("get", "/api/tasks/", "view_task"),
        ("get", "/api/tasks/{id}/", "view_task"),
        ("get", "/api/tasks/{id}/events/", "view_task"),
        ("get", "/api/stats/", "view_task"),
        ("get", "/api/workers/", "view_task"),
        ("post", "/api/tasks/create/", "add_task"),
        ("post", "/api/tasks/{id}/retry/", "retry_task"),
        ("post", "/api/tasks/{id}/cancel/", "cancel_task"),
        ("post", "/api/tasks/{id}/approve/", "approve_task"),
        ("post", "/api/tasks/{id}/budget/stop/", "approve_task"),
    ],
)
def test_each_api_operation_needs_its_permission(stranger, viewer, failed_task, method, path, needed):
    url = path.format(id=failed_task.pk)
    body = {"repository": "sample", "issue_number": 77, "title": "t"}
    for user in (stranger, viewer) if needed != "view_task" else (stranger,):
        response = getattr(client_for(user), method)(url, body, content_type="application/json") if method == "post" else client_for(user).get(url)
        assert response.status_code == 403, (user, response.content)
        assert response.json()["error"]["code"] == "permission_denied" and needed in response.json()["error"]["message"]
    allowed = grant(stranger, needed)
    response = getattr(client_for(allowed), method)(url, body, content_type="application/json") if method == "post" else client_for(allowed).get(url)
    assert response.status_code in (200, 201, 409), response.content  # 409: allowed, but the task is failed


def test_the_schema_needs_a_login(client, viewer):
    assert client.get("/api/schema/").status_code == 401
    assert client_for(viewer).get("/api/schema/").status_code == 200


def test_admin_actions_need_their_permission(stranger, failed_task):
    def actions(user) -> set[str]:
        form = client_for(user).get("/admin/pipeline/task/").context["action_form"]
        return set() if form is None else {name for name, _ in form.fields["action"].choices}

    stranger = grant(stranger, "change_task", "view_task")
    assert not {"retry_tasks", "cancel_tasks"} & actions(stranger)
    assert {"retry_tasks", "cancel_tasks"} <= actions(grant(stranger, "retry_task", "cancel_task"))


def socket_result(user, path: str, *, origin: bytes, host: bytes = b"testserver", scheme: str = "ws") -> tuple[bool, int | None]:
    session = client_for(user).cookies["sessionid"].value
    comm = WebsocketCommunicator(application, path, headers=[(b"host", host), (b"origin", origin), (b"cookie", f"sessionid={session}".encode())])
    comm.scope["scheme"] = scheme

    async def scenario():
        connected, code = await comm.connect()
        if connected:
            await comm.disconnect()
        return connected, code

    return async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_the_event_socket_needs_view_task(stranger, viewer, local_repository):
    assert socket_result(stranger, "/ws/events/", origin=b"http://testserver") == (False, 4403)
    assert socket_result(viewer, "/ws/events/", origin=b"http://testserver")[0] is True


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "host, origin, scheme, accepted",
    [
        (b"127.0.0.1:8000", b"http://127.0.0.1:8000", "ws", True),
        (b"127.0.0.1:8000", b"http://127.0.0.1:9999", "ws", False),  # another program's page
        (b"127.0.0.1:8000", b"http://127.0.0.1", "ws", False),
        (b"127.0.0.1", b"http://127.0.0.1:80", "ws", True),
        (b"localhost:8443", b"https://localhost:8443", "wss", True),
        (b"localhost:8443", b"http://localhost:8443", "wss", False),  # plain http beside https
        (b"evil.example:8000", b"http://evil.example:8000", "ws", False),  # not in ALLOWED_HOSTS
        (b"127.0.0.1:8000", b"null", "ws", False),
    ],
)
def test_the_origin_must_match_scheme_host_and_port(viewer, host, origin, scheme, accepted):
    connected, _ = socket_result(viewer, "/ws/events/", origin=origin, host=host, scheme=scheme)
    assert connected is accepted


@pytest.mark.django_db(transaction=True)
def test_a_trusted_origin_behind_a_proxy_is_accepted(viewer, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://tacx.example.com"]
    assert socket_result(viewer, "/ws/events/", origin=b"https://tacx.example.com", host=b"127.0.0.1:8000")[0] is True
    assert socket_result(viewer, "/ws/events/", origin=b"https://tacx.example.com:444", host=b"127.0.0.1:8000")[0] is False
