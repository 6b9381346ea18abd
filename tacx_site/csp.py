"""A Content-Security-Policy on every response (pages, partials, admin, API, errors).

Nothing on a TAC-X page comes from another origin: scripts and styles are static files of this
site (no inline `<script>` or `style=` attribute; the chart data is a JSON block, which CSP does
not run), images are this site's, and the only connections are fetches of partials and the live
event websocket to this same host. So the policy names `'self'` and nothing else, plus `ws:`/`wss:`
of the request's own host for the websocket (CSP3 lets `'self'` cover those, older browsers do
not). Agent-written markdown can then load nothing from a host the agent chose, even if a tag got
past the renderer (dashboard.rendering renders no images at all).

Written by hand rather than with django-csp: one fixed header whose only variable part is the
host, which a settings-level policy cannot express.
"""

from __future__ import annotations

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse

FIXED = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)


def policy_for(request: HttpRequest) -> str:
    try:
        host = request.get_host()
    except DisallowedHost:
        host = ""
    sockets = f" ws://{host} wss://{host}" if host else ""
    return "; ".join((*FIXED, f"connect-src 'self'{sockets}"))


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", policy_for(request))
        return response
