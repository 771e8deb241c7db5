"""The simulator's whole URL map on one screen."""

from __future__ import annotations

from aiohttp import web

from proxy.simulator import control
from proxy.simulator.api import api_handler


def add_routes(app: web.Application) -> None:
    """Register the /v1 stand-in routes and the /_sim control routes."""
    app.router.add_get("/v1/content/{id}/progress", api_handler("progress"))
    app.router.add_get("/v1/content/{id}", api_handler("container"))
    app.router.add_get("/v1/jobs/{id}", api_handler("job"))
    app.router.add_get("/v1/projects/{id}/content", api_handler("project_content"))
    app.router.add_get("/v1/whoami", api_handler("whoami"))
    # Anything else under /v1 still authenticates, spends and answers a 404 envelope.
    app.router.add_route("*", "/v1/{tail:.*}", api_handler("other"))

    app.router.add_get("/_sim/containers", control.list_containers)
    app.router.add_post("/_sim/containers", control.create_container)
    app.router.add_post("/_sim/containers/{id}/regenerate", control.regenerate_container)
    app.router.add_post("/_sim/containers/{id}/cancel", control.cancel_container)
    app.router.add_get("/_sim/requests", control.list_requests)
    app.router.add_get("/_sim/stats", control.get_stats)
    app.router.add_get("/_sim/faults", control.list_faults)
    app.router.add_post("/_sim/faults", control.add_fault)
    app.router.add_delete("/_sim/faults", control.clear_faults)
    app.router.add_post("/_sim/keys", control.add_key)
    app.router.add_post("/_sim/budget", control.set_budget)
    app.router.add_get("/_sim/webhooks", control.webhook_deliveries)
    app.router.add_post("/_sim/webhooks", control.configure_webhooks)
    app.router.add_delete("/_sim/webhooks", control.stop_webhooks)
    app.router.add_post("/_sim/reset", control.reset)
    app.router.add_get("/_sim/clock", control.get_clock)
