"""Every API operation needs an authenticated user: a token or a session."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

OPERATIONS = [
    ("get", "/api/tasks/"),
    ("post", "/api/tasks/create/"),
    ("get", "/api/tasks/1/"),
    ("post", "/api/tasks/1/retry/"),
    ("post", "/api/tasks/1/cancel/"),
    ("get", "/api/tasks/1/stages/"),
    ("get", "/api/tasks/1/attempts/"),
    ("get", "/api/tasks/1/events/"),
    ("get", "/api/stats/"),
    ("get", "/api/workers/"),
]


@pytest.mark.parametrize("method,url", OPERATIONS)
def test_an_anonymous_request_is_refused_with_the_error_shape(method, url):
    response = getattr(APIClient(), method)(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"error": {"code": "not_authenticated", "message": "Authentication credentials were not provided."}}


def test_a_wrong_token_is_refused():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get("/api/tasks/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_token_lets_a_client_in(alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    assert client.get("/api/tasks/").status_code == 200


def test_a_session_lets_a_browser_in(client, alice):
    client.force_login(alice)
    assert client.get("/api/tasks/").status_code == 200


def test_a_session_post_needs_the_csrf_token(alice, local_repository):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/api/tasks/create/", {"repository": "sample", "issue_number": 1, "title": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert "CSRF" in response.json()["error"]["message"]


def test_the_schema_and_docs_page_are_served_to_logged_in_users_only(client, alice):
    assert client.get("/api/schema/").status_code == 401
    assert client.get("/api/docs/").status_code == 302
    client.force_login(alice)
    assert client.get("/api/schema/").status_code == 200
    assert b'id="api-docs"' in client.get("/api/docs/").content
