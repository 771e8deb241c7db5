"""The /_sim control API: a no-auth loopback tool for tests and demos to steer the simulator."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import orjson
from aiohttp import web

from proxy.simulator.context import STATE_KEY
from proxy.simulator.errors import json_response
from proxy.simulator.events import WebhookConfig
from proxy.simulator.faults import FaultRule
from proxy.simulator.ids import canonical_container_id, canonical_job_id
from proxy.simulator.state import DEFAULT_ORG, DEFAULT_SCRIPT, KeySpec, RetryAfterFormat
from proxy.simulator.timeline import ContainerScript, Ending, StatusWord, status_at

CONTAINER_FIELDS = {"id", "org", "projectId", "stages", "ending", "status_word", "queued_s"}
CONTAINER_FIELDS |= {"eta", "with_job", "kind", "error_code", "start_offset_s"}


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPUnprocessableEntity(reason=f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise web.HTTPUnprocessableEntity(reason="expected a JSON object")
    return data


def _invalid(exc: Exception) -> web.HTTPUnprocessableEntity:
    return web.HTTPUnprocessableEntity(reason=str(exc) or type(exc).__name__)


def script_from_json(data: dict[str, Any]) -> ContainerScript:
    """Build a script from control-API fields, defaulting to the realistic 20 s timeline."""
    changes: dict[str, Any] = {}
    if "stages" in data:
        changes["stages"] = tuple((str(name), float(sec)) for name, sec in data["stages"])
        # Custom stages start right away unless a queue time is asked for.
        changes["queued_s"] = 0.0
    if "queued_s" in data:
        changes["queued_s"] = float(data["queued_s"])
    if "ending" in data:
        changes["ending"] = cast(Ending, data["ending"])
    if "status_word" in data:
        changes["status_word"] = cast(StatusWord, data["status_word"])
    if "eta" in data:
        changes["eta"] = bool(data["eta"])
    for name in ("kind", "error_code"):
        if name in data:
            changes[name] = str(data[name])
    return dataclasses.replace(DEFAULT_SCRIPT, **changes)


async def create_container(request: web.Request) -> web.Response:
    """POST /_sim/containers: start a scripted container (and its job)."""
    state = request.app[STATE_KEY]
    data = await _json_body(request)
    unknown = set(data) - CONTAINER_FIELDS
    if unknown:
        raise web.HTTPUnprocessableEntity(reason=f"unknown fields: {sorted(unknown)}")
    try:
        script = script_from_json(data)
        cid, job_id = state.add_container(
            script,
            container_id=data.get("id"),
            org=str(data.get("org", DEFAULT_ORG)),
            project_id=data.get("projectId"),
            with_job=bool(data.get("with_job", True)),
            start_offset_s=float(data.get("start_offset_s", 0.0)),
        )
    except (TypeError, ValueError) as exc:
        raise _invalid(exc) from exc
    return json_response({"containerId": cid, "jobId": job_id}, status=201)


async def list_containers(request: web.Request) -> web.Response:
    """GET /_sim/containers: every container with its current job and status."""
    state = request.app[STATE_KEY]
    items = [
        {
            "containerId": c.id,
            "jobId": c.run.job_id,
            "org": c.org,
            "status": status_at(c.run.script, state.elapsed(c.run)),
            "generation": c.run.generation,
        }
        for c in state.containers.values()
    ]
    return json_response({"containers": items})


async def regenerate_container(request: web.Request) -> web.Response:
    """POST /_sim/containers/{id}/regenerate: rerun a finished container in place."""
    state = request.app[STATE_KEY]
    try:
        job_id = state.regenerate(request.match_info["id"])
    except KeyError as exc:
        raise web.HTTPNotFound(reason="no such container") from exc
    except ValueError as exc:
        raise web.HTTPConflict(reason=str(exc)) from exc
    container = state.find_container(request.match_info["id"])
    assert container is not None
    return json_response({"containerId": container.id, "jobId": job_id})


async def cancel_container(request: web.Request) -> web.Response:
    """POST /_sim/containers/{id}/cancel: stop at the next stage boundary."""
    state = request.app[STATE_KEY]
    try:
        accepted = state.cancel(request.match_info["id"])
    except KeyError as exc:
        raise web.HTTPNotFound(reason="no such container") from exc
    container = state.find_container(request.match_info["id"])
    assert container is not None
    return json_response({"containerId": container.id, "accepted": accepted})


async def list_requests(request: web.Request) -> web.Response:
    """GET /_sim/requests?since_index=N&resource_id=X&kind=K: the request log."""
    state = request.app[STATE_KEY]
    try:
        since = int(request.query.get("since_index", "0"))
    except ValueError as exc:
        raise _invalid(exc) from exc
    resource_id = request.query.get("resource_id")
    if resource_id is not None:
        # Match however the id is spelled: the log holds canonical ids.
        canonical = canonical_job_id(resource_id) or canonical_container_id(resource_id)
        resource_id = canonical or resource_id
    records = state.requests(since, resource_id, request.query.get("kind"))
    body = {"requests": [r.to_json() for r in records], "next_index": state.log.next_index}
    return json_response(body)


async def get_stats(request: web.Request) -> web.Response:
    """GET /_sim/stats: request counts per resource, status and kind."""
    return json_response(request.app[STATE_KEY].stats())


async def add_fault(request: web.Request) -> web.Response:
    """POST /_sim/faults: activate a fault rule."""
    state = request.app[STATE_KEY]
    try:
        rule = state.add_fault(FaultRule.from_json(await _json_body(request)))
    except ValueError as exc:
        raise _invalid(exc) from exc
    return json_response({"fault": rule.to_json()}, status=201)


async def list_faults(request: web.Request) -> web.Response:
    """GET /_sim/faults: the active rules."""
    rules = request.app[STATE_KEY].faults.rules
    return json_response({"faults": [r.to_json() for r in rules]})


async def clear_faults(request: web.Request) -> web.Response:
    """DELETE /_sim/faults: drop every rule and release hanging requests."""
    return json_response({"cleared": request.app[STATE_KEY].clear_faults()})


async def add_key(request: web.Request) -> web.Response:
    """POST /_sim/keys: register a key with scopes, org and child orgs."""
    state = request.app[STATE_KEY]
    data = await _json_body(request)
    try:
        key = data["key"]
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty string")
        rate = data.get("rate_per_min")
        spec = KeySpec(
            scopes=tuple(str(s) for s in data.get("scopes", ["*"])),
            org=str(data.get("org", DEFAULT_ORG)),
            child_orgs=tuple(str(o) for o in data.get("child_orgs", [])),
            rate_per_min=None if rate is None else int(rate),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _invalid(exc) from exc
    return json_response({"keyId": state.add_key(key, spec)}, status=201)


async def set_budget(request: web.Request) -> web.Response:
    """POST /_sim/budget: change the default rate and the Retry-After format."""
    state = request.app[STATE_KEY]
    data = await _json_body(request)
    try:
        rate = data.get("rate_per_min")
        fmt = cast(RetryAfterFormat | None, data.get("retry_after_format"))
        state.set_budget(None if rate is None else int(rate), fmt)
    except (TypeError, ValueError) as exc:
        raise _invalid(exc) from exc
    body = {"rate_per_min": state.rate_per_min, "retry_after_format": state.retry_after_format}
    return json_response(body)


async def configure_webhooks(request: web.Request) -> web.Response:
    """POST /_sim/webhooks: send signed webhooks to a URL."""
    state = request.app[STATE_KEY]
    data = await _json_body(request)
    try:
        config = WebhookConfig(
            url=str(data["url"]),
            secret=str(data["secret"]),
            delay_s=float(data.get("delay_s", 0.0)),
            drop_rate=float(data.get("drop_rate", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _invalid(exc) from exc
    state.configure_webhooks(config)
    return json_response({"webhook": config.to_json()})


async def webhook_deliveries(request: web.Request) -> web.Response:
    """GET /_sim/webhooks: the config (without secret) and what was sent or dropped."""
    state = request.app[STATE_KEY]
    config = state.webhook.to_json() if state.webhook else None
    deliveries = [d.to_json() for d in state.webhook_log]
    return json_response({"webhook": config, "deliveries": deliveries})


async def stop_webhooks(request: web.Request) -> web.Response:
    """DELETE /_sim/webhooks: stop sending webhooks."""
    request.app[STATE_KEY].configure_webhooks(None)
    return json_response({"webhook": None})


async def reset(request: web.Request) -> web.Response:
    """POST /_sim/reset: clear the log, faults, budget counters and webhook log."""
    request.app[STATE_KEY].reset()
    return json_response({"reset": True})


async def get_clock(request: web.Request) -> web.Response:
    """GET /_sim/clock: the simulator's monotonic and wall time."""
    state = request.app[STATE_KEY]
    return json_response({"mono": state.clock(), "wall": state.wall_clock()})
