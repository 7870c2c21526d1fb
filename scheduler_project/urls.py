"""URLs: the HTTP API, health and metrics, and the admin."""

from django.contrib import admin
from django.urls import path

from tasks_app import dashboard_views
from tasks_app.api import errors, health_views
from tasks_app.api.routes import api
from tasks_app.metrics import views as metrics_views

urlpatterns = [
    # Before the admin's own routes, under its prefix and behind its login.
    *dashboard_views.urls(),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("healthz", health_views.healthz, name="healthz"),
    path("readyz", health_views.readyz, name="readyz"),
    path("metrics", metrics_views.metrics, name="metrics"),
]

# Django's own 400 (a SuspiciousOperation, BadRequest) in the API's JSON error shape.
handler400 = errors.bad_request_view
