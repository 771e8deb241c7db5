"""Every Redis key and channel the proxy uses, in one place.

Per-resource keys share the hash tag ``{<resource key>}`` so that one resource's keys live in one
Redis Cluster slot and its scripts stay single-slot.
"""

from __future__ import annotations

PREFIX = "lp:"

# Channel: "<resource key>|<version>|<fetched_ms>|<mode>" for every snapshot write.
SNAPSHOT_CHANNEL = PREFIX + "snapshots"

# Channel: "<resource key>" asks the lease holder to poll now (webhooks end polling early).
POKE_CHANNEL = PREFIX + "pokes"

# Cluster-wide upstream cooldown after a 429; TTL = the Retry-After the upstream asked for.
COOLDOWN = PREFIX + "cooldown"

# GCRA "theoretical arrival time" of the shared upstream budget; TTL = how far ahead it runs.
BUDGET = PREFIX + "budget"

# Per-tenant GCRA of the upstream budget at the tenant's fair rate; TTL = how far ahead it runs.
TENANT_BUDGET_PREFIX = PREFIX + "budget:tenant:"

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


def tenant_rate_log(tenant: str) -> str:
    """Permits granted to a tenant's clients in the last window (sorted set, score = Redis ms).

    ``<this>:sum`` holds the running total; both share the ``{tenant}`` slot and live one
    window past the last grant.
    """
    return f"{PREFIX}tenant-rate:{{{tenant}}}"


def tenant_streams(tenant: str) -> str:
    """A tenant's open stream slots (sorted set, score = expiry, refreshed by the holder)."""
    return f"{PREFIX}tenant-streams:{tenant}"


def tenant_watched(tenant: str) -> str:
    """Resources a tenant watches (sorted set, score = expiry); TTL = the latest expiry."""
    return f"{PREFIX}tenant-watched:{tenant}"
