from django.contrib import admin
from django.urls import include, path

from pipeline.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("", include("coordinator.urls")),
    # Before the API: the API answers every other /api/ path with a JSON 404 (see api.urls).
    path("", include("dashboard.urls")),
    path("api/", include("dashboard.api.urls")),
]
