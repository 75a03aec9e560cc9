"""The floor under any aiohttp gateway: one POST route that reads the body and answers a fixed
JSON body of a cached answer's size, on uvloop, with no middleware, config or cache.

    python -m benchmarks.bare_aiohttp --port 8080

``cache_hit_speed`` measures it next to the hit and the miss: an exact hit can be at most this
fast, so ``floor_over_miss`` is the highest hit/miss ratio any handler on this stack could show.
"""

from __future__ import annotations

import argparse

import orjson
import uvloop
from aiohttp import web

ANSWER = orjson.dumps({
    "id": "chatcmpl-0123456789abcdef01234567", "object": "chat.completion", "created": 1796412341,
    "model": "upstream-model", "system_fingerprint": "fp_mock",
    "choices": [{"index": 0, "message": {"role": "assistant", "refusal": None, "content":
                 "laboris nisi ut aliquip ex ea commodo consequat duis aute irure dolor in reprehenderit"},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20},
})


async def answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
