from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/events/", consumers.EventStreamConsumer.as_asgi(), name="ws-events"),
    path("ws/tasks/<int:task_id>/events/", consumers.EventStreamConsumer.as_asgi(), name="ws-task-events"),
]
