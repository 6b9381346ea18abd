"""ASGI entry point (daphne, and `runserver` since daphne is first in INSTALLED_APPS).

HTTP goes to Django; websockets go to the dashboard's consumers behind the origin check (scheme,
host and port of the page must be this site's: see dashboard.origin) and the session
authentication (the consumers refuse anonymous users and users without pipeline.view_task).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")
# Under ASGI a request's queries may run on any of several threads, each with its own
# connection: Django advises against persistent connections there (see DB_CONN_MAX_AGE in the
# settings). Set DB_CONN_MAX_AGE explicitly to override, e.g. behind PgBouncer.
os.environ.setdefault("DB_CONN_MAX_AGE", "0")

# Django must be set up before the consumers (and the models they import) are loaded.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter

from dashboard.origin import SameOriginValidator
from dashboard.routing import websocket_urlpatterns

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
