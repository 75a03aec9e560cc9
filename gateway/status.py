"""GET /v1/turnout/status: the routing state an operator needs when backends misbehave.

Per deployment: breaker state (closed | open | half_open), availability, consecutive failures,
in-flight, successes/failures, EWMA and p95 latency, outlier ejection, last probe, fresh vLLM
load; per model: retry and hedge budget use. Behind auth like every non-public route.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.keys import RUNTIME

STATUS_PATH = "/v1/turnout/status"


async def status(request: web.Request) -> web.Response:
    holder = request.app[RUNTIME]
    body = {"generation": holder.generation, **holder.current.status()}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def add_status_route(app: web.Application) -> None:
    app.router.add_get(STATUS_PATH, status)
