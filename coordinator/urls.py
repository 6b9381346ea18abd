from django.urls import path

from . import webhooks

app_name = "coordinator"
urlpatterns = [
    path("webhooks/github", webhooks.github_webhook, name="github-webhook"),
    path("webhooks/github/", webhooks.github_webhook),
]
