"""Hugging Face Text Generation Inference (TGI) backend.

Supported TGI versions:
- native API (``POST /generate``, ``POST /generate_stream``, ``GET /health``): TGI >= 1.0;
  JSON grammars from ``response_format`` need >= 1.4.3; prompt token counts for streams come
  from ``POST /tokenize`` (>= 2.0; on older servers a stream ends without a usage trailer).
- Messages API (``POST /v1/chat/completions``, ``tgi_messages_api: true``): TGI >= 1.4.0;
  tools/function calls through it need >= 2.0; streamed usage needs a TGI that honours
  ``stream_options.include_usage`` (older ones ignore the field, and the stream has no trailer).
- ``/v1/completions`` requests always use the native ``/generate`` API.
- Embeddings: TGI does not serve them (use TEI), so this class has no ``embed``.

Translation of chat requests for the native API (ChatML template, parameter mapping, what is
rejected) is documented in ``backends/_tgi_translate.py``. Streams end with a usage-only
trailer chunk whenever usage is known. Closing a stream closes the upstream connection, which
makes TGI cancel the generation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from backends import _tgi_translate as tr
from backends._native_http import (
    Budget,
    finish,
    forward_headers,
    iter_sse_data,
    loads_object,
    open_response,
    probe,
    read_json,
)
from backends._shapes import Shape, StopTrimmer, check_single_choice, trim_stop
from backends.base import BackendRequest, BackendResponse, Chunk, Health, Usage
from backends.errors import BackendError, BackendProtocolError, TimeoutPhase
from configs.schema import BackendConfig


class TGIBackend:
    def __init__(self, cfg: BackendConfig, session: aiohttp.ClientSession) -> None:
        if not cfg.url:
            raise ValueError(f"backend {cfg.name}: kind tgi needs a url")
        self.name = cfg.name
        self._cfg = cfg
        self._session = session
        self._base = cfg.url.rstrip("/")

    def _headers(self, req_headers: Any) -> dict[str, str]:
        return forward_headers(self._cfg.headers, req_headers, self._cfg.api_key)

    def _uses_messages_api(self, req: BackendRequest) -> bool:
        return self._cfg.tgi_messages_api and req.endpoint == "chat"

    async def _post(self, budget: Budget, path: str, body: dict[str, Any],
                    req: BackendRequest, phase: TimeoutPhase = "first_token") -> aiohttp.ClientResponse:
        return await open_response(self._session, budget, self._base + path, body,
                                   headers=self._headers(req.headers), timeouts=self._cfg.timeouts, phase=phase)

    async def complete(self, req: BackendRequest) -> BackendResponse:
        budget = Budget(self.name, self._cfg.timeouts, req.deadline)
        if self._uses_messages_api(req):
            check_single_choice(self.name, req.body)
            body = {**req.body, "stream": False}
            body.pop("stream_options", None)
            data = await read_json(await self._post(budget, "/v1/chat/completions", body, req, "total"), budget)
            return BackendResponse(data, Usage.from_openai(data.get("usage")))
        payload = tr.generate_request(self.name, req.endpoint, req.body, stream=False)
        data = await read_json(await self._post(budget, "/generate", payload, req, "total"), budget)
        text = data.get("generated_text")
        if not isinstance(text, str):
            raise BackendProtocolError(self.name, "TGI /generate answer has no generated_text")
        details = data.get("details")
        usage = tr.usage_of(details, None)
        text = trim_stop(text, payload["parameters"].get("stop", []))
        shape = Shape(req.endpoint, str(req.body.get("model", "")))
        return BackendResponse(shape.body(text, tr.finish_reason(details), usage), usage)

    def stream(self, req: BackendRequest) -> AsyncIterator[Chunk]:
        if self._uses_messages_api(req):
            return self._stream_messages(req)
        return self._stream_native(req)

    async def _stream_native(self, req: BackendRequest) -> AsyncIterator[Chunk]:
        budget = Budget(self.name, self._cfg.timeouts, req.deadline)
        payload = tr.generate_request(self.name, req.endpoint, req.body, stream=True)
        resp = await self._post(budget, "/generate_stream", payload, req)
        shape = Shape(req.endpoint, str(req.body.get("model", "")))
        trimmer = StopTrimmer(payload["parameters"].get("stop", []))
        details: dict[str, Any] | None = None
        first = True
        done = False
        try:
            async for data in iter_sse_data(resp, budget):
                event = loads_object(self.name, data)
                if "error" in event:
                    raise tr.stream_error(self.name, event)
                token = event.get("token") or {}
                text = "" if token.get("special") else str(token.get("text") or "")
                out = trimmer.feed(text)
                if out or first:
                    yield shape.chunk(out, role=True) if first else shape.chunk(out)
                    first = False
                if event.get("details") is not None or event.get("generated_text") is not None:
                    details = event.get("details") or {}
                    break
            done = True
        finally:
            finish(resp, done)
        if details is None:
            raise BackendProtocolError(self.name, "TGI stream ended without its final event")
        rest = trimmer.finish()
        yield shape.chunk(rest or None, finish_reason=tr.finish_reason(details))
        usage = tr.usage_of(details, await self._count_prompt(budget, payload["inputs"], req))
        if usage is not None:
            yield shape.trailer(usage)

    async def _count_prompt(self, budget: Budget, inputs: str, req: BackendRequest) -> int | None:
        """Prompt tokens via ``/tokenize`` (the stream's details carry none); None if unknown."""
        try:
            resp = await self._post(budget, "/tokenize", {"inputs": inputs}, req, "total")
            async with resp:
                raw = await budget.wait("idle", resp.read())
            tokens = orjson.loads(raw)
        except (BackendError, aiohttp.ClientError, OSError, orjson.JSONDecodeError):
            return None
        return len(tokens) if isinstance(tokens, list) else None

    async def _stream_messages(self, req: BackendRequest) -> AsyncIterator[Chunk]:
        check_single_choice(self.name, req.body)
        budget = Budget(self.name, self._cfg.timeouts, req.deadline)
        options = req.body.get("stream_options") or {}
        body = {**req.body, "stream": True, "stream_options": {**options, "include_usage": True}}
        resp = await self._post(budget, "/v1/chat/completions", body, req)
        pending: tuple[Usage, dict[str, Any]] | None = None
        done = False
        try:
            async for data in iter_sse_data(resp, budget):
                if data.strip() == b"[DONE]":
                    break
                payload = loads_object(self.name, data)
                if "error" in payload and "choices" not in payload:
                    raise tr.stream_error(self.name, payload)
                usage = Usage.from_openai(payload.get("usage"))
                if usage is None:
                    yield Chunk(data, payload)
                elif not payload.get("choices"):
                    yield Chunk(data, payload, usage=usage, usage_only=True)
                else:  # usage riding on a content chunk: split it into the trailer
                    pending = (usage, payload)
                    stripped = {k: v for k, v in payload.items() if k != "usage"}
                    yield Chunk(orjson.dumps(stripped), stripped)
            done = True
        finally:
            finish(resp, done)
        if pending is not None:
            usage, last = pending
            shape = Shape("chat", str(last.get("model", "")), id=str(last.get("id", "")),
                          created=int(last.get("created") or 0))
            yield shape.trailer(usage)

    async def health(self) -> Health:
        ok, detail = await probe(self._session, self._base + "/health", self._cfg.timeouts,
                                 self._headers({}))
        return Health(ok, "" if ok else detail)

    async def aclose(self) -> None:
        """Nothing of its own to close: the ClientSession belongs to the gateway."""

