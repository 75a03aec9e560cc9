"""QuotaStore on Redis: the same semantics as ``MemoryQuota`` (quota_memory.py; see quota.py), made global
across replicas by doing each admission and each settle in one Lua script (one round trip,
atomic). Keys live under ``<prefix>q:<scope>:...`` and expire on their own. RPM and TPM are
sums over ``BUCKETS_PER_WINDOW`` buckets, as in memory: the keys of a scope stay the same size
whatever the request rate.

The budget ledger of a period is seeded from the database once: when the script finds no
ledger it answers "load", the caller reads the settled spend and retries with it, and the
script initialises the ledger only if still absent (replicas racing to seed agree).
"""

from __future__ import annotations

import asyncio
from typing import Any

from admin.quota import WINDOW_S, AdmitRequest, Decision, Finished, Scope, SpentLoader, period_of
from admin.redis_batch import ScriptBatcher

BUCKETS_PER_WINDOW = 600  # 100 ms buckets in the default 60 s window, as in MemoryQuota
# A settle may wait this long to share the next admission's round trip (redis_batch.py). Until
# it lands its reservation, slot and token estimate stay counted: late only ever means stricter.
FINISH_DEFER_S = 0.005

# Per scope the scripts derive, from one key-name base: <base>w (hash: r<bucket> -> requests,
# t<bucket> -> tokens, _r and _t their sums over the window) with <base>wl (list of the
# buckets in it, oldest first), <base>run (zset rid -> lease end), and per budget period
# <base>b:<period> (hash: spent, reserved, r:<rid> -> reserved cost) with
# <base>b:<period>:res (zset rid -> lease end).
# Few arguments keep the client's encoding cost low; few redis.call()s keep the server's.
_SCOPES = """
local function int(x) return string.format('%d', x) end
local S = {}
for i = 1, n do
  local f = {}
  for v in string.gmatch(ARGV[5 + i], '%S+') do f[#f + 1] = v end
  local base = KEYS[i]
  local ledger = base .. 'b:' .. f[1]
  S[i] = {f = f, kw = base .. 'w', kwl = base .. 'wl', krun = base .. 'run', kled = ledger,
          kres = ledger .. ':res'}
end
"""

