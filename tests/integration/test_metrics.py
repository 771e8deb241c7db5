"""/metrics: Prometheus text that agrees with what really reached the upstream."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ProxyFactory, Sim
from tests.integration.helpers import poll_until_terminal

pytestmark = [pytest.mark.integration]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(session: aiohttp.ClientSession, url: str, token: str = "") -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(f"{url}/metrics", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        return await resp.text()


@pytest.mark.timeout(60)
async def test_upstream_counters_summed_over_replicas_equal_the_simulator_log(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """Two replicas, three containers polled to the end: the counters match the request log."""
    replicas = [proxies(), proxies()]
    containers = [sim.container([["generating_visuals", 4.0]])[0] for _ in range(3)]
    async with aiohttp.ClientSession() as session:
        for i, cid in enumerate(containers):
            for proxy in replicas:
                url = f"{proxy.url}/v1/content/{cid}/progress"
                seen = await poll_until_terminal(session, url, every_s=0.3, deadline_s=25)
                assert seen.final is not None, (i, seen.statuses)
        async with session.get(f"{replicas[0].url}/v1/content/not-an-id/progress") as resp:
            assert resp.status == 400
        texts = [await scrape(session, p.url) for p in replicas]
    logged = sum(len(sim.requests(cid)) for cid in containers)
    parsed = [samples(t) for t in texts]
    counted = sum(
        v
        for p in parsed
        for (name, _), v in p.items()
        if name == "layers_proxy_upstream_requests_total"
    )
    assert counted == logged and logged >= 3
    route = "/v1/content/{containerId}/progress"
    served = sum(
        v
        for p in parsed
        for (name, labels), v in p.items()
        if name == "layers_proxy_client_requests_total" and ("route", route) in labels
    )
    assert served >= 6
    assert any(
        ("status_class", "4xx") in labels and ("route", route) in labels
        for (name, labels) in parsed[0]
        if name == "layers_proxy_client_requests_total"
    )
    # Bounded labels: no container id anywhere in the output.
    assert not any(cid in text for cid in containers for text in texts)
    first = parsed[0]
    assert first[("layers_proxy_upstream_budget_per_minute", ())] == 120 * 0.9
    assert ("layers_proxy_served_snapshot_age_seconds_count", ()) in first
    assert first[("layers_proxy_redis_errors_total", ())] == 0


@pytest.mark.timeout(30)
async def test_metrics_need_the_admin_token_when_one_is_set(proxies: ProxyFactory) -> None:
    token = "admin-" + "Qz7rT2vX9kL4mN8p"
    proxy = proxies(PROXY_ADMIN_TOKEN=token)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.url}/metrics") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "UNAUTHENTICATED"
        text = await scrape(session, proxy.url, token)
    assert "layers_proxy_streams_open" in text and token not in text
