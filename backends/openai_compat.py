"""Any OpenAI-compatible server: vLLM, SGLang, llama.cpp, TGI's Messages API, OpenAI itself.

Streams pass through without re-encoding: each SSE ``data:`` payload is parsed (to validate it,
find usage and detect error events) but forwarded as the exact bytes received. The gateway
always asks for ``stream_options.include_usage`` so that metering has real numbers; it drops the
trailer for clients that did not ask.

Plain ``http://`` upstreams go through the pooled HTTP/1.1 client in ``backends/_h1client.py``
(the aiohttp request path was a third of the gateway's CPU per request); ``https://`` ones keep
the shared aiohttp session. Both map failures to the same ``backends.errors``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from backends._h1client import H1Client
from backends._h1conn import Watchdog
from backends._http import Deadline, map_client_error, raise_for_status
from backends.base import BackendRequest, BackendResponse, Chunk, EmbeddingRequest, Health, Usage
from backends.errors import BackendError, BackendHTTPError, BackendProtocolError
from configs.schema import BackendConfig

_PATHS = {"chat": "/chat/completions", "completion": "/completions"}


def api_base(url: str) -> str:
    return url if url.endswith("/v1") else f"{url}/v1"


class OpenAIBackend:
    def __init__(self, cfg: BackendConfig, session: aiohttp.ClientSession) -> None:
        assert cfg.url is not None  # the loader requires a url for this kind
        self.name = cfg.name
        self._cfg = cfg
        self._session = session
        self._base = api_base(cfg.url)
        self._root = self._base.removesuffix("/v1")
        headers = {"Content-Type": "application/json", **cfg.headers}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.timeouts.connect)
        self._h1: H1Client | None = None
        if cfg.url.startswith("http://"):
            self._h1 = H1Client(cfg.name, self._base, headers, cfg.max_connections, cfg.timeouts.connect)

    def _request_headers(self, extra: dict[str, str] | Any) -> dict[str, str]:
        return {**self._headers, **extra} if extra else self._headers

    async def complete(self, req: BackendRequest) -> BackendResponse:
        if self._h1 is not None:
            data = await self._fetch_json(self._h1, _PATHS[req.endpoint], req.body, req.headers, req.deadline)
            return BackendResponse(data, Usage.from_openai(data.get("usage")))
        deadline = Deadline(self.name, self._cfg.timeouts.total, req.deadline)
        data = await deadline.wait(self._post_json(_PATHS[req.endpoint], req.body, req.headers), "total", None)
        return BackendResponse(data, Usage.from_openai(data.get("usage")))

    async def embed(self, req: EmbeddingRequest) -> BackendResponse:
        if self._h1 is not None:
            data = await self._fetch_json(self._h1, "/embeddings", req.body, req.headers, req.deadline)
            return BackendResponse(data, Usage.from_openai(data.get("usage")))
        deadline = Deadline(self.name, self._cfg.timeouts.total, req.deadline)
        data = await deadline.wait(self._post_json("/embeddings", req.body, req.headers), "total", None)
        return BackendResponse(data, Usage.from_openai(data.get("usage")))

    async def _fetch_json(self, h1: H1Client, path: str, body: dict[str, Any], headers: Any,
                          deadline: float | None) -> dict[str, Any]:
        wd = Watchdog(self.name, self._cfg.timeouts.total, deadline)
        _, raw = await h1.fetch("POST", path, orjson.dumps(body), headers, wd)
        return self._loads(raw)

    async def _post_json(self, path: str, body: dict[str, Any], headers: Any) -> dict[str, Any]:
        try:
            async with self._session.post(
                self._base + path, data=orjson.dumps(body), headers=self._request_headers(headers),
                timeout=self._timeout,
            ) as resp:
                await raise_for_status(self.name, resp)
                raw = await resp.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise map_client_error(self.name, exc) from exc
        return self._loads(raw)

    def _loads(self, raw: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BackendProtocolError(self.name, f"backend {self.name} returned invalid JSON") from None
        if not isinstance(data, dict):
            raise BackendProtocolError(self.name, f"backend {self.name} returned a non-object body")
        return data

    def stream(self, req: BackendRequest) -> AsyncIterator[Chunk]:
        return self._stream_h1(self._h1, req) if self._h1 is not None else self._stream_aiohttp(req)

    async def _stream_h1(self, h1: H1Client, req: BackendRequest) -> AsyncIterator[Chunk]:
        timeouts = self._cfg.timeouts
        body = orjson.dumps({**req.body, "stream": True, "stream_options": {"include_usage": True}})
        wd = Watchdog(self.name, timeouts.total, req.deadline, "first_token", timeouts.first_token)
        resp = await h1.open(_PATHS[req.endpoint], body, req.headers, wd)
        # Leaving early (client gone, consumer cancelled, error) closes the connection: vLLM then
        # aborts the generation and frees the GPU. Lines are split on the parsed body bytes.
        done, first, tail = False, True, b""
        try:
            while data := await resp.read():
                lines = (tail + data).split(b"\n") if tail else data.split(b"\n")
                tail = lines.pop()
                for line in lines:
                    chunk = self._parse_line(line)
                    if chunk is None:
                        continue
                    if chunk is _DONE:
                        done = True
                        return
                    if first:
                        first = False
                        wd.set_phase("idle", timeouts.idle)
                    yield chunk
            done = self._parse_line(tail) is _DONE  # a last line without its newline
            if not done:
                raise BackendProtocolError(self.name, f"backend {self.name} ended the stream without [DONE]")
        finally:
            resp.close(done)

    async def _stream_aiohttp(self, req: BackendRequest) -> AsyncIterator[Chunk]:
        timeouts = self._cfg.timeouts
        deadline = Deadline(self.name, timeouts.total, req.deadline)
        body = {**req.body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            resp = await deadline.wait(self._session.post(
                self._base + _PATHS[req.endpoint], data=orjson.dumps(body),
                headers=self._request_headers(req.headers), timeout=self._timeout,
            ), "first_token", timeouts.first_token)
        except (aiohttp.ClientError, OSError) as exc:
            raise map_client_error(self.name, exc) from exc
        # Closing this generator (client gone, consumer cancelled) closes the response, which
        # drops the upstream connection: vLLM then aborts the generation and frees the GPU.
        try:
            await raise_for_status(self.name, resp)
            phase, limit = "first_token", timeouts.first_token
            while True:
                line = await deadline.wait(resp.content.readline(), phase, limit)  # type: ignore[arg-type]
                if not line:
                    raise BackendProtocolError(self.name, f"backend {self.name} ended the stream without [DONE]")
                chunk = self._parse_line(line)
                if chunk is None:
                    continue
                if chunk is _DONE:
                    return
                phase, limit = "idle", timeouts.idle
                yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            raise map_client_error(self.name, exc) from exc
        finally:
            resp.close()

    def _parse_line(self, line: bytes) -> Chunk | None:
        if not line.startswith(b"data:"):
            return None  # blank separators, comments, event:/id: fields
        data = line[5:].strip()
        if data == b"[DONE]":
            return _DONE
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise BackendProtocolError(self.name, f"backend {self.name} sent a malformed stream chunk") from None
        if not isinstance(payload, dict):
            raise BackendProtocolError(self.name, f"backend {self.name} sent a non-object stream chunk")
        error = payload.get("error")
        if error is not None:
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            raise BackendHTTPError(self.name, 500, f"backend {self.name} failed mid-stream: {message}")
        usage = Usage.from_openai(payload.get("usage"))
        return Chunk(data, payload, usage, usage is not None and not payload.get("choices"))

    async def health(self) -> Health:
        if self._h1 is not None:
            try:
                wd = Watchdog(self.name, self._cfg.timeouts.connect + 5, None)
                status, _ = await self._h1.fetch("GET", "/models", None, {}, wd)
                return Health(True, f"HTTP {status}")
            except BackendError as exc:
                return Health(False, str(exc))
        try:
            async with self._session.get(
                self._base + "/models", headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self._cfg.timeouts.connect + 5),
            ) as resp:
                await raise_for_status(self.name, resp)
                return Health(True, f"HTTP {resp.status}")
        except (TimeoutError, aiohttp.ClientError, OSError, BackendError) as exc:
            return Health(False, str(map_client_error(self.name, exc)))

    async def aclose(self) -> None:
        if self._h1 is not None:
            await self._h1.aclose()


_DONE = Chunk(b"[DONE]", {})
