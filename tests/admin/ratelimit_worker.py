"""A separate process hammering one shared RedisQuota: ``python -m tests.admin.ratelimit_worker
PREFIX RPM WINDOW_S DURATION_S``. Prints the server-clock time of every admitted request."""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
import redis.asyncio as aioredis

from admin.models import Limits
from admin.quota import AdmitRequest, Scope
from admin.quota_redis import RedisQuota
from tests.admin.conftest import REDIS_URL


async def run(prefix: str, rpm: int, window: float, duration: float) -> list[float]:
    client = aioredis.Redis.from_url(REDIS_URL)

    async def no_spend(scope: Scope, since: float) -> int:
        return 0

    quota = RedisQuota(client, prefix, no_spend, window=window)
    scopes = (Scope("k:shared", Limits(rpm=rpm)), Scope("t:shared", Limits(rpm=rpm * 10)))
    admitted: list[float] = []
    end = time.monotonic() + duration
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while time.monotonic() < end:
            counter += 1
            decision = await quota.admit(AdmitRequest(f"{id(admitted)}-{counter}", scopes, 1, 0, time.time()))
            if decision.ok:
                admitted.append(decision.at)
            else:
                await asyncio.sleep(0.002)

    await asyncio.gather(*(worker() for _ in range(8)))
    await client.aclose()
    return admitted


if __name__ == "__main__":
    prefix, rpm, window, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    sys.stdout.write(orjson.dumps(asyncio.run(run(prefix, rpm, window, duration))).decode() + "\n")
