"""Events after a cursor: in order, resumable, nothing twice."""

from __future__ import annotations

import pytest

from harness import fake_runner

pytestmark = pytest.mark.django_db


def test_a_client_pages_through_the_events_with_its_cursor(api, local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=1)
    other = fake_runner.task_running(repository=local_repository, issue_number=2)
    result = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(result, fake_runner.sample_conversation())
    fake_runner.events_add(fake_runner.stage_claim(other, "planning"), fake_runner.sample_conversation())
    expected = list(task.events.order_by("id").values_list("id", flat=True))
    seen, after = [], 0
    while True:
        page = api.get(f"/api/tasks/{task.pk}/events/", {"after": after, "limit": 3}).json()
        seen += [e["id"] for e in page["events"]]
        after = page["next_after"]
        if not page["has_more"]:
            break
    assert seen == expected
    again = api.get(f"/api/tasks/{task.pk}/events/", {"after": after}).json()
    assert again == {"events": [], "next_after": after, "has_more": False, "held_back": False}


def test_an_event_says_which_attempt_and_stage_it_belongs_to(api, local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=1)
    result = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(result, fake_runner.sample_conversation())
    events = api.get(f"/api/tasks/{task.pk}/events/").json()["events"]
    call = next(e for e in events if e["kind"] == "tool_call")
    assert call["attempt_id"] == result.pk and call["stage"] == "planning" and call["attempt"] == 1
    assert call["data"]["input"]["file_path"] == "plan.md"
    status = events[0]
    assert status["kind"] == "status" and status["attempt_id"] is None
