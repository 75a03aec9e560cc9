"""Load signals from vLLM's Prometheus ``/metrics`` for the ``load_aware`` strategy.

``parse_vllm_metrics`` reads ``vllm:num_requests_waiting``, ``vllm:num_requests_running`` and
``vllm:gpu_cache_usage_perc`` (or the newer ``vllm:kv_cache_usage_perc``), summing over label
sets. ``poll_loop`` runs off the request path in a task the gateway's runtime owns; it takes an
injected ``fetch(url) -> text`` so routing does no HTTP itself. A failed poll leaves the last
sample to go stale; routers ignore samples older than ``stale`` (ClusterState.view).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from configs.resilience import LoadPolicy

log = logging.getLogger("turnout.load")
Fetch = Callable[[str], Awaitable[str]]
_NAMES = {
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_requests_running": "running",
    "vllm:gpu_cache_usage_perc": "kv",
    "vllm:kv_cache_usage_perc": "kv",
}


@dataclass(frozen=True, slots=True)
class LoadSample:
    waiting: float
    running: float
    kv_cache_usage: float | None
    at: float  # time.monotonic() when fetched


def parse_vllm_metrics(text: str, at: float) -> LoadSample | None:
    """None when the text carries no vLLM queue gauges (not a vLLM server)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        brace = line.find("{")
        if brace >= 0:
            name, rest = line[:brace], line[line.rfind("}") + 1:]
        else:
            name, _, rest = line.partition(" ")
        key = _NAMES.get(name.strip())
        if key is None:
            continue
        try:
            value = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        if key == "kv":
            found[key] = max(found.get(key, 0.0), value)
        else:
            found[key] = found.get(key, 0.0) + value
    if "waiting" not in found and "running" not in found:
        return None
    return LoadSample(found.get("waiting", 0.0), found.get("running", 0.0), found.get("kv"), at)


def metrics_url(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1") + "/metrics"


async def poll_once(targets: Mapping[str, str], fetch: Fetch, samples: dict[str, LoadSample],
                    limit_s: float) -> None:
    async def one(name: str, url: str) -> None:
        try:
            async with asyncio.timeout(limit_s):
                text = await fetch(url)
        except Exception as exc:  # unreachable or slow: the old sample ages out
            log.debug("load poll of %s failed: %s", name, exc)
            return
        sample = parse_vllm_metrics(text, time.monotonic())
        if sample is not None:
            samples[name] = sample

    await asyncio.gather(*(one(n, u) for n, u in targets.items()))


async def poll_loop(targets: Mapping[str, str], fetch: Fetch, policy: LoadPolicy,
                    samples: dict[str, LoadSample]) -> None:
    """Poll forever; cancelled by the runtime on close."""
    while True:
        await poll_once(targets, fetch, samples, max(policy.interval, 0.5))
        await asyncio.sleep(policy.interval)
