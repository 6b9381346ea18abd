"""The websocket origin check: the page that opens a socket must come from this very site.

Browsers send cookies to a host whatever its port, so a page served by any other program on
one of our host names (another port, or plain http beside https) could open a socket with the
user's session. channels' `AllowedHostsOriginValidator` compares only the host name with
ALLOWED_HOSTS; this compares the whole origin, scheme, host and port, with the one the socket
was opened to (its Host header and ws/wss), or with one of CSRF_TRUSTED_ORIGINS (a proxy that
changes the host), as Django's CSRF check does for forms.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url.strip())
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:  # a malformed port or bracket
        return None
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or DEFAULT_PORTS[scheme]


def origin_allowed(scope: dict) -> bool:
    headers = dict(scope.get("headers") or [])
    origin = headers.get(b"origin", b"").decode("latin-1")
    host = headers.get(b"host", b"").decode("latin-1")
    key = _origin_key(origin)
    if key is None or not host:
        return False
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    own_scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    allowed = {_origin_key(f"{own_scheme}://{host}")}
    allowed |= {_origin_key(o) for o in settings.CSRF_TRUSTED_ORIGINS if "*" not in o}
    return key in allowed


class SameOriginValidator:
    """ASGI middleware: websocket connections whose Origin is not this site's are refused."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)
