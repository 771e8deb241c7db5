"""Lua scripts: each one a single atomic step that must hold across replicas.

Times come from the Redis server's clock (``TIME``), never a replica's, so the floor and the
cooldown hold even when replica clocks disagree.
"""

from __future__ import annotations

from proxy.store.keys import LAST_POLL_TTL_MS

# Fence and version counters outlive any snapshot (TTL 24 h) by far, so they never rewind
# while a snapshot or a replica's memory could still hold a higher number. Both are also kept at
# or above the Redis clock in ms (a hybrid logical clock), which is what keeps them comparable
# when Redis loses the counters themselves.
COUNTER_TTL_MS = 7 * 86_400_000

NOW_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Refresh interest; maybe take the lease. KEYS: watch, lease, fence, snap.
# ARGV: linger_ms, owner, lease_ttl_ms, want_lease (0/1), revalidate_after_ms (-1 = never).
# A terminal snapshot is only re-polled once it is older than revalidate_after_ms.
# Returns {fence acquired or 0, snapshot version, fetched_ms, holder}.
TOUCH = (
    NOW_PRELUDE
    + """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
local holder = redis.call('GET', KEYS[2])
local got = 0
local version = tonumber(redis.call('HGET', KEYS[4], 'version') or '0')
local fetched = tonumber(redis.call('HGET', KEYS[4], 'fetched_ms') or '0')
if ARGV[4] == '1' and not holder then
  local wanted = true
  if redis.call('HGET', KEYS[4], 'terminal') == '1' then
    local reval = tonumber(ARGV[5])
    local expires = tonumber(redis.call('HGET', KEYS[4], 'expires_ms') or '0')
    if expires > 0 or reval < 0 or now - fetched < reval then wanted = false end
  end
  if wanted then
    -- Never below the Redis clock: fences stay increasing after Redis forgets the counter.
    local f = tonumber(redis.call('GET', KEYS[3]) or '0') + 1
    local sf = tonumber(redis.call('HGET', KEYS[4], 'fence') or '0')
    f = math.max(f, sf + 1, now)
    redis.call('SET', KEYS[3], f, 'PX', """
    + str(COUNTER_TTL_MS)
    + """)
    holder = ARGV[2] .. ':' .. f
    redis.call('SET', KEYS[2], holder, 'PX', ARGV[3])
    got = f
  end
end
return {got, version, fetched, holder or ''}
"""
)

# KEYS: lease. ARGV: token, ttl_ms. Extend the lease only if we still hold it.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: token. Hand the lease back only if we still hold it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Merge census entries (the fair share's "who watches what") into its hash, so that they ride the
# interest flush's pipeline with the other scripts. KEYS: census. ARGV: field, value, field, ...
# HSET in chunks: Lua's unpack has a stack limit of a few thousand values.
CENSUS_MERGE = """
for i = 1, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 0
"""

# The gate before every upstream request, in one script (a single Redis: any key can be reached
# from one script). KEYS: lease, last, watch, cooldown, budget, tenant budget.
# ARGV: token, gap_ms, require_watch (0/1), budget_interval_ms (0 = no budget), budget_burst_ms,
#       tenant_interval_ms (0 = no tenant budget), tenant_burst_ms.
# Both budgets are checked before either is spent, so a refusal costs nothing.
# Returns {verdict, ms}: ok (ms = now), lost, idle, cooldown|wait|budget (ms = how long to wait).
CLAIM = (
    NOW_PRELUDE
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost', 0} end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then return {'idle', 0} end
local cd = redis.call('PTTL', KEYS[4])
if cd > 0 then return {'cooldown', cd} end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local gap = tonumber(ARGV[2])
if now - last < gap then return {'wait', gap - (now - last)} end
local interval = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[5]) or '0')
if tat < now then tat = now end
if interval > 0 and tat - now > tonumber(ARGV[5]) then
  return {'budget', tat - now - tonumber(ARGV[5])}
end
local t_interval = tonumber(ARGV[6])
local t_tat = tonumber(redis.call('GET', KEYS[6]) or '0')
if t_tat < now then t_tat = now end
if t_interval > 0 and t_tat - now > tonumber(ARGV[7]) then
  return {'budget', t_tat - now - tonumber(ARGV[7])}
end
if interval > 0 then
  redis.call('SET', KEYS[5], tat + interval, 'PX', tat + interval - now + 1000)
end
if t_interval > 0 then
  redis.call('SET', KEYS[6], t_tat + t_interval, 'PX', t_tat + t_interval - now + 1000)
