"""Error pages and small things every page needs: a styled 404 and 500, a favicon, the sandbox
warning banner."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_an_unknown_page_is_a_styled_404(client, alice, settings):
    settings.DEBUG = False
    client.force_login(alice)
    response = client.get("/no/such/page/")
    html = response.content.decode()
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in html and "/no/such/page/" in html and "tacx.css" in html


def test_an_unknown_task_is_a_styled_404(client, alice, settings):
    settings.DEBUG = False
    client.force_login(alice)
    response = client.get("/tasks/999999/")
    assert response.status_code == 404 and "Back to the tasks" in response.content.decode()


def test_a_server_error_is_a_styled_500_without_the_database(rf):
    from dashboard.views import server_error

    response = server_error(rf.get("/"))
    assert response.status_code == 500 and "Something went wrong" in response.content.decode()


def test_the_favicon_is_linked_and_served(client, alice):
    client.force_login(alice)
    assert 'rel="icon"' in client.get("/").content.decode()
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and response["Location"].endswith("favicon.svg")
    assert client.get(response["Location"]).status_code == 200


def test_the_sandbox_banner_shows_only_when_the_sandbox_is_off(client, alice, settings):
    client.force_login(alice)
    assert 'id="sandbox-banner"' not in client.get("/").content.decode()
    settings.TACX = {**settings.TACX, "SANDBOX": "off"}
    assert 'id="sandbox-banner"' in client.get("/").content.decode()
