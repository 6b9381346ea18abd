"""Every bad input answers 400 naming the field, an unknown id 404, a state conflict 409, all in
the one error shape; nothing answers 500."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(alice, local_repository):
    client = APIClient()
    client.force_authenticate(alice)
    return client


@pytest.mark.parametrize(
    "url,params,field",
    [
        ("/api/tasks/", {"status": "bogus"}, "status"),
        ("/api/tasks/", {"issue": "seven"}, "issue"),
        ("/api/tasks/", {"issue": "0"}, "issue"),
        ("/api/tasks/", {"issue": "99999999999999"}, "issue"),
        ("/api/tasks/", {"limit": "0"}, "limit"),
        ("/api/tasks/", {"limit": "201"}, "limit"),
        ("/api/tasks/", {"limit": "many"}, "limit"),
        ("/api/tasks/", {"offset": "-1"}, "offset"),
        ("/api/tasks/", {"repository": "x" * 201}, "repository"),
        ("/api/tasks/", {"search": "x" * 201}, "search"),
        ("/api/stats/", {"days": "0"}, "days"),
        ("/api/stats/", {"days": "366"}, "days"),
        ("/api/workers/", {"include_exited": "perhaps"}, "include_exited"),
    ],
)
def test_a_bad_query_parameter_is_a_400_naming_it(api, url, params, field):
    response = api.get(url, params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"].startswith(f"{field}: ")
    assert error["code"]


def test_a_bad_events_cursor_is_a_400_naming_it(api, local_repository):
    from harness import fake_runner

    task = fake_runner.task_running(repository=local_repository, issue_number=1)
    for params, field in [
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"limit": "1001"}, "limit"),
        ({"after": str(2**63)}, "after"),
    ]:
        response = api.get(f"/api/tasks/{task.pk}/events/", params)
        assert response.status_code == 400, params
        assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "repository"),
        ({"repository": "sample", "title": "x", "workflow": "stages: []"}, "workflow"),  # issue_number is optional (local)
        ({"repository": "sample", "issue_number": 1}, "title"),
        ({"repository": "sample", "issue_number": "one", "title": "x"}, "issue_number"),
        ({"repository": "sample", "issue_number": -3, "title": "x"}, "issue_number"),
        ({"repository": "sample", "issue_number": 2**40, "title": "x"}, "issue_number"),
        ({"repository": "sample", "issue_number": 1, "title": ""}, "title"),
        ({"repository": "sample", "issue_number": 1, "title": "x" * 501}, "title"),
        ({"repository": "sample", "issue_number": 1, "title": "x", "start": "sometimes"}, "start"),
        ({"repository": "nowhere", "issue_number": 1, "title": "x"}, "repository"),
        ({"repository": "", "issue_number": 1, "title": "x"}, "repository"),
        ({"repository": ["sample"], "issue_number": 1, "title": "x"}, "repository"),
    ],
)
def test_a_bad_create_body_is_a_400_naming_the_field(api, body, field):
    response = api.post("/api/tasks/create/", body, format="json")
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"]


def test_a_body_that_is_not_json_is_a_400(api):
    response = api.post("/api/tasks/create/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert "JSON parse error" in response.json()["error"]["message"]


def test_a_body_that_is_a_list_is_a_400(api):
    response = api.post("/api/tasks/create/", [1, 2], format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Invalid data")


@pytest.mark.parametrize(
    "method,url",
    [
        ("get", "/api/tasks/999999/"),
        ("post", "/api/tasks/999999/retry/"),
        ("post", "/api/tasks/999999/cancel/"),
        ("get", "/api/tasks/999999/stages/"),
        ("get", "/api/tasks/999999/attempts/"),
        ("get", "/api/tasks/999999/events/"),
    ],
)
def test_an_unknown_task_is_a_404_in_the_error_shape(api, method, url):
    response = getattr(api, method)(url)
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}


def test_a_wrong_method_is_a_405_in_the_error_shape(api):
    response = api.delete("/api/tasks/")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response["Allow"]


def test_an_unexpected_exception_is_logged_and_answered_in_the_error_shape(caplog):
    from dashboard.api.errors import exception_handler

    response = exception_handler(RuntimeError("boom"), {"view": None})
    assert response.status_code == 500
    assert response.data == {"error": {"code": "server_error", "message": "Internal error; it has been logged."}}
    assert "boom" in caplog.text


def test_nested_errors_name_the_path():
    from rest_framework.exceptions import ErrorDetail

    from dashboard.api.errors import first_error

    assert first_error({"a": {"b": [ErrorDetail("bad", code="invalid")]}}) == ("a.b", "bad", "invalid")
    assert first_error({"non_field_errors": [ErrorDetail("whole", code="x")]}) == (None, "whole", "x")
    assert first_error([{"c": ["no"]}]) == ("0.c", "no", None)
