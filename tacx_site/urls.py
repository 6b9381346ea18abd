from django.contrib import admin
from django.http import HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path

from pipeline.metrics import metrics_view


def favicon(request):
    # Browsers ask for /favicon.ico whatever the page says; answer with the icon, not a 404.
    return HttpResponseRedirect(static("favicon.svg"))


urlpatterns = [
    path("favicon.ico", favicon),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("", include("coordinator.urls")),
    # Before the API: the API answers every other /api/ path with a JSON 404 (see api.urls).
    path("", include("dashboard.urls")),
    path("api/", include("dashboard.api.urls")),
]

handler404 = "dashboard.views.page_not_found"
handler500 = "dashboard.views.server_error"
