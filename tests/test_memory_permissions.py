"""Who may see and change a repository's memory, on the dashboard, in the API and in the admin
(README "Roles"): seeing needs `pipeline.view_memoryentry`; editing, accepting and rejecting
`pipeline.change_memoryentry`; adding `add_memoryentry`; deleting `delete_memoryentry`. The
role-by-URL matrix is in test_permissions_pages.py; here, what each action does and what a
refused one leaves unchanged."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from pipeline import services
from pipeline.models import MemoryEntry
from tests.conftest import TASK_PERMISSIONS, grant

pytestmark = pytest.mark.django_db

TEXT = "Run the tests with python -m pytest -q."


@pytest.fixture
def entry(local_repository) -> MemoryEntry:
    task, _ = services.task_create(repository=local_repository, issue_number=5, title="t", body="b", trigger_source="cli")
    created, _ = services.memory_propose(task=task, result=None, texts=[TEXT], proposer="agent (claude, reviewing attempt 1)")
    return created[0]


def user(django_user_model, name: str, *codenames: str, staff: bool = False):
    return grant(django_user_model.objects.create_user(name, f"{name}@example.com", None, is_staff=staff), *codenames)


def page_client(who) -> Client:
    client = Client()
    client.force_login(who)
    return client


def api_client(who) -> APIClient:
    client = APIClient()
    client.force_authenticate(who)
    return client


def test_a_viewer_sees_the_memory_but_cannot_accept_edit_or_delete(django_user_model, entry):
    viewer = user(django_user_model, "viewer", "view_task", "view_memoryentry")
    pages, api = page_client(viewer), api_client(viewer)
    html = pages.get(f"/repositories/{entry.repository_id}/memory/").content.decode()
    assert TEXT in html and "agent (claude, reviewing attempt 1)" in html and 'id="nav-memory"' in html
    assert "/accept/" not in html and "/delete/" not in html and 'id="memory-add"' not in html
    assert api.get("/api/memory/?repository=sample").json()[0]["text"] == TEXT
    for path in (f"/memory/{entry.pk}/accept/", f"/memory/{entry.pk}/edit/", f"/memory/{entry.pk}/delete/"):
        assert pages.post(path, {"text": "changed"}).status_code == 403, path
    answer = api.post(f"/api/memory/{entry.pk}/accept/")
    assert answer.status_code == 403 and answer.json()["error"]["message"] == "This needs the permission pipeline.change_memoryentry."
    assert api.post(f"/api/memory/{entry.pk}/delete/").status_code == 403
    assert MemoryEntry.objects.filter(pk=entry.pk, status="proposed", text=TEXT).exists()


def test_an_operator_without_memory_permissions_does_not_see_it(django_user_model, entry):
    operator = user(django_user_model, "op", *TASK_PERMISSIONS)
    assert page_client(operator).get("/memory/").status_code == 403
    assert 'id="nav-memory"' not in page_client(operator).get("/").content.decode()
    assert api_client(operator).get("/api/memory/").status_code == 403


def test_a_maintainer_accepts_edits_rejects_adds_and_deletes_on_the_dashboard(alice, entry):
    pages = page_client(alice)
    html = pages.get(f"/repositories/{entry.repository_id}/memory/").content.decode()
    assert f"/memory/{entry.pk}/accept/" in html and "in prompts" not in html

    assert pages.post(f"/memory/{entry.pk}/accept/").status_code == 302
    entry.refresh_from_db()
    assert (entry.status, entry.decided_by) == ("accepted", "alice")
    assert "in prompts" in pages.get(f"/repositories/{entry.repository_id}/memory/").content.decode()

    too_long = pages.post(f"/memory/{entry.pk}/edit/", {"text": "x" * 501})
    assert too_long.status_code == 400 and "an entry is at most 500 characters; this one has 501" in too_long.content.decode()
    assert pages.post(f"/memory/{entry.pk}/edit/", {"text": "Run  the tests\nwith make test."}).status_code == 302
    entry.refresh_from_db()
    assert (entry.text, entry.edited_by, entry.status) == ("Run the tests with make test.", "alice", "accepted")

    assert pages.post(f"/memory/{entry.pk}/reject/").status_code == 302
    assert MemoryEntry.objects.get(pk=entry.pk).status == "rejected"
    assert services.memory_in_prompts(repository=entry.repository) == ([], [])

    assert pages.post(f"/repositories/{entry.repository_id}/memory/add/", {"text": "Strings use double quotes."}).status_code == 302
    added = MemoryEntry.objects.get(text="Strings use double quotes.")
    assert (added.status, added.proposer, added.decided_by, added.source_task_id) == ("accepted", "alice", "alice", None)

    assert pages.post(f"/memory/{entry.pk}/delete/").status_code == 302
    assert not MemoryEntry.objects.filter(pk=entry.pk).exists()


def test_the_api_edits_accepts_rejects_adds_and_deletes_with_clear_errors(api, entry):
    assert api.post(f"/api/memory/{entry.pk}/update/", {"text": "Use make test."}, format="json").json()["text"] == "Use make test."
    bad = api.post(f"/api/memory/{entry.pk}/update/", {"text": " \u200b "}, format="json")
    assert bad.status_code == 400 and bad.json()["error"] == {"code": "invalid", "message": "text: an entry cannot be empty", "field": "text"}
    accepted = api.post(f"/api/memory/{entry.pk}/accept/").json()
    assert accepted["status"] == "accepted" and accepted["in_prompts"] is True
    assert accepted["source"] == {"task": entry.source_task_id, "attempt": None, "stage": None, "proposer": "agent (claude, reviewing attempt 1)"}
    assert api.post(f"/api/memory/{entry.pk}/reject/").json()["in_prompts"] is False

    created = api.post("/api/memory/create/", {"repository": "sample", "text": "Config is in settings.toml."}, format="json")
    assert created.status_code == 201 and created.json()["status"] == "accepted"
    assert created["Location"] == f"/api/memory/{created.json()['id']}/"
    unknown = api.post("/api/memory/create/", {"repository": "nope", "text": "x"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "repository"
    assert [e["text"] for e in api.get("/api/memory/?status=accepted").json()] == ["Config is in settings.toml."]

    assert api.post(f"/api/memory/{entry.pk}/delete/").status_code == 204
    assert api.get(f"/api/memory/{entry.pk}/").status_code == 404


def test_the_admin_follows_the_same_permissions(django_user_model, entry):
    looker = page_client(user(django_user_model, "looker", "view_memoryentry", staff=True))
    assert looker.get("/admin/pipeline/memoryentry/").status_code == 200
    looker.post("/admin/pipeline/memoryentry/", {"action": "accept_entries", "_selected_action": [entry.pk]})
    assert MemoryEntry.objects.get(pk=entry.pk).status == "proposed"
    assert looker.post(f"/admin/pipeline/memoryentry/{entry.pk}/change/", {"text": "changed"}).status_code == 403

    keeper = page_client(user(django_user_model, "keeper", "view_memoryentry", "change_memoryentry", staff=True))
    keeper.post("/admin/pipeline/memoryentry/", {"action": "accept_entries", "_selected_action": [entry.pk]})
    entry.refresh_from_db()
    assert (entry.status, entry.decided_by) == ("accepted", "keeper")
    html = keeper.get(f"/admin/pipeline/memoryentry/{entry.pk}/change/").content.decode()
    assert 'name="text"' in html and 'name="status"' not in html
    assert keeper.post(f"/admin/pipeline/memoryentry/{entry.pk}/change/", {"text": "Edited  in the admin."}).status_code == 302
    entry.refresh_from_db()
    assert (entry.text, entry.edited_by, entry.status) == ("Edited in the admin.", "keeper", "accepted")
    assert keeper.post(f"/admin/pipeline/memoryentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert MemoryEntry.objects.filter(pk=entry.pk).exists()
