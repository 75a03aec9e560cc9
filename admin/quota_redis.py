"""QuotaStore on Redis: the same semantics as ``MemoryQuota`` (see quota.py), made global
across replicas by doing each admission and each settle in one Lua script (one round trip,
atomic). Keys live under ``<prefix>q:<scope>:...`` and expire on their own.

The budget ledger of a period is seeded from the database once: when the script finds no
ledger it answers "load", the caller reads the settled spend and retries with it, and the
script initialises the ledger only if still absent (replicas racing to seed agree).
"""

from __future__ import annotations

from typing import Any

from admin.quota import WINDOW_S, AdmitRequest, Decision, Scope, SpentLoader, period_of
from admin.redis_batch import ScriptBatcher

_PURGE = """
local function purge_window(z, w, cutoff)
  while true do
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff, 'LIMIT', 0, 500)
    if #old == 0 then return end
    if w then
      local ws = redis.call('HMGET', w, unpack(old))
      local sum = 0
      for i = 1, #ws do sum = sum + (tonumber(ws[i]) or 0) end
      redis.call('HDEL', w, unpack(old))
      redis.call('HINCRBY', w, '_sum', -sum)
    end
    redis.call('ZREM', z, unpack(old))
  end
end
local function purge_reservations(bud, bres, bresc, now)
  local total = 0
  while true do
    local old = redis.call('ZRANGEBYSCORE', bres, '-inf', now, 'LIMIT', 0, 500)
    if #old == 0 then return total end
    local cs = redis.call('HMGET', bresc, unpack(old))
    local sum = 0
    for i = 1, #cs do sum = sum + (tonumber(cs[i]) or 0) end
    redis.call('HDEL', bresc, unpack(old))
    redis.call('ZREM', bres, unpack(old))
    redis.call('HINCRBY', bud, 'reserved', -sum)
    total = total + sum
  end
end
"""