# ARGV: now (-1: the Redis server's clock), rid, tokens, lease seconds, n, then per scope one
# string "period rpm tpm conc budget cost seed_spent ledger_ttl", then the window; -1 means
# unlimited / unknown. Returns one string, cheap to parse: "ok reason scope_index retry_ms now
# bucket", then (refusals only) per scope "rpm_left tpm_left". RPM and TPM are sums over
# buckets of window / BUCKETS seconds (quota_memory.py explains why); ``bucket`` is the one this
# admission counts in, which its settle corrects.
_ADMIT = f"local BUCKETS = {BUCKETS_PER_WINDOW}\n" + """
local now, rid, tokens = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local lease, n = tonumber(ARGV[4]), tonumber(ARGV[5])
local window = tonumber(ARGV[6 + n])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local lease_end = now + lease
local per_s = BUCKETS / window
local bucket = math.floor(now * per_s)
""" + _SCOPES + """
for i = 1, n do
  local s, f = S[i], S[i].f
  s.rpm, s.tpm, s.conc = tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
  s.budget, s.cost, s.seed, s.ttl = tonumber(f[5]), tonumber(f[6]), tonumber(f[7]), tonumber(f[8])
end
-- Loads the window's sums after dropping the buckets that left it (at most one per bucket
-- width since the last admission, so O(1) amortised); an empty list resets the sums.
local function open_window(s)
  s.opened = true
  local sums = redis.call('HMGET', s.kw, '_r', '_t')
  s.wr, s.wt = tonumber(sums[1]) or 0, tonumber(sums[2]) or 0
  local cutoff = math.floor((now - window) * per_s)
  while true do
    local b = redis.call('LINDEX', s.kwl, 0)
    if not b then
      if s.wr ~= 0 or s.wt ~= 0 then s.wr, s.wt, s.wdirty = 0, 0, true end
      return
    end
    s.first = tonumber(b)
    if s.first >= cutoff then return end
    local v = redis.call('HMGET', s.kw, 'r' .. b, 't' .. b)
    s.wr = s.wr - (tonumber(v[1]) or 0)
    s.wt = s.wt - (tonumber(v[2]) or 0)
    redis.call('HDEL', s.kw, 'r' .. b, 't' .. b)
    redis.call('LPOP', s.kwl)
    s.first, s.wdirty = nil, true
  end
end
local function retry(s, default)
  if s.first then return (s.first + 1) / per_s + window - now end
  return default
end
local function purge_reservations(s)
  while true do
    local old = redis.call('ZRANGEBYSCORE', s.kres, '-inf', now, 'LIMIT', 0, 500)
    if #old == 0 then return end
    local fields = {}
    for j = 1, #old do fields[j] = 'r:' .. old[j] end
    local cs = redis.call('HMGET', s.kled, unpack(fields))
    for j = 1, #cs do s.reserved = s.reserved - (tonumber(cs[j]) or 0) end
    redis.call('HDEL', s.kled, unpack(fields))
    redis.call('ZREM', s.kres, unpack(old))
    s.bdirty = true
    if #old < 500 then return end
  end
end
local function check(s)
  if s.rpm >= 0 or s.tpm >= 0 then open_window(s) end
  if s.rpm >= 0 and s.wr + 1 > s.rpm then return {'rpm', retry(s, 1)} end
  if s.tpm >= 0 and s.wt + tokens > s.tpm then return {'tpm', retry(s, window)} end
  if s.conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', s.krun, '-inf', now)
    if redis.call('ZCARD', s.krun) + 1 > s.conc then return {'concurrency', 1} end
  end
  if s.budget >= 0 then
    local ledger = redis.call('HMGET', s.kled, 'spent', 'reserved')
    if not ledger[1] then
      if s.seed < 0 then return {'load', 0} end
      redis.call('HSET', s.kled, 'spent', int(s.seed), 'reserved', 0)
      redis.call('EXPIRE', s.kled, s.ttl)
      ledger = {s.seed, 0}
    end
    s.spent, s.reserved = tonumber(ledger[1]), tonumber(ledger[2]) or 0
    purge_reservations(s)
    if s.spent >= s.budget or s.spent + s.reserved + s.cost > s.budget then return {'budget', 1} end
  end
  return nil
end
local function write_back(s)
  if s.wdirty then redis.call('HSET', s.kw, '_r', int(s.wr), '_t', int(s.wt)) end
  if s.bdirty then redis.call('HSET', s.kled, 'reserved', int(s.reserved)) end
end
local function commit(s, b)
  local life = math.ceil(window) + 2
  if s.rpm >= 0 or s.tpm >= 0 then
    if s.newest ~= b then redis.call('RPUSH', s.kwl, int(b)) end
    redis.call('HINCRBY', s.kw, 'r' .. int(b), 1)
    redis.call('HINCRBY', s.kw, 't' .. int(b), tokens)
    redis.call('HSET', s.kw, '_r', int(s.wr + 1), '_t', int(s.wt + tokens))
    redis.call('EXPIRE', s.kw, life)
    redis.call('EXPIRE', s.kwl, life)
  end
  if s.conc >= 0 then
    redis.call('ZADD', s.krun, lease_end, rid)
    redis.call('EXPIRE', s.krun, math.ceil(lease) + 1)
  end
  if s.budget >= 0 then
    redis.call('HSET', s.kled, 'reserved', int(s.reserved + s.cost), 'r:' .. rid, int(s.cost))
    redis.call('ZADD', s.kres, lease_end, rid)
    redis.call('EXPIRE', s.kres, s.ttl)
  end
end
local out = {1, '-', 0, 0, string.format('%.6f', now), int(bucket)}
for i = 1, n do
  local refusal = check(S[i])
  if refusal then
    out = {0, refusal[1], i, math.floor(refusal[2] * 1000), string.format('%.6f', now), int(bucket)}
    break
  end
end
if out[1] == 1 then
  -- One bucket for every scope, so the settle knows which to correct: the admission's own,
  -- or the newest of any scope if that is later (buckets only ever join at the newest end, and
  -- a clock that stepped back, or another replica's ahead of it, must not break that order).
  local b = bucket
  for i = 1, n do
    local s = S[i]
    if s.rpm >= 0 or s.tpm >= 0 then
      s.newest = tonumber(redis.call('LINDEX', s.kwl, -1))
      if s.newest and s.newest > b then b = s.newest end
    end
  end
  for i = 1, n do commit(S[i], b) end
  out[6] = int(b)
else
  for i = 1, n do
    local s, r, t = S[i], -1, -1
    if not s.opened and (s.rpm >= 0 or s.tpm >= 0) then open_window(s) end
    write_back(s)
    if s.rpm >= 0 then r = math.max(s.rpm - s.wr, 0) end
    if s.tpm >= 0 then t = math.max(s.tpm - s.wt, 0) end
    out[#out + 1] = r
    out[#out + 1] = t
  end
end
return table.concat(out, ' ')
"""

