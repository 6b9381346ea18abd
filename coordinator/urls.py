from django.urls import path

from . import tracker_webhooks, webhooks

app_name = "coordinator"
urlpatterns = [
    path("webhooks/github", webhooks.github_webhook, name="github-webhook"),
    path("webhooks/github/", webhooks.github_webhook),
    # Every other registered tracker (GitLab, Linear, Jira): coordinator.tracker_webhooks.
    path("webhooks/<slug:kind>", tracker_webhooks.tracker_webhook, name="tracker-webhook"),
    path("webhooks/<slug:kind>/", tracker_webhooks.tracker_webhook),
]
