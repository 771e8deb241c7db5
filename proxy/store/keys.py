"""Every Redis key and channel the proxy uses, in one place, with the Redis Cluster slot of each.

Slot layout (what a Redis Cluster needs; a single Redis ignores the braces):

* ``{<resource key>}``: every per-resource key (lease, fence, version, snapshot, last poll,
  watch) and the resource's shard channel, so each per-resource script (touch, renew, release,
  the per-resource claim steps, the fenced write and its SPUBLISH) stays in one slot.
* ``{lp-global}``: the cooldown, the shared budget and every tenant budget, so the budget step
  of the claim (cooldown + shared GCRA + tenant GCRA, spent together or not at all) is one
  single-slot script. One slot on one node: these keys are touched once per upstream request.
  The global memory marker (``MEMORY_SINCE``) has the tag too.
* ``{s<n>}``: on a cluster, each master's own memory marker, in the lowest slot it serves
  (``slot_memory_since``): a master can restart empty on its own.
* ``{<tenant>}``: a tenant's rate log and its running sum (one script uses both).
* Everything else is one key per command or script (key state, census, webhook ids, a tenant's
  stream slots and watched set), so it may live in whatever slot its name hashes to.

Snapshot fan-out: one channel (``SNAPSHOT_CHANNEL``, ``POKE_CHANNEL``) on a single Redis; on a
cluster each resource's shard channel (``channel``), in the resource's slot.
"""

from __future__ import annotations

import binascii
import itertools

PREFIX = "lp:"

# Single Redis: channel "<resource key>|<version>|<fetched_ms>|<mode>" for every snapshot write.
# (On a Redis Cluster each resource has a shard channel instead: see ``channel``.)
SNAPSHOT_CHANNEL = PREFIX + "snapshots"

# Single Redis: channel "<resource key>" asks the lease holder to poll now (webhooks end polling
# early). On a Redis Cluster a poke is "<resource key>|0|0|poke" on the resource's shard channel.
POKE_CHANNEL = PREFIX + "pokes"
POKE_MODE = "poke"

# The hash tag of the keys the budget step of the claim reads and writes together.
GLOBAL_TAG = "{lp-global}"

# Cluster-wide upstream cooldown after a 429; TTL = the Retry-After the upstream asked for.
COOLDOWN = PREFIX + GLOBAL_TAG + ":cooldown"

# GCRA "theoretical arrival time" of the shared upstream budget; TTL = how far ahead it runs.
BUDGET = PREFIX + GLOBAL_TAG + ":budget"

# Per-tenant GCRA of the upstream budget at the tenant's fair rate; TTL = how far ahead it runs.
# Same slot as the shared budget: the claim spends both in one script, or neither.
TENANT_BUDGET_PREFIX = PREFIX + GLOBAL_TAG + ":budget:tenant:"

# Whether the upstream accepts the key ("ok" or "rejected ..."); TTL 5 min so a fixed key clears.
KEY_STATE = PREFIX + "keystate"
KEY_STATE_TTL_MS = 300_000

# Census of watched resources for fair sharing: hash "tenant|resource key" →
# "expiry_ms|interval_ms". Entries expire with the linger; replicas prune them when reading.
WATCHED = PREFIX + "census"

# Webhook event ids already handled; TTL 24 h, longer than any sender's retry schedule.
WEBHOOK_SEEN_PREFIX = PREFIX + "webhook:seen:"
WEBHOOK_SEEN_TTL_MS = 86_400_000


# Last upstream request start time per resource (Redis clock, ms); TTL 1 h, far beyond any gap.
LAST_POLL_TTL_MS = 3_600_000


def lease(resource_key: str) -> str:
    """Who polls the resource: "<owner>:<fence>", TTL = lease time, renewed by the holder."""
    return f"{PREFIX}{{{resource_key}}}:lease"


