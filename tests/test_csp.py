"""Every response carries the Content-Security-Policy (tacx_site.csp): pages, partials, the API,
the admin, the login page, errors. Its effect in a browser (an injected image is refused, the live
websocket still works) is tested in test_browser.py."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/api/tasks/", "/admin/login/", "/health", "/no/such/page/", "/static/css/tacx.css"])
def test_every_response_forbids_other_origins(client, path):
    policy = client.get(path, HTTP_HOST="127.0.0.1:8000")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    for name in ("default-src", "script-src", "style-src", "img-src", "font-src"):
        assert directives[name] == "'self'", (name, policy)
    assert directives["connect-src"] == "'self' ws://127.0.0.1:8000 wss://127.0.0.1:8000"
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"


def test_a_host_not_allowed_gets_the_policy_without_sockets(client):
    response = client.get("/health", HTTP_HOST="evil.example")
    assert response["Content-Security-Policy"].endswith("connect-src 'self'")


def test_no_page_template_has_inline_script_or_style():
    """The policy allows neither; a new inline `<script>` or `style=` would break the page."""
    root = Path(__file__).resolve().parent.parent / "templates"
    for template in root.rglob("*.html"):
        text = template.read_text()
        assert " style=" not in text and "<style" not in text, template
        for chunk in text.split("<script")[1:]:
            assert chunk.split(">", 1)[0].strip().startswith("src="), (template, chunk[:80])
