"""Ollama backend over its native API.

Endpoints: ``POST /api/chat`` (chat), ``POST /api/generate`` (completions), ``POST /api/embed``
(embeddings), ``GET /api/version`` (health). Streams are NDJSON: one JSON object per line, the
last one with ``done: true``, ``done_reason`` and the token counts ``prompt_eval_count`` /
``eval_count`` that become the usage trailer. Errors are ``{"error": "..."}``, with an error
status before the stream starts or as a line inside a 200 stream (mapped to a 500).

Supported Ollama versions: >= 0.3.0 (``/api/embed`` with input lists, tools, ``done_reason``);
JSON-schema ``format`` needs >= 0.5.0; tool calls inside streams need >= 0.8.0 (older servers
answer tool requests without streaming). Request/response mapping is documented in
``backends/_ollama_translate.py``. Closing a stream closes the upstream connection, which makes
Ollama stop generating.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from backends import _ollama_translate as tr
from backends._native_http import (
    Budget,
    finish,
    forward_headers,
    iter_lines,
    loads_object,
    open_response,
    probe,
    read_json,
)
from backends._shapes import Shape
from backends.base import BackendRequest, BackendResponse, Chunk, EmbeddingRequest, Health
from backends.errors import BackendHTTPError, BackendProtocolError, TimeoutPhase
from configs.schema import BackendConfig

_PATHS = {"chat": "/api/chat", "completion": "/api/generate"}


class OllamaBackend:
    def __init__(self, cfg: BackendConfig, session: aiohttp.ClientSession) -> None:
        if not cfg.url:
            raise ValueError(f"backend {cfg.name}: kind ollama needs a url")
        self.name = cfg.name
        self._cfg = cfg
        self._session = session
        self._base = cfg.url.rstrip("/")

    async def _post(self, budget: Budget, path: str, body: dict[str, Any],
                    headers: Mapping[str, str], phase: TimeoutPhase = "first_token") -> aiohttp.ClientResponse:
        return await open_response(
            self._session, budget, self._base + path, body,
            headers=forward_headers(self._cfg.headers, headers, self._cfg.api_key),
            timeouts=self._cfg.timeouts, phase=phase)

    def _check(self, obj: dict[str, Any]) -> dict[str, Any]:
        if "error" in obj:
            raise BackendHTTPError(self.name, 500, str(obj["error"]))
        return obj

    async def complete(self, req: BackendRequest) -> BackendResponse:
        budget = Budget(self.name, self._cfg.timeouts, req.deadline)
        payload = tr.request(self.name, req.endpoint, req.body, stream=False)
        resp = await self._post(budget, _PATHS[req.endpoint], payload, req.headers, "total")
        data = self._check(await read_json(resp, budget))
        if req.endpoint == "chat":
            message = data.get("message")
            if not isinstance(message, dict):
                raise BackendProtocolError(self.name, "Ollama /api/chat answer has no message")
            text, calls = str(message.get("content") or ""), tr.tool_calls_out(message.get("tool_calls"))
        else:
            text, calls = str(data.get("response") or ""), []
        usage = tr.usage_of(data)
        shape = Shape(req.endpoint, str(req.body.get("model", "")))
        body = shape.body(text, tr.finish_reason(data.get("done_reason"), bool(calls)), usage, calls)
        return BackendResponse(body, usage)

    async def stream(self, req: BackendRequest) -> AsyncIterator[Chunk]:
        budget = Budget(self.name, self._cfg.timeouts, req.deadline)
        payload = tr.request(self.name, req.endpoint, req.body, stream=True)
        resp = await self._post(budget, _PATHS[req.endpoint], payload, req.headers)
        shape = Shape(req.endpoint, str(req.body.get("model", "")))
        final: dict[str, Any] | None = None
        calls = 0
        first, done = True, False
        try:
            async for line in iter_lines(resp, budget):
                obj = self._check(loads_object(self.name, line))
                chunk, new_calls = self._chunk(shape, obj, first=first, start=calls)
                calls += new_calls
                if chunk is not None:
                    first = False
                    yield chunk
                if obj.get("done"):
                    final = obj
                    break
            done = True
        finally:
            finish(resp, done)
        if final is None:
            raise BackendProtocolError(self.name, "Ollama stream ended without its done object")
        yield shape.chunk(finish_reason=tr.finish_reason(final.get("done_reason"), calls > 0))
        yield shape.trailer(tr.usage_of(final))

    def _chunk(self, shape: Shape, obj: dict[str, Any], *, first: bool, start: int) -> tuple[Chunk | None, int]:
        """The OpenAI chunk for one NDJSON object (None when it carries nothing) and how many
        tool calls it started."""
        if shape.endpoint == "completion":
            text = str(obj.get("response") or "")
            return (shape.chunk(text) if text else None), 0
        message = obj.get("message") or {}
        text = str(message.get("content") or "")
        calls = tr.tool_calls_out(message.get("tool_calls"), start=start, indexed=True)
        if not text and not calls and not first:
            return None, 0
        return shape.chunk(text if text or not calls else None, role=first, tool_calls=calls), len(calls)

    async def embed(self, req: EmbeddingRequest) -> BackendResponse:
        budget = Budget(self.name, self._cfg.timeouts, req.deadline)
        payload = tr.embed_request(self.name, req.body)
        data = self._check(await read_json(await self._post(budget, "/api/embed", payload, req.headers, "total"),
                                           budget))
        body = tr.embed_response(data, str(req.body.get("model", "")), req.body.get("encoding_format"))
        if body is None:
            raise BackendProtocolError(self.name, "Ollama /api/embed answer has no embeddings")
        usage = tr.usage_of({"prompt_eval_count": body["usage"]["prompt_tokens"], "eval_count": 0})
        return BackendResponse(body, usage)

    async def health(self) -> Health:
        ok, detail = await probe(self._session, self._base + "/api/version", self._cfg.timeouts,
                                 forward_headers(self._cfg.headers, {}, self._cfg.api_key))
        return Health(ok, detail)

    async def aclose(self) -> None:
        """Nothing of its own to close: the ClientSession belongs to the gateway."""
