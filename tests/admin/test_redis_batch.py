"""ScriptBatcher against the real Redis: calls of one loop iteration share a round trip,
deferred calls ride along with the next immediate one (in call order) or go on their own when
their time is up, drain sends them at once, and a flushed script cache is recovered from."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from admin.redis_batch import ScriptBatcher

# Appends ARGV[1] to the list KEYS[1] and answers the list so far: shows the order calls ran in.
APPEND = "redis.call('RPUSH', KEYS[1], ARGV[1]) return redis.call('LRANGE', KEYS[1], 0, -1)"


def texts(values: list[bytes]) -> list[str]:
    return [v.decode() for v in values]


async def loaded(redis: aioredis.Redis) -> ScriptBatcher:
    """A batcher whose script the server has cached (a first call after a SCRIPT FLUSH, say by
    another test, costs a second round trip to load it), with its round trips counted from 0."""
    await redis.script_load(APPEND)
    return ScriptBatcher(redis, {"append": APPEND})


async def test_calls_of_one_loop_iteration_share_one_round_trip(redis_client: aioredis.Redis,
                                                                redis_prefix: str) -> None:
    batcher = await loaded(redis_client)
    key = f"{redis_prefix}order"
    answers = await asyncio.gather(*(batcher.call("append", [key], [str(i)]) for i in range(5)))
    assert batcher.round_trips == 1
    assert texts(answers[-1]) == ["0", "1", "2", "3", "4"]


async def test_a_deferred_call_rides_with_the_next_immediate_one_in_call_order(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    batcher = await loaded(redis_client)
    key = f"{redis_prefix}order"
    settle = batcher.call("append", [key], ["settle"], defer=10.0)
    await asyncio.sleep(0.01)
    assert not settle.done() and batcher.round_trips == 0  # waiting for company
    admit = await batcher.call("append", [key], ["admit"])
    assert texts(admit) == ["settle", "admit"] and batcher.round_trips == 1
    assert texts(await settle) == ["settle"]


async def test_a_deferred_call_alone_goes_when_its_time_is_up(redis_client: aioredis.Redis,
                                                              redis_prefix: str) -> None:
    batcher = await loaded(redis_client)
    key = f"{redis_prefix}alone"
    start = time.monotonic()
    first = batcher.call("append", [key], ["a"], defer=0.05)
    second = batcher.call("append", [key], ["b"], defer=0.05)  # the same timer: one round trip
    assert texts(await second) == ["a", "b"] and texts(await first) == ["a"]
    assert time.monotonic() - start >= 0.045 and batcher.round_trips == 1


async def test_drain_sends_deferred_calls_without_waiting_for_their_time(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    batcher = ScriptBatcher(redis_client, {"append": APPEND})
    key = f"{redis_prefix}drain"
    settle = batcher.call("append", [key], ["x"], defer=60.0)
    await asyncio.wait_for(batcher.drain(), 5.0)
    assert settle.done() and texts(settle.result()) == ["x"]


async def test_a_flushed_script_cache_is_reloaded_and_the_calls_retried(redis_client: aioredis.Redis,
                                                                        redis_prefix: str) -> None:
    batcher = ScriptBatcher(redis_client, {"append": APPEND})
    key = f"{redis_prefix}flush"
    await batcher.call("append", [key], ["before"])
    await redis_client.script_flush()
    assert texts(await batcher.call("append", [key], ["after"])) == ["before", "after"]