# KEYS: one key-name base per scope; the script derives its keys: rpm zset, tpm zset, tpm
# weights (+ field _sum), (unused), running zset, ledger hash (per period), reservation zset (lease end),
# reservation costs. Few arguments keep the client's encoding cost low (it dominates).
# ARGV: now (-1: the Redis server's clock), rid, tokens, lease seconds, n, then per scope one
# string "rpm tpm conc budget cost seed_spent ledger_ttl period"; then the window. -1 means
# unlimited / unknown. Returns one string, cheap to parse:
# "ok reason scope_index retry_ms now", then (refusals only) per scope "rpm_left tpm_left".
_ADMIT = _PURGE + """
local now, rid, tokens = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local lease, n = tonumber(ARGV[4]), tonumber(ARGV[5])
local window = tonumber(ARGV[6 + n])
local K, A = {}, {}
for i = 1, n do
  local f = {}
  for v in string.gmatch(ARGV[5 + i], '%S+') do table.insert(f, v) end
  local base, ledger = KEYS[i], KEYS[i] .. 'b:' .. f[8]
  local names = {base .. 'rpm', base .. 'tpm', base .. 'tpmw', base .. '-', base .. 'run',
                 ledger, ledger .. ':res', ledger .. ':resc'}
  for j = 1, 8 do K[(i - 1) * 8 + j] = names[j] end
  for j = 1, 7 do A[5 + (i - 1) * 7 + j] = f[j] end
end
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local lease_end = now + lease
local function remaining(i)
  local k, a = (i - 1) * 8, 5 + (i - 1) * 7
  local rpm, tpm = tonumber(A[a + 1]), tonumber(A[a + 2])
  local r, t = -1, -1
  if rpm >= 0 then r = math.max(rpm - redis.call('ZCARD', K[k + 1]), 0) end
  if tpm >= 0 then t = math.max(tpm - (tonumber(redis.call('HGET', K[k + 3], '_sum')) or 0), 0) end
  return r, t
end
local function check(i)
  local k, a = (i - 1) * 8, 5 + (i - 1) * 7
  local rpm, tpm, conc = tonumber(A[a + 1]), tonumber(A[a + 2]), tonumber(A[a + 3])
  local budget, cost = tonumber(A[a + 4]), tonumber(A[a + 5])
  local seed, ttl = tonumber(A[a + 6]), tonumber(A[a + 7])
  if rpm >= 0 then
    purge_window(K[k + 1], nil, now - window)
    if redis.call('ZCARD', K[k + 1]) + 1 > rpm then
      local first = redis.call('ZRANGE', K[k + 1], 0, 0, 'WITHSCORES')
      local wait = 1
      if #first > 0 then wait = tonumber(first[2]) + window - now end
      return {'rpm', wait}
    end
  end
  if tpm >= 0 then
    purge_window(K[k + 2], K[k + 3], now - window)
    if (tonumber(redis.call('HGET', K[k + 3], '_sum')) or 0) + tokens > tpm then
      local first = redis.call('ZRANGE', K[k + 2], 0, 0, 'WITHSCORES')
      local wait = window
      if #first > 0 then wait = tonumber(first[2]) + window - now end
      return {'tpm', wait}
    end
  end
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', K[k + 5], '-inf', now)
    if redis.call('ZCARD', K[k + 5]) + 1 > conc then return {'concurrency', 1} end
  end
  if budget >= 0 then
    local ledger = redis.call('HMGET', K[k + 6], 'spent', 'reserved')
    if not ledger[1] then
      if seed < 0 then return {'load', 0} end
      redis.call('HSET', K[k + 6], 'spent', seed, 'reserved', 0)
      redis.call('EXPIRE', K[k + 6], ttl)
      ledger = {seed, 0}
    end
    local spent = tonumber(ledger[1])
    local reserved = (tonumber(ledger[2]) or 0) - purge_reservations(K[k + 6], K[k + 7], K[k + 8], now)
    if spent >= budget or spent + reserved + cost > budget then return {'budget', ttl} end
  end
  return nil
end
local function commit(i)
  local k, a = (i - 1) * 8, 5 + (i - 1) * 7
  local rpm, tpm, conc = tonumber(A[a + 1]), tonumber(A[a + 2]), tonumber(A[a + 3])
  local budget, cost, ttl = tonumber(A[a + 4]), tonumber(A[a + 5]), tonumber(A[a + 7])
  local life = math.ceil(window) + 1
  if rpm >= 0 then
    redis.call('ZADD', K[k + 1], now, rid)
    redis.call('EXPIRE', K[k + 1], life)
  end
  if tpm >= 0 then
    redis.call('ZADD', K[k + 2], now, rid)
    redis.call('HSET', K[k + 3], rid, tokens)
    redis.call('HINCRBY', K[k + 3], '_sum', tokens)
    redis.call('EXPIRE', K[k + 2], life)
    redis.call('EXPIRE', K[k + 3], life)
  end
  if conc >= 0 then
    redis.call('ZADD', K[k + 5], lease_end, rid)
    redis.call('EXPIRE', K[k + 5], math.ceil(lease_end - now) + 1)
  end
  if budget >= 0 then
    redis.call('HINCRBY', K[k + 6], 'reserved', cost)
    redis.call('ZADD', K[k + 7], lease_end, rid)
    redis.call('HSET', K[k + 8], rid, cost)
    redis.call('EXPIRE', K[k + 7], ttl)
    redis.call('EXPIRE', K[k + 8], ttl)
  end
end
local out = {1, '-', 0, 0, string.format('%.6f', now)}
for i = 1, n do
  local refusal = check(i)
  if refusal then
    out = {0, refusal[1], i, math.floor(refusal[2] * 1000), string.format('%.6f', now)}
    break
  end
end
if out[1] == 1 then
  for i = 1, n do commit(i) end
else
  for i = 1, n do
    local r, t = remaining(i)
    table.insert(out, r)
    table.insert(out, t)
  end
end
return table.concat(out, ' ')
"""

# KEYS as for admit. ARGV: rid, mode (settle|release), tokens, cost, n, then per scope one
# string "budget soft_threshold period".
_FINISH = """
local rid, mode, tokens, cost, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local crossed = {}
local K, A = {}, {}
for i = 1, n do
  local f = {}
  for v in string.gmatch(ARGV[5 + i], '%S+') do table.insert(f, v) end
  local base, ledger = KEYS[i], KEYS[i] .. 'b:' .. f[3]
  local names = {base .. 'rpm', base .. 'tpm', base .. 'tpmw', base .. '-', base .. 'run',
                 ledger, ledger .. ':res', ledger .. ':resc'}
  for j = 1, 8 do K[(i - 1) * 8 + j] = names[j] end
  for j = 1, 2 do A[5 + (i - 1) * 2 + j] = f[j] end
end
for i = 1, n do
  local k, a = (i - 1) * 8, 5 + (i - 1) * 2
  local budget, soft = tonumber(A[a + 1]), tonumber(A[a + 2])
  redis.call('ZREM', K[k + 5], rid)
  local old = redis.call('HGET', K[k + 3], rid)
  if old then
    local new = 0
    if mode == 'settle' then new = tokens end
    redis.call('HSET', K[k + 3], rid, new)
    redis.call('HINCRBY', K[k + 3], '_sum', new - tonumber(old))
  end
  if budget >= 0 then
    local c = redis.call('HGET', K[k + 8], rid)
    if c then
      redis.call('HDEL', K[k + 8], rid)
      redis.call('ZREM', K[k + 7], rid)
      redis.call('HINCRBY', K[k + 6], 'reserved', -tonumber(c))
    end
    if mode == 'settle' and redis.call('HEXISTS', K[k + 6], 'spent') == 1 then
      local after = redis.call('HINCRBY', K[k + 6], 'spent', cost)
      if after - cost < soft and after >= soft then table.insert(crossed, i) end
    end
  end
end
return crossed
"""