def fence(resource_key: str) -> str:
    """Monotonic fencing counter, bumped on every lease acquisition (TTL 7 days, see scripts)."""
    return f"{PREFIX}{{{resource_key}}}:fence"


def version(resource_key: str) -> str:
    """Monotonic snapshot version counter (TTL 7 days, longer than any snapshot lives)."""
    return f"{PREFIX}{{{resource_key}}}:ver"


def snapshot(resource_key: str) -> str:
    """The snapshot hash (body, etag, version, fence, ...); TTL = snapshot TTL or negative TTL."""
    return f"{PREFIX}{{{resource_key}}}:snap"


def last_poll(resource_key: str) -> str:
    """Redis-clock ms of the last upstream request for the resource (the 1 s floor reads it)."""
    return f"{PREFIX}{{{resource_key}}}:last"


def watch(resource_key: str) -> str:
    """Present while somebody watches; TTL = the linger after the last request or stream refresh."""
    return f"{PREFIX}{{{resource_key}}}:watch"


def channel(resource_key: str) -> str:
    """Redis Cluster: the resource's shard channel (snapshot writes and pokes).

    In the resource's slot, so the fenced write script can SPUBLISH on it, and every replica
    SSUBSCRIBEs only to the resources it caches, on the node that owns them.
    """
    return f"{PREFIX}{{{resource_key}}}:ch"


def tenant_budget(tenant: str) -> str:
    """The per-tenant GCRA of the upstream budget (in the ``{lp-global}`` slot)."""
    return TENANT_BUDGET_PREFIX + tenant


def tenant_rate_log(tenant: str) -> str:
    """Permits granted to a tenant's clients in the last window (sorted set, score = Redis ms).

    ``<this>:sum`` holds the running total; both share the ``{tenant}`` slot and live one
    window past the last grant.
    """
    return f"{PREFIX}tenant-rate:{{{tenant}}}"


def tenant_rate_sum(tenant: str) -> str:
    """The running total of ``tenant_rate_log`` (same slot)."""
    return tenant_rate_log(tenant) + ":sum"


def tenant_streams(tenant: str) -> str:
    """A tenant's open stream slots (sorted set, score = expiry, refreshed by the holder)."""
    return f"{PREFIX}tenant-streams:{tenant}"


def tenant_watched(tenant: str) -> str:
    """Resources a tenant watches (sorted set, score = expiry); TTL = the latest expiry."""
    return f"{PREFIX}tenant-watched:{tenant}"


# When this Redis began remembering (Redis clock ms), created by the first cold poll that finds
# it missing: a Redis that restarted empty, was flushed or failed over to a replica without it
# has forgotten when every resource was last polled, so a new lease holder waits out the floor
# from this moment (no key TTL: it must outlive every resource's last-poll time).
MEMORY_SINCE = PREFIX + GLOBAL_TAG + ":memory-since"


# Redis Cluster: a node that restarts empty forgets only its own slots, which one global marker
# cannot see. So on a cluster each master has its own marker, in the lowest slot it serves (it
# moves, and is lost, with that slot's keys): ``slot_memory_since(slot)``.
SLOTS = 16384
_slot_tags: dict[int, str] = {}


def key_slot(name: str) -> int:
    """The hash slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole name."""
    raw = name.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return binascii.crc_hqx(raw, 0) % SLOTS


def slot_tag(slot: int) -> str:
    """The first hash tag ``s<n>`` whose keys land in ``slot`` (a few ms to find, then cached)."""
    tag = _slot_tags.get(slot)
    if tag is None:
        for i in itertools.count():
            if binascii.crc_hqx(f"s{i}".encode(), 0) % SLOTS == slot:
                tag = _slot_tags[slot] = f"s{i}"
                break
    return str(tag)


def slot_memory_since(slot: int) -> str:
    """The memory marker kept in one hash slot (see ``MEMORY_SINCE``)."""
    return f"{PREFIX}{{{slot_tag(slot)}}}:memory-since"
