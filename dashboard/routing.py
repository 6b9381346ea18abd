from django.urls import path, re_path

from . import consumers

websocket_urlpatterns = [
    path("ws/events/", consumers.EventStreamConsumer.as_asgi(), name="ws-events"),
    path("ws/tasks/<int:task_id>/events/", consumers.EventStreamConsumer.as_asgi(), name="ws-task-events"),
    # Last: any other path is closed with 4404 (channels' URLRouter would raise instead).
    re_path(r"", consumers.NoRouteConsumer.as_asgi(), name="ws-no-route"),
]
