"""A fake Ollama server following Ollama's documented API (``docs/api.md``, 0.5-0.9):

- ``POST /api/chat`` ``{"model", "messages", "stream" (default true), "options", "format",
  "tools"}`` → ``{"model", "created_at", "message": {"role": "assistant", "content",
  "tool_calls"?: [{"function": {"name", "arguments": {...}}}]}, "done": true, "done_reason":
  "stop"|"length", "total_duration", "load_duration", "prompt_eval_count",
  "prompt_eval_duration", "eval_count", "eval_duration"}``. Streaming (NDJSON,
  ``application/x-ndjson``): one object per token with ``done: false``, then a final object with
  empty content, ``done: true``, ``done_reason`` and the counts.
- ``POST /api/generate`` ``{"model", "prompt", "stream", "options", "format"}`` → the same with
  ``response`` instead of ``message`` (and ``context`` in the final object).
- ``POST /api/embed`` ``{"model", "input": str | [str]}`` → ``{"model", "embeddings": [[...]],
  "total_duration", "load_duration", "prompt_eval_count"}``.
- ``GET /api/version`` → ``{"version"}``.
- errors: ``{"error": "..."}`` with 400/404/500; model ``"missing"`` answers 404
  ``model "missing" not found, try pulling it first``; in-stream errors as an ``{"error"}`` line.

Tokens are ``Control.tokens``; ``options.num_predict`` caps them (``done_reason: "length"``).
When the request has ``tools``, the reply is a call to the first tool with ``{"city": "Paris"}``.
Prompt tokens are the words of all messages / the prompt; embeddings are 4-d.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from tests.backends.fakes.control import Control, sleep_or_note_disconnect, write_or_note_disconnect

CREATED = "2024-11-26T12:00:00.000000Z"


class FakeOllama:
    def __init__(self, control: Control | None = None) -> None:
        self.control = control or Control()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/chat", self.chat)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/embed", self.embed)
        app.router.add_get("/api/version", self.version)
        return app

    async def _start(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = dict(await request.json())
        self.control.record(request, body)
        if self.control.first_delay:
            await asyncio.sleep(self.control.first_delay)
        if body.get("model") == "missing":
            msg = {"error": 'model "missing" not found, try pulling it first'}
            return body, web.json_response(msg, status=404)
        if self.control.fail_status:
            return body, self.control.error_response(b'{"error":"unexpected server status: llm busy"}')
        return body, None

    def _plan(self, body: dict[str, Any]) -> tuple[list[str], str, list[dict[str, Any]]]:
        limit = (body.get("options") or {}).get("num_predict")
        tokens = list(self.control.tokens)
        calls: list[dict[str, Any]] = []
        if body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            return [], "stop", [{"function": {"name": name, "arguments": {"city": "Paris"}}}]
        if limit is not None and limit < len(tokens):
            return tokens[:limit], "length", calls
        return tokens, "stop", calls

    @staticmethod
    def _prompt_tokens(body: dict[str, Any]) -> int:
        if "messages" in body:
            return sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        return len(str(body.get("prompt", "")).split())

    def _final(self, body: dict[str, Any], reason: str, count: int) -> dict[str, Any]:
        return {"done": True, "done_reason": reason, "total_duration": 5_000_000, "load_duration": 100,
                "prompt_eval_count": self._prompt_tokens(body), "prompt_eval_duration": 100,
                "eval_count": count, "eval_duration": 1000}

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, chat=True)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, chat=False)

    async def _answer(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body, error = await self._start(request)
        if error is not None:
            return error
        tokens, reason, calls = self._plan(body)
        head = {"model": body["model"], "created_at": CREATED}

        def piece(text: str, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
            if not chat:
                return {"response": text}
            msg: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                msg["tool_calls"] = tool_calls
            return {"message": msg}

        final = {**head, **piece(""), **self._final(body, reason, max(len(tokens), len(calls)))}
        if not chat:
            final["context"] = [1, 2, 3]
        if body.get("stream", True) is False:
            return web.json_response({**final, **piece("".join(tokens), calls)})
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        lines = [{**head, **piece(t), "done": False} for t in tokens]
        if calls:
            lines.append({**head, **piece("", calls), "done": False})
        for i, line in enumerate([*lines, final]):
            if i and not await sleep_or_note_disconnect(request, self.control.token_delay, self.control):
                return resp
            if not await self._extras(request, resp, i):
                return resp
            if not await write_or_note_disconnect(resp, orjson.dumps(line) + b"\n", self.control):
                return resp
        await resp.write_eof()
        return resp

    async def _extras(self, request: web.Request, resp: web.StreamResponse, i: int) -> bool:
        c = self.control
        if c.malformed_after is not None and i == c.malformed_after:
            await resp.write(b"{not json\n")
        if c.stream_error is not None and i == 1:
            await resp.write(orjson.dumps({"error": c.stream_error}) + b"\n")
            return False
        if c.cut_after is not None and i == c.cut_after:
            assert request.transport is not None
            request.transport.close()
            return False
        return True

    async def embed(self, request: web.Request) -> web.Response:
        body, error = await self._start(request)
        if error is not None:
            return error
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [[float(len(s)), 0.5, -0.25, float(i)] for i, s in enumerate(inputs)]
        return web.json_response({"model": body["model"], "embeddings": vectors, "total_duration": 1000,
                                  "load_duration": 10, "prompt_eval_count": sum(len(s.split()) for s in inputs)})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.9.0"})
