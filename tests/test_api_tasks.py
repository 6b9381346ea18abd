"""Tasks through the API: list with filters and pages, detail, create on a local repository,
retry and cancel, stages and attempts."""

from __future__ import annotations

import pytest

from harness import fake_runner
from pipeline import services
from pipeline.models import Repository, Stage, Task

pytestmark = pytest.mark.django_db


@pytest.fixture
def running_task(local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=7)
    result = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(result, fake_runner.sample_conversation())
    return task


@pytest.fixture
def failed_task(local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=9, title="Broken")
    fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), success=False, error="agent exited with code 1")
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED
    return task


def ids(response) -> list[int]:
    return [t["id"] for t in response.json()["results"]]


def test_the_list_shows_what_a_row_needs(api, running_task):
    body = api.get("/api/tasks/").json()
    assert body["count"] == 1 and body["next"] is None and body["previous"] is None
    row = body["results"][0]
    assert row["status"] == "running"
    assert row["current_stage"] == "planning"
    assert row["repository"] == {"id": running_task.repository_id, "full_name": "sample", "kind": "local"}
    assert row["issue_number"] == 7
    assert row["html_url"] == f"/tasks/{running_task.pk}/"
    assert set(row["tokens"]) == {"input", "output", "cache_read", "cache_write", "total"}


def test_the_list_filters_by_status_repository_and_issue(api, local_repository, running_task, failed_task):
    queued, _ = services.task_create(repository=local_repository, issue_number=11, title="Queued one")
    other_repo = Repository.objects.create(kind="local", full_name="other", local_path="/nonexistent")
    elsewhere, _ = services.task_create(repository=other_repo, issue_number=7, title="Same number elsewhere")
    assert ids(api.get("/api/tasks/", {"status": "failed"})) == [failed_task.pk]
    assert ids(api.get("/api/tasks/", {"status": "queued"})) == [elsewhere.pk, queued.pk]
    assert ids(api.get("/api/tasks/", {"repository": "other"})) == [elsewhere.pk]
    assert ids(api.get("/api/tasks/", {"repository": str(other_repo.pk)})) == [elsewhere.pk]
    assert ids(api.get("/api/tasks/", {"issue": 7})) == [elsewhere.pk, running_task.pk]
    assert ids(api.get("/api/tasks/", {"issue": 7, "repository": "sample"})) == [running_task.pk]
    assert ids(api.get("/api/tasks/", {"search": "broken"})) == [failed_task.pk]


def test_the_list_pages_with_limit_and_offset(api, local_repository):
    created = [services.task_create(repository=local_repository, issue_number=n, title=f"n{n}")[0].pk for n in range(1, 8)]
    newest_first = list(reversed(created))
    first = api.get("/api/tasks/", {"limit": 3}).json()
    assert first["count"] == 7 and [t["id"] for t in first["results"]] == newest_first[:3]
    assert first["next"].endswith("/api/tasks/?limit=3&offset=3")
    second = api.get(first["next"]).json()
    assert [t["id"] for t in second["results"]] == newest_first[3:6]
    assert second["previous"].endswith("offset=0")
    last = api.get("/api/tasks/", {"limit": 3, "offset": 6}).json()
    assert [t["id"] for t in last["results"]] == newest_first[6:] and last["next"] is None
    assert api.get("/api/tasks/", {"offset": 100}).json()["results"] == []


def test_the_detail_has_the_stages_and_the_workflow(api, running_task):
    body = api.get(f"/api/tasks/{running_task.pk}/").json()
    assert [s["name"] for s in body["stages"]] == ["planning", "building", "reviewing", "pr_creation"]
    assert body["stages"][0]["status"] == "running"
    assert body["workflow"]["review_rounds"] == 2
    assert body["body"] == ""