end
-- The last-poll time is only needed for one gap (seconds); an hour is plenty.
redis.call('SET', KEYS[2], now, 'PX', """
    + str(LAST_POLL_TTL_MS)
    + """)
return {'ok', now}
"""
)

# -- The same gate on a Redis Cluster, in three single-slot steps -------------------------------
#
# CLAIM reads per-resource keys ({<resource key>} slot) and the cooldown and budgets
# ({lp-global} slot); no script may span two slots on a cluster, so the store runs:
#
#   1. CLAIM_CHECK   (resource slot)  lease held? watched? gap elapsed?     writes nothing
#   2. CLAIM_SPEND   (global slot)    cooldown? shared and tenant budget?  spends both or none
#   3. CLAIM_COMMIT  (resource slot)  lease still held? gap still elapsed? records the poll time
#
# Why this keeps the guarantees:
# * The floor is still atomic per resource: step 3 checks the gap against the stored last-poll
#   time and writes the new one in one script on the resource's node (and its clock), so two
#   steps 3 that both pass are at least ``gap`` apart whoever runs them. Steps 1-2 only decide
#   whether step 3 is worth trying.
# * Only the lease holder passes steps 1 and 3 (both compare the lease token), and a holder
#   polls a resource from one task at a time, so the per-resource steps race only with a lease
#   change between them; step 3 then answers "lost" and nothing is polled.
# * A refusal by either budget spends nothing (step 2 checks both before spending either), and
#   steps 1 and 3 spend nothing at all.
# * What a failure between the steps costs: a Redis error or timeout after step 2, or a lease
#   lost between steps 2 and 3, leaves one budget unit spent for a request that is never sent.
#   At most one unit per such failure, and on the safe side (the shared budget is under-used,
#   never exceeded). The verdict order differs from CLAIM in one corner: inside the gap during
#   a cooldown, the answer is "wait" (the gap) first, then "cooldown" on the next try.

# Step 1. KEYS: lease, last, watch. ARGV: token, gap_ms, require_watch (0/1).
# Returns {verdict, ms}: ok (ms = now), lost, idle, wait (ms = how long to wait).
CLAIM_CHECK = (
    NOW_PRELUDE
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost', 0} end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then return {'idle', 0} end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local gap = tonumber(ARGV[2])
if now - last < gap then return {'wait', gap - (now - last)} end
return {'ok', now}
"""
)

# Step 2. KEYS: cooldown, budget, tenant budget (all {lp-global}).
# ARGV: budget_interval_ms (0 = no budget), budget_burst_ms, tenant_interval_ms (0 = none),
#       tenant_burst_ms. Both budgets are checked before either is spent.
# Returns {verdict, ms}: ok, cooldown|budget (ms = how long to wait).
CLAIM_SPEND = (
    NOW_PRELUDE
    + """
local cd = redis.call('PTTL', KEYS[1])
if cd > 0 then return {'cooldown', cd} end
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat < now then tat = now end
if interval > 0 and tat - now > tonumber(ARGV[2]) then
  return {'budget', tat - now - tonumber(ARGV[2])}
end
local t_interval = tonumber(ARGV[3])
local t_tat = tonumber(redis.call('GET', KEYS[3]) or '0')
if t_tat < now then t_tat = now end
if t_interval > 0 and t_tat - now > tonumber(ARGV[4]) then
  return {'budget', t_tat - now - tonumber(ARGV[4])}
end
if interval > 0 then
  redis.call('SET', KEYS[2], tat + interval, 'PX', tat + interval - now + 1000)
end
if t_interval > 0 then
  redis.call('SET', KEYS[3], t_tat + t_interval, 'PX', t_tat + t_interval - now + 1000)
end
return {'ok', 0}
"""
)

