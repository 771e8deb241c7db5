"""The whole URL map on one screen."""

from __future__ import annotations

from aiohttp import web

from proxy.web import batch, handlers, metrics_routes, openapi, ops, projects, streams
from proxy.web.admin_view import admin_page, admin_state, setup_admin_view
from proxy.web.static_routes import add_static_routes
from proxy.webhooks import add_webhook_routes


def setup_routes(app: web.Application) -> None:
    """Register every route."""
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/admin/stats", ops.admin_stats)
    app.router.add_get("/admin", admin_page)  # the live admin page; it holds no data
    app.router.add_get("/admin/state", admin_state)  # its feed (admin token)
    app.router.add_get("/openapi.json", openapi.get_openapi)  # describes every route here
    app.router.add_get("/metrics", metrics_routes.metrics)
    app.router.add_get("/v1/content/progress", batch.get_progress_batch)
    app.router.add_get("/v1/content/{containerId}/progress", handlers.get_progress)
    app.router.add_get("/v1/content/{containerId}/progress/stream", streams.stream)
    app.router.add_get("/v1/jobs/{jobId}", handlers.get_job)
    app.router.add_get("/v1/jobs/{jobId}/stream", streams.stream)
    app.router.add_get("/v1/stream", streams.stream)
    app.router.add_get("/v1/projects/{projectId}/progress", projects.get_project_progress)
    app.router.add_get("/v1/projects/{projectId}/stream", projects.stream_project)
    add_static_routes(app)  # /static/layers-progress.js, the browser client
    add_webhook_routes(app)  # POST /v1/webhooks/layers
    setup_admin_view(app)  # what /admin/state keeps between reads