def test_it_creates_a_task_on_a_local_repository(api, local_repository):
    response = api.post(
        "/api/tasks/create/", {"repository": "sample", "issue_number": 42, "title": "Add a <!-- hidden -->greeting"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    task = Task.objects.get(pk=body["id"])
    assert (task.status, task.trigger_source, task.triggered_by, task.title) == ("queued", "api", "alice", "Add a greeting")
    assert response["Location"] == f"/api/tasks/{task.pk}/"
    again = api.post("/api/tasks/create/", {"repository": str(local_repository.pk), "issue_number": 42, "title": "dup"}, format="json")
    assert again.status_code == 200 and again.json()["id"] == task.pk


def test_it_creates_and_starts_a_task_when_asked(api, local_repository, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/tasks/create/", {"repository": "sample", "issue_number": 43, "title": "Go", "start": True}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "running"
    assert body["stages"][0] == {**body["stages"][0], "name": "planning", "status": "queued"}
    from django_q.models import OrmQ

    assert OrmQ.objects.count() == 1  # the first stage's job, enqueued after commit


def test_it_refuses_to_create_a_task_on_a_github_repository(api):
    Repository.objects.create(kind="github", full_name="octo/repo")
    response = api.post("/api/tasks/create/", {"repository": "octo/repo", "issue_number": 1, "title": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "repository"


def test_retry_requeues_a_failed_task(api, failed_task):
    response = api.post(f"/api/tasks/{failed_task.pk}/retry/")
    assert response.status_code == 200
    assert response.json()["status"] == "running"
    failed_task.refresh_from_db()
    assert failed_task.status == Task.Status.RUNNING
    assert failed_task.stages.get(name="planning").status == Stage.Status.QUEUED


def test_retry_of_a_running_task_is_a_conflict(api, running_task):
    response = api.post(f"/api/tasks/{running_task.pk}/retry/")
    assert response.status_code == 409
    assert response.json()["error"] == {"code": "conflict", "message": f"task {running_task.pk} is still running; cancel it first"}


def test_cancel_stops_a_running_task(api, running_task):
    response = api.post(f"/api/tasks/{running_task.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    running_task.refresh_from_db()
    assert running_task.status == Task.Status.CANCELLED
    assert running_task.stages.get(name="building").status == Stage.Status.CANCELLED


def test_cancel_of_a_finished_task_is_a_conflict(api, failed_task):
    response = api.post(f"/api/tasks/{failed_task.pk}/cancel/")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_stages_and_attempts_show_every_attempt_with_its_error(api, local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=5)
    fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), success=False, error="first try broke", retry=True)
    fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), output_text="# Plan")
    stages = api.get(f"/api/tasks/{task.pk}/stages/").json()
    planning = stages[0]
    assert planning["status"] == "succeeded" and planning["attempts"] == 2
    assert [(a["attempt"], a["outcome"], a["error"]) for a in planning["attempts_detail"]] == [
        (1, "failed", "first try broke"),
        (2, "succeeded", ""),
    ]
    attempts = api.get(f"/api/tasks/{task.pk}/attempts/").json()
    assert [(a["stage"], a["attempt"], a["success"]) for a in attempts] == [("planning", 1, False), ("planning", 2, True)]
    assert attempts[1]["tokens"]["total"] == 1540 and attempts[1]["cost_usd"] == "0.008700"


def test_stats_and_workers(api, running_task):
    fake_runner.attempt_finish(running_task.results.get(stage__name="planning"), output_text="# Plan")
    stats = api.get("/api/stats/", {"days": 7}).json()
    assert stats["days"] == 7 and len(stats["per_day"]) == 7
    assert stats["by_stage"] == [{"key": "planning", "label": "planning", "attempts": 1, "succeeded": 1, "failed": 0, "cancelled": 0, "ended": 1, "rate": 1.0}]
    assert stats["per_day"][-1]["tokens"] == 1540
    assert stats["tasks_by_status"] == {"running": 1}
    fake_runner.stage_claim(running_task, "building")
    workers = api.get("/api/workers/").json()
    assert [(w["kind"], w["stage"], w["task_id"]) for w in workers] == [("agent", "building", running_task.pk)]
    everyone = api.get("/api/workers/", {"include_exited": "true"}).json()
    assert len(everyone) == 2