# Step 3. KEYS: lease, last. ARGV: token, gap_ms.
# Returns {verdict, ms}: ok (ms = now, the poll time recorded), lost, wait (ms to wait).
CLAIM_COMMIT = (
    NOW_PRELUDE
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost', 0} end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local gap = tonumber(ARGV[2])
if now - last < gap then return {'wait', gap - (now - last)} end
redis.call('SET', KEYS[2], now, 'PX', """
    + str(LAST_POLL_TTL_MS)
    + """)
return {'ok', now}
"""
)

# Fenced compare-and-set of a snapshot. KEYS: lease, snap, version counter.
# ARGV: token, fence, mode, ttl_ms, channel, resource key, then
#   mode 'data':  body, etag, status_code, status, stage, terminal, upstream_etag, negative_ttl_ms,
#                 extra
#   mode 'error': error, error_status, error_code, error_only_ttl_ms
# Refuses (returns {0, 0, {}}) unless the caller still holds the lease and its fence is not older
# than the stored one, so a paused old poller can never overwrite newer state.
# Returns {version, changed (0/1), HGETALL of the new state}.
WRITE = (
    NOW_PRELUDE
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0, {}} end
local fence = tonumber(ARGV[2])
local sf = tonumber(redis.call('HGET', KEYS[2], 'fence') or '0')
if fence < sf then return {0, 0, {}} end
local version = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
local changed = 0
local mode = ARGV[3]
if mode == 'data' then
  if redis.call('HGET', KEYS[2], 'etag') ~= ARGV[8] then
    -- The counter outlives the hash, so a re-created snapshot never reuses an old version;
    -- and a version is never below the Redis clock (ms), so versions written after Redis lost
    -- everything (restart, flush, failover to a replica behind) are still newer than any a
    -- replica's memory or a client holds (one poll per resource per second at most, so the
    -- counter never runs ahead of the clock).
    version = math.max(version, tonumber(redis.call('GET', KEYS[3]) or '0')) + 1
    version = math.max(version, now)
    redis.call('SET', KEYS[3], version, 'PX', """
    + str(COUNTER_TTL_MS)
    + """)
    changed = 1
    if redis.call('HGET', KEYS[2], 'stage') ~= ARGV[11]
        or redis.call('HGET', KEYS[2], 'status') ~= ARGV[10] then
      redis.call('HSET', KEYS[2], 'stage_since_ms', now)
    end
    redis.call('HSET', KEYS[2], 'body', ARGV[7], 'etag', ARGV[8], 'status_code', ARGV[9],
      'status', ARGV[10], 'stage', ARGV[11], 'terminal', ARGV[12], 'version', version,
      'extra', ARGV[15])
  end
  redis.call('HSET', KEYS[2], 'fetched_ms', now, 'error', '', 'error_status', 0,
    'error_code', '', 'error_ms', 0, 'fence', fence, 'upstream_etag', ARGV[13])
  local negative = tonumber(ARGV[14])
  if negative > 0 then
    redis.call('HSET', KEYS[2], 'expires_ms', now + negative)
    redis.call('PEXPIRE', KEYS[2], negative)
  else
    redis.call('HSET', KEYS[2], 'expires_ms', 0)
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  end
else
  local had_body = redis.call('HEXISTS', KEYS[2], 'body') == 1
  redis.call('HSET', KEYS[2], 'error', ARGV[7], 'error_status', ARGV[8], 'error_code', ARGV[9],
    'error_ms', now, 'fence', fence, 'version', version)
  if had_body then
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  else
    redis.call('PEXPIRE', KEYS[2], ARGV[10])
  end
  changed = 1
end
redis.call('PUBLISH', ARGV[5], ARGV[6] .. '|' .. version .. '|' .. now .. '|' .. mode)
return {version, changed, redis.call('HGETALL', KEYS[2])}
"""
)

# The same write on a Redis Cluster: SPUBLISH on the resource's shard channel (ARGV[5] is
# ``keys.channel(key)``, in the script's slot; a plain PUBLISH would be broadcast to every node).
WRITE_SHARDED = WRITE.replace("redis.call('PUBLISH', ARGV[5]", "redis.call('SPUBLISH', ARGV[5]")

# Redis Cluster: a poke on the resource's shard channel. KEYS: the channel (declared so that the
# cluster client routes the script to the node owning it). ARGV: message.
POKE_SHARDED = """
return redis.call('SPUBLISH', KEYS[1], ARGV[1])
"""

# KEYS: cooldown. ARGV: ms. Extend the cluster-wide cooldown, never shorten it.
COOLDOWN = """
local current = redis.call('PTTL', KEYS[1])
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return redis.call('PTTL', KEYS[1])
"""

# A generic GCRA limiter. KEYS: tat key. ARGV: interval_ms, burst_ms.
# Returns {allowed (0/1), retry_after_ms}.
GCRA = (
    NOW_PRELUDE
    + """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > burst then return {0, tat - now - burst} end
redis.call('SET', KEYS[1], tat + interval, 'PX', tat + interval - now + 1000)
return {1, 0}
"""
)

# KEYS: memory-since. How long (ms) this Redis has remembered the proxy's state; creates the key
# (= now) when missing, so right after Redis lost everything the answer is 0.
MEMORY_AGE = (
    NOW_PRELUDE
    + """
local since = redis.call('GET', KEYS[1])
if not since then
  redis.call('SET', KEYS[1], now)
  return 0
end
return now - tonumber(since)
"""
)
