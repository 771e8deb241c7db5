"""The lease module: every lease operation the services do, against fakeredis."""

from __future__ import annotations

import fakeredis
import pytest

from proxy.resources import PROGRESS, ResourceRef
from proxy.services.leases import Lease, Leases
from proxy.store import keys
from proxy.store.redis_store import BudgetPolicy, RedisStore

A = ResourceRef(PROGRESS, "cnt_3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f")
B = ResourceRef(PROGRESS, "cnt_4f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f")


def replica(server: fakeredis.FakeServer, owner: str) -> tuple[Leases, list[str], list[str]]:
    store = RedisStore(
        fakeredis.FakeAsyncRedis(server=server),
        owner=owner,
        lease_ttl_ms=60_000,
        linger_ms=60_000,
        snapshot_ttl_ms=60_000,
    )
    leases = Leases(store)
    adopted: list[str] = []
    forgotten: list[str] = []
    leases.on_adopt = lambda lease: adopted.append(lease.ref.key)
    leases.on_forget = forgotten.append
    return leases, adopted, forgotten


@pytest.mark.timeout(10)
async def test_touch_takes_free_leases_once_and_adopts_them() -> None:
    """The first replica takes both leases; the second learns who holds them, takes none."""
    server = fakeredis.FakeServer()
    one, adopted_one, _ = replica(server, "r1")
    two, adopted_two, _ = replica(server, "r2")
    taken = await one.touch([(A, -1, "acme"), (B, -1, "-")])
    assert [t.fence > 0 for t in taken] == [True, True]
    assert adopted_one == [A.key, B.key]
    lease = one.get(A.key)
    assert lease is not None and lease.tenant == "acme" and lease.token == f"r1:{lease.fence}"
    other = await two.take(A, revalidate_ms=-1)
    assert other.fence == 0 and other.holder == lease.token
    assert adopted_two == [] and not two.owns(A.key)
    # Held already: not asked for again (no new fence, no second adoption).
    again = await one.take(A, revalidate_ms=-1)
    assert again.fence == 0 and adopted_one == [A.key, B.key]


@pytest.mark.timeout(10)
async def test_adopt_keeps_the_newest_fence_and_forget_only_drops_that_lease() -> None:
    """An older fence never replaces a newer one; forgetting a replaced lease is a no-op."""
    leases, adopted, forgotten = replica(fakeredis.FakeServer(), "r1")
    first = leases.adopt(A, 5)
    assert first is not None
    assert leases.adopt(A, 4) is None and leases.adopt(A, 5) is None
    newer = leases.adopt(A, 9)
    assert newer is not None and adopted == [A.key, A.key]
    leases.forget(first)  # an old poll of the replaced lease finishing late
    assert leases.get(A.key) is newer and forgotten == []
    leases.forget(newer)
    assert not leases.owns(A.key) and forgotten == [A.key]


@pytest.mark.timeout(10)
async def test_a_claim_that_finds_the_lease_lost_forgets_it() -> None:
    """Another holder took over in Redis: the gate says "lost" and the lease is dropped."""
    server = fakeredis.FakeServer()
    leases, _, forgotten = replica(server, "r1")
    await leases.touch([(A, -1, "-")])
    lease = leases.get(A.key)
    assert lease is not None
    ok = await leases.claim(lease, gap_ms=1000, tenant="-", budget=BudgetPolicy())
    assert ok.verdict == "ok"
    await fakeredis.FakeAsyncRedis(server=server).set(keys.lease(A.key), "r2:99")
    lost = await leases.claim(lease, gap_ms=1000, tenant="-", budget=BudgetPolicy())
    assert lost.verdict == "lost" and forgotten == [A.key] and not leases.owns(A.key)


@pytest.mark.timeout(10)
async def test_renew_forgets_lost_leases_and_hand_back_frees_them_for_others() -> None:
    """Renewal drops what was lost; a handed-back lease is free for the next replica at once."""
    server = fakeredis.FakeServer()
    one, _, forgotten = replica(server, "r1")
    two, adopted_two, _ = replica(server, "r2")
    await one.touch([(A, -1, "-"), (B, -1, "-")])
    await fakeredis.FakeAsyncRedis(server=server).delete(keys.lease(B.key))
    assert await one.renew() == {B.key}
    assert one.keys() == [A.key] and forgotten == [B.key]
    held = one.get(A.key)
    assert isinstance(held, Lease)
    await one.hand_back(held)
    assert not one.owns(A.key)
    taken = await two.take(A, revalidate_ms=-1)
    assert taken.fence > held.fence and adopted_two == [A.key]


@pytest.mark.timeout(10)
async def test_hand_back_all_releases_every_lease_in_redis() -> None:
    """Shutdown: nothing held here, no lease key left in Redis."""
    server = fakeredis.FakeServer()
    leases, _, forgotten = replica(server, "r1")
    await leases.touch([(A, -1, "-"), (B, -1, "-")])
    await leases.hand_back_all()
    assert leases.keys() == [] and sorted(forgotten) == sorted([A.key, B.key])
    raw = fakeredis.FakeAsyncRedis(server=server)
    assert await raw.exists(keys.lease(A.key), keys.lease(B.key)) == 0