# KEYS as for admit. ARGV: rid, mode (settle|release), tokens, cost, n, then per scope one
# string "period budget soft_threshold tpm_on conc_on bucket estimate" (bucket: the one the
# admission counted in; estimate: the tokens it counted). Returns the indexes of scopes whose
# spend crossed their soft threshold.
_FINISH = """
local rid, mode, tokens, cost, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
""" + _SCOPES + """
local crossed = {}
for i = 1, n do
  local s, f = S[i], S[i].f
  local budget, soft = tonumber(f[2]), tonumber(f[3])
  if f[5] == '1' then redis.call('ZREM', s.krun, rid) end
  if f[4] == '1' then
    -- Correct the admission's bucket while it is still in the window (after that nothing
    -- counts it); never below zero, whatever a clock step did.
    local field = 't' .. f[6]
    local held = tonumber(redis.call('HGET', s.kw, field))
    if held then
      local delta = -tonumber(f[7])
      if mode == 'settle' then delta = delta + tokens end
      if delta < -held then delta = -held end
      if delta ~= 0 then
        redis.call('HINCRBY', s.kw, field, int(delta))
        redis.call('HINCRBY', s.kw, '_t', int(delta))
      end
    end
  end
  if budget >= 0 then
    local led = redis.call('HMGET', s.kled, 'r:' .. rid, 'spent', 'reserved')
    if led[2] then
      local held = tonumber(led[1]) or 0
      local spent = tonumber(led[2])
      local after = spent
      if mode == 'settle' then after = spent + cost end
      redis.call('HSET', s.kled, 'spent', int(after), 'reserved', int((tonumber(led[3]) or 0) - held))
      if led[1] then
        redis.call('HDEL', s.kled, 'r:' .. rid)
        redis.call('ZREM', s.kres, rid)
      end
      if spent < soft and after >= soft then crossed[#crossed + 1] = i end
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
            args.append(f"{period.id} {_lim(lim.rpm)} {_lim(lim.tpm)} {_lim(lim.concurrency)} {budget} "
                        f"{req.cost_nusd} {seeds.get(scope.id, -1)} {int(period.end - req.now) + 2 * 86400}")
        return [*args, self._window]

    def admit_now(self, req: AdmitRequest) -> Decision | None:
        return None  # every decision is a script on the shared server

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
        req.window_bucket = int(raw[5])
        rest = [int(float(x)) for x in raw[6:]]  # Lua may print big numbers as 1e+14
        remaining = [(_opt(rest[i]), _opt(rest[i + 1])) for i in range(0, len(rest), 2)]
        if ok:
            return Decision(True, remaining=remaining, at=at)
        scope = req.scopes[index - 1]
        wait = max(wait_ms, 1) / 1000
        if reason == "budget":
            wait = period_of(scope.limits.budget_period, req.now).end - req.now
        return Decision(False, reason, scope.id, wait, remaining, at)

    async def finish(self, req: AdmitRequest, tokens: int | None, cost_nusd: int) -> list[str]:
        return await self._finish(req, tokens, cost_nusd)

    async def drain(self) -> None:
        await self._batcher.drain()

    def finish_soon(self, req: AdmitRequest, tokens: int | None, cost_nusd: int) -> Finished:
        return self._finish(req, tokens, cost_nusd)

    def _finish(self, req: AdmitRequest, tokens: int | None, cost_nusd: int) -> asyncio.Future[list[str]]:
        keys = [self._base(scope) for scope in req.scopes]
        args: list[Any] = [req.req_id, "release" if tokens is None else "settle", tokens or 0,
                           cost_nusd, len(req.scopes)]
        for scope in req.scopes:
            lim = scope.limits
            budget = -1 if lim.budget_usd is None else round(lim.budget_usd * 1e9)
            soft = -1 if lim.budget_usd is None else round(lim.budget_usd * lim.soft_alert * 1e9)
            args.append(f"{period_of(lim.budget_period, req.now).id} {budget} {soft} "
                        f"{int(lim.tpm is not None)} {int(lim.concurrency is not None)} "
                        f"{req.window_bucket} {req.tokens}")
        done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

        def scope_ids(call: asyncio.Future[Any]) -> None:
            if call.cancelled():
                done.cancel()
            elif (exc := call.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result([req.scopes[int(i) - 1].id for i in call.result()])

        self._batcher.call("finish", keys, args, defer=FINISH_DEFER_S).add_done_callback(scope_ids)
        return done

    async def budget_state(self, scope: Scope, now: float) -> tuple[int, int] | None:
        spent, reserved = await self._redis.hmget(self._ledger_key(scope, now), "spent", "reserved")
        if spent is None:
            return None
        return int(float(spent)), int(float(reserved or 0))


def _lim(value: int | None) -> int:
    return -1 if value is None else value


def _opt(value: int) -> int | None:
    return None if value < 0 else value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
