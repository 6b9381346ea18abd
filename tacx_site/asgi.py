"""ASGI entry point (daphne, and `runserver` since daphne is first in INSTALLED_APPS).

HTTP goes to Django; websockets go to the dashboard's consumers behind the origin check (against
ALLOWED_HOSTS: a page on another site cannot open a socket with our cookies) and the session
authentication (the consumers refuse anonymous users).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")

# Django must be set up before the consumers (and the models they import) are loaded.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator

from dashboard.routing import websocket_urlpatterns

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
