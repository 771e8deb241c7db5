"""A fake Layers Partner API for tests, benchmarks and demos: scripted timelines over real HTTP."""

from proxy.simulator.app import RunningSimulator, make_simulator_app, running_simulator
from proxy.simulator.clock import ManualClock, ScaledClock
from proxy.simulator.demo import seed_demo
from proxy.simulator.events import WebhookConfig, WebhookDelivery
from proxy.simulator.faults import FaultRule
from proxy.simulator.requestlog import RequestRecord
from proxy.simulator.state import DEFAULT_KEY, DEFAULT_ORG, KeySpec, SimulatorState
from proxy.simulator.timeline import ContainerScript, job_at, progress_at

__all__ = [
    "DEFAULT_KEY",
    "DEFAULT_ORG",
    "ContainerScript",
    "FaultRule",
    "KeySpec",
    "ManualClock",
    "RequestRecord",
    "RunningSimulator",
    "ScaledClock",
    "SimulatorState",
    "WebhookConfig",
    "WebhookDelivery",
    "job_at",
    "make_simulator_app",
    "progress_at",
    "running_simulator",
    "seed_demo",
]
