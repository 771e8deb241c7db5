"""Lua scripts of the tenant limits: client request permits, stream slots, watched sets.

Each script has one key (or two in one hash-tag slot), so each is single-slot on a Redis
Cluster. Times come from the Redis clock, through the same prelude as every other script.
"""

from __future__ import annotations

from proxy.store.scripts import NOW_PRELUDE

# Take up to ARGV[3] permits from a sliding one-window log. KEYS: log (sorted set of grants,
# member "<count>:<uid>", score = Redis ms), running sum of the counts in the log.
# ARGV: window_ms, limit, want, uid. Returns {granted, retry_ms}; retry_ms is how long until the
# oldest grant leaves the window (0 when granted). Both keys live one window past the last grant.
TAKE_PERMITS = (
    NOW_PRELUDE
    + """
local window = tonumber(ARGV[1])
local since = now - window
local sum = tonumber(redis.call('GET', KEYS[2]) or '0')
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', since)
if #old > 0 then
  for _, m in ipairs(old) do sum = sum - tonumber(string.match(m, '^(%d+):')) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
end
if sum < 0 or redis.call('ZCARD', KEYS[1]) == 0 then sum = 0 end
local free = tonumber(ARGV[2]) - sum
if free < 1 then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(1, math.ceil(tonumber(first[2]) + window - now))}
end
if free > tonumber(ARGV[3]) then free = tonumber(ARGV[3]) end
redis.call('ZADD', KEYS[1], now, free .. ':' .. ARGV[4])
redis.call('SET', KEYS[2], sum + free, 'PX', window + 1000)
redis.call('PEXPIRE', KEYS[1], window + 1000)
return {free, 0}
"""
)

# Take a stream slot. KEYS: slots. ARGV: member, ttl_ms, limit. Returns {taken (0/1), count}.
SLOT_TAKE = (
    NOW_PRELUDE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then return {0, n} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
return {1, n + 1}
"""
)

# Extend slots we still hold (never re-add one given back meanwhile). KEYS: slots.
# ARGV: ttl_ms, members...
SLOT_REFRESH = (
    NOW_PRELUDE
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ttl + 1000)
return 0
"""
)

# Refresh watched resources and count the tenant's distinct ones. KEYS: watched.
# ARGV: members_from (return the members when the count reaches it), then (ms_left, key) pairs.
# Returns {count, members or {}}.
WATCH_SYNC = (
    NOW_PRELUDE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV, 2 do
  local expiry = now + tonumber(ARGV[i])
  local current = redis.call('ZSCORE', KEYS[1], ARGV[i + 1])
  if not current or tonumber(current) < expiry then
    redis.call('ZADD', KEYS[1], expiry, ARGV[i + 1])
  end
end
local n = redis.call('ZCARD', KEYS[1])
if n == 0 then return {0, {}} end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(last[2]) - now) + 1000)
if n >= tonumber(ARGV[1]) then return {n, redis.call('ZRANGE', KEYS[1], 0, -1)} end
return {n, {}}
"""
)
