"""Typed keys for what the app and each /v1 request carry."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from proxy.simulator.budget import BudgetDecision
from proxy.simulator.requestlog import RequestRecord
from proxy.simulator.state import SimulatorState


@dataclass
class ApiContext:
    """Per-request bookkeeping shared by the middleware and the /v1 handlers."""

    request_id: str
    record: RequestRecord
    presented_key: str | None
    budget: BudgetDecision | None = None
    # False when a fault sent no HTTP response (reset, abandoned hang).
    answered: bool = True


STATE_KEY = web.AppKey("simulator_state", SimulatorState)
CTX_KEY = web.RequestKey("simulator_ctx", ApiContext)