class RedisQuota:
    """Windows are timed by the Redis server's clock (one clock for every replica, so entries
    are ordered as the script runs them); ``server_time=False`` uses ``AdmitRequest.now``
    instead, for deterministic tests."""

    def __init__(
        self, redis: Any, prefix: str, load_spent: SpentLoader, lease: float = 600.0, *,
        window: float = WINDOW_S, server_time: bool = True,
    ) -> None:
        self._redis = redis
        self._window = window
        self._server_time = server_time
        self._prefix = prefix
        self._load = load_spent
        self._lease = lease
        self._batcher = ScriptBatcher(redis, {"admit": _ADMIT, "finish": _FINISH})

    def _base(self, scope: Scope) -> str:
        return f"{self._prefix}q:{scope.id}:"

    def _ledger_key(self, scope: Scope, now: float) -> str:
        return f"{self._base(scope)}b:{period_of(scope.limits.budget_period, now).id}"

    def _args(self, req: AdmitRequest, seeds: dict[str, int]) -> list[Any]:
        now = -1 if self._server_time else req.now
        args: list[Any] = [now, req.req_id, req.tokens, self._lease, len(req.scopes)]
        for scope in req.scopes:
            lim = scope.limits
            period = period_of(lim.budget_period, req.now)
            budget = -1 if lim.budget_usd is None else round(lim.budget_usd * 1e9)
            args.append(f"{_lim(lim.rpm)} {_lim(lim.tpm)} {_lim(lim.concurrency)} {budget} "
                        f"{req.cost_nusd} {seeds.get(scope.id, -1)} "
                        f"{int(period.end - req.now) + 2 * 86400} {period.id}")
        return [*args, self._window]

    async def admit(self, req: AdmitRequest) -> Decision:
        keys = [self._base(scope) for scope in req.scopes]
        seeds: dict[str, int] = {}
        while True:
            raw = _text(await self._batcher.call("admit", keys, self._args(req, seeds))).split()
            ok, reason, index, wait_ms = int(raw[0]), raw[1], int(raw[2]), int(raw[3])
            if reason != "load":
                break
            scope = req.scopes[index - 1]
            seeds[scope.id] = await self._load(scope, period_of(scope.limits.budget_period, req.now).start)
        at = float(raw[4])
        rest = [int(float(x)) for x in raw[5:]]  # Lua may print big numbers as 1e+14
        remaining = [(_opt(rest[i]), _opt(rest[i + 1])) for i in range(0, len(rest), 2)]
        if ok:
            return Decision(True, remaining=remaining, at=at)
        scope = req.scopes[index - 1]
        wait = max(wait_ms, 1) / 1000
        if reason == "budget":
            wait = period_of(scope.limits.budget_period, req.now).end - req.now
        return Decision(False, reason, scope.id, wait, remaining, at)

    async def finish(
        self, req: AdmitRequest, tokens: int | None, cost_nusd: int, now: float,
    ) -> list[str]:
        keys = [self._base(scope) for scope in req.scopes]
        args: list[Any] = [req.req_id, "release" if tokens is None else "settle", tokens or 0,
                           cost_nusd, len(req.scopes)]
        for scope in req.scopes:
            lim = scope.limits
            budget = -1 if lim.budget_usd is None else round(lim.budget_usd * 1e9)
            soft = -1 if lim.budget_usd is None else round(lim.budget_usd * lim.soft_alert * 1e9)
            args.append(f"{budget} {soft} {period_of(lim.budget_period, req.now).id}")
        crossed = await self._batcher.call("finish", keys, args)
        return [req.scopes[int(i) - 1].id for i in crossed]

    async def budget_state(self, scope: Scope, now: float) -> tuple[int, int] | None:
        spent, reserved = await self._redis.hmget(self._ledger_key(scope, now), "spent", "reserved")
        if spent is None:
            return None
        return int(spent), int(reserved or 0)


def _lim(value: int | None) -> int:
    return -1 if value is None else value


def _opt(value: int) -> int | None:
    return None if value < 0 else value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
