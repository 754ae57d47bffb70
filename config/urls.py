"""URL map: pages, admin, REST API v1 and its OpenAPI schema."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from smsblast.views import admin_login

urlpatterns = [
    # The admin's log-in (reverse("admin:login") leads here): its password step hands the roles that give a second
    # factor over to the code step of the log-in page, as that page does.
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script from a URL: the Content-Security-Policy allows no inline one.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include("smsblast.api_urls")),
    path("api/v1/", include("campaigns.api_urls")),
    path("api/v1/", include("operators.api_urls")),
    path("", include("smsblast.urls")),
    path("", include("campaigns.urls")),
]

# API clients read JSON: an unknown /api/ path gets a `detail`, not the HTML page.
handler404 = "smsblast.api.not_found"
