"""Metrics for a group of workers: each publishes its own, a scrape of any one sums them all.

Every worker writes its exposition text into the group directory once a second; a scrape reads
its own registry fresh plus the siblings' files (ignoring files older than a few seconds: a dead
worker) and adds them up. Counters and histograms are summed; of the gauges, the ones that
describe the cluster rather than the worker (the budget cap, the cooldown) take the maximum.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from proxy.metrics import PREFIX

_MAX_AGE_S = 5.0
_SHARED_GAUGES = {PREFIX + "upstream_budget_per_minute", PREFIX + "upstream_cooldown_seconds"}


def _path(group_dir: str, index: str) -> Path:
    return Path(group_dir) / f"worker-{index}.prom"


async def publish_forever(registry: CollectorRegistry, group_dir: str, index: str) -> None:
    """Write this worker's metrics for its siblings every second (cancel to stop)."""
    target = _path(group_dir, index)
    scratch = target.with_suffix(".tmp")
    while True:
        with contextlib.suppress(OSError):
            scratch.write_bytes(generate_latest(registry))
            scratch.replace(target)  # atomic: a reader never sees half a file
        await asyncio.sleep(1.0)


def _siblings(group_dir: str, index: str) -> list[str]:
    now = time.time()
    texts = []
    for path in Path(group_dir).glob("worker-*.prom"):
        if path == _path(group_dir, index):
            continue
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime <= _MAX_AGE_S:
                texts.append(path.read_text(encoding="utf-8"))
    return texts


class _Merged(Collector):
    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = list(texts)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for text in self._texts:
            for family in text_string_to_metric_families(text):
                if family.name not in families:
                    families[family.name] = Metric(family.name, family.documentation, family.type)
                    values[family.name] = {}
                merged = values[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if family.name in _SHARED_GAUGES:
                        merged[key] = max(merged.get(key, sample.value), sample.value)
                    else:
                        merged[key] = merged.get(key, 0.0) + sample.value
        for name, family in families.items():
            for (sample_name, labels), value in values[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family


def group_text(registry: CollectorRegistry, group_dir: str, index: str) -> bytes:
    """The whole group's metrics: this worker's (fresh) plus every live sibling's."""
    own = generate_latest(registry).decode()
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Merged([own, *_siblings(group_dir, index)]))
    return generate_latest(merged)
