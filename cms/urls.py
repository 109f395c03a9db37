"""URL map: admin, REST API v1 with its OpenAPI schema and docs, health and metrics, and the web UI at /."""
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cms import health

handler404 = "cms.api.not_found"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("cms.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("health", health.health, name="health"),
    path("", include("django_prometheus.urls")),
    path("", include("cms.web.urls")),
]
