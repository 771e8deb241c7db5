"""Operations endpoints: liveness, readiness, and the admin stats view."""

from __future__ import annotations

import contextlib
import hmac

import orjson
from aiohttp import web

from proxy.errors import Unauthenticated
from proxy.store.connect import is_embedded
from proxy.store.errors import StoreError
from proxy.web import keys


async def healthz(request: web.Request) -> web.Response:
    """200 while the process accepts requests."""
    return web.json_response({"status": "ok"}, dumps=lambda o: orjson.dumps(o).decode())


async def readyz(request: web.Request) -> web.Response:
    """200 when Redis answers and the upstream has not rejected the key; 503 with reasons.

    ``upstream`` reports this replica's last upstream answer, refreshed on every poll; it does
    not decide readiness (stale data is still served while Layers fails).
    """
    app = request.app
    store, settings, scheduler = app[keys.STORE], app[keys.SETTINGS], app[keys.SCHEDULER]
    checks: dict[str, str] = {}
    key_state = ""
    if is_embedded(settings.redis_url):
        checks["redis"] = "embedded"
    elif not store.health.up:
        checks["redis"] = store.health.describe()  # the probe is already on it: answer at once
    else:
        try:
            await store.ping()
            checks["redis"] = "ok"
        except StoreError:
            checks["redis"] = store.health.describe()
    if checks["redis"] in ("ok", "embedded"):
        with contextlib.suppress(StoreError):
            key_state = await store.key_state()
    local_rejection = scheduler.key_rejected
    if local_rejection or key_state.startswith("rejected"):
        checks["upstream_key"] = local_rejection or key_state
    elif key_state == "ok" or scheduler.key_accepted_here:
        checks["upstream_key"] = "ok"
    else:
        checks["upstream_key"] = "not yet checked"
    checks["upstream"] = scheduler.upstream_summary()
    ready = checks["redis"] in ("ok", "embedded") and not checks["upstream_key"].startswith(
        ("rejected", "upstream rejected")
    )
    return web.Response(
        status=200 if ready else 503,
        body=orjson.dumps({"status": "ready" if ready else "not ready", "checks": checks}),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def require_admin(request: web.Request) -> None:
    """401 unless the request carries the configured admin token."""
    token = request.app[keys.SETTINGS].admin_token
    given = request.headers.get("Authorization", "")
    expected = "Bearer " + token.reveal() if token else ""
    if not token or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode()
    ):
        raise Unauthenticated(
            "The admin endpoint needs 'Authorization: Bearer <PROXY_ADMIN_TOKEN>'."
        )


async def admin_stats(request: web.Request) -> web.Response:
    """This replica's counters, per tenant too (admin token required)."""
    require_admin(request)
    return web.Response(
        body=orjson.dumps(public_stats(request.app)), content_type="application/json"
    )


def public_stats(app: web.Application) -> dict[str, object]:
    """Counters that are safe to show (no ids of other tenants' resources, no secrets)."""
    stats = app[keys.STATS]
    data = stats.as_dict()
    data["tenants"] = {
        tenant: {
            "client_requests": stats.tenant_requests.get(tenant, 0),
            "upstream_requests": stats.tenant_upstream.get(tenant, 0),
        }
        for tenant in set(stats.tenant_requests) | set(stats.tenant_upstream)
    }
    census_view = app[keys.CENSUS].tenant_view()
    for tenant, view in census_view.items():
        data["tenants"].setdefault(tenant, {}).update(view)  # type: ignore[attr-defined]
    data["leases_held"] = len(app[keys.SCHEDULER].owned_keys())
    data["cached_resources"] = len(app[keys.WATCHING].cache)
    return data
