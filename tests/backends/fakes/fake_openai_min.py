"""A minimal OpenAI-compatible server for the litellm backend tests (OpenAI API reference:
``POST /v1/chat/completions`` → ``chat.completion`` or SSE ``chat.completion.chunk`` events
ending with ``data: [DONE]``, a usage-only chunk (``choices: []``) before it when
``stream_options.include_usage``; ``POST /v1/completions`` → ``text_completion``;
``POST /v1/embeddings`` → ``{"object": "list", "data": [{"object": "embedding", "index",
"embedding"}], "model", "usage"}``; errors ``{"error": {"message", "type", "param", "code"}}``).

``Control.fail_status`` with ``fail_body`` injects an error (``Retry-After`` from
``Control.retry_after``); ``first_delay``/``token_delay`` slow it down.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from tests.backends.fakes.control import Control, sleep_or_note_disconnect, write_or_note_disconnect

DEFAULT_ERROR = orjson.dumps({"error": {"message": "upstream exploded", "type": "server_error",
                                        "param": None, "code": None}})


class FakeOpenAI:
    def __init__(self, control: Control | None = None) -> None:
        self.control = control or Control()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        return app

    async def _start(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = dict(await request.json())
        self.control.record(request, body)
        if self.control.first_delay:
            await asyncio.sleep(self.control.first_delay)
        if self.control.fail_status:
            return body, self.control.error_response(DEFAULT_ERROR)
        return body, None

    def _usage(self) -> dict[str, int]:
        n = len(self.control.tokens)
        return {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._start(request)
        if error is not None:
            return error
        head = {"id": "chatcmpl-fake", "created": 1732600000, "model": body["model"]}
        if not body.get("stream"):
            msg = {"role": "assistant", "content": "".join(self.control.tokens)}
            return web.json_response({**head, "object": "chat.completion", "usage": self._usage(), "choices": [
                {"index": 0, "message": msg, "logprobs": None, "finish_reason": "stop"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        last = len(self.control.tokens) - 1
        for i, tok in enumerate(self.control.tokens):
            if i and not await sleep_or_note_disconnect(request, self.control.token_delay, self.control):
                return resp
            choice = {"index": 0, "delta": {"role": "assistant", "content": tok} if i == 0 else {"content": tok},
                      "logprobs": None, "finish_reason": "stop" if i == last else None}
            data = orjson.dumps({**head, "object": "chat.completion.chunk", "choices": [choice]})
            if not await write_or_note_disconnect(resp, b"data: " + data + b"\n\n", self.control):
                return resp
        if (body.get("stream_options") or {}).get("include_usage"):
            trailer = {**head, "object": "chat.completion.chunk", "choices": [], "usage": self._usage()}
            await resp.write(b"data: " + orjson.dumps(trailer) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def completions(self, request: web.Request) -> web.Response:
        body, error = await self._start(request)
        if error is not None:
            return error
        return web.json_response({
            "id": "cmpl-fake", "object": "text_completion", "created": 1732600000, "model": body["model"],
            "choices": [{"index": 0, "text": "".join(self.control.tokens), "logprobs": None,
                         "finish_reason": "stop"}], "usage": self._usage()})

    async def embeddings(self, request: web.Request) -> web.Response:
        body, error = await self._start(request)
        if error is not None:
            return error
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, float(i)]} for i in range(len(inputs))]
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})
