"""Writing a stream to the client.

Contracts:
- The response starts only after the first upstream chunk arrived (pipeline.open_stream), so a
  failure before the first byte is an ordinary error response, retried or failed over first.
- An upstream failure after bytes were sent ends the stream with an OpenAI-style error event
  (``data: {"error": {...}}``) and no ``[DONE]``: a client can always tell a cut answer.
- A client that disconnects cancels the handler (handler_cancellation); closing the chunk
  iterator then closes the upstream request so the GPU stops generating.
- Bookkeeping (settle/release, cache write) runs in tracked tasks and survives cancellation.
- The usage trailer is forwarded only when the client asked for it; when the upstream gave no
  usage, it is counted with tiktoken and synthesised.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from backends.base import Chunk, Usage
from backends.errors import BackendError
from gateway.errors import error_payload
from gateway.pipeline import OpenStream, Pipeline, RequestContext, close_chunks
from gateway.sse import DONE, assemble, collected_text, frame, replay


class SSEResponse(web.StreamResponse):
    """A stream whose headers leave with its first event, in one write. aiohttp's StreamResponse
    flushes headers at ``prepare()``, so the first event followed in a second small write and
    reached clients measurably later (strace: two writes ~0.2-0.5 ms apart); aiohttp's own
    ``Response`` defers headers the same way through this class attribute."""

    _send_headers_immediately = False


class _StreamState:
    __slots__ = ("cut", "payloads", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.payloads: list[dict[str, Any]] = []
        self.cut = False


async def write_stream(
    request: web.Request, pipeline: Pipeline, ctx: RequestContext, opened: OpenStream,
    body: dict[str, Any], headers: dict[str, str],
) -> web.StreamResponse:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    resp = SSEResponse(headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    ctx.obs.first_byte = time.perf_counter()
    if opened.cached is not None:
        return await _write_cached(resp, pipeline, ctx, opened, include_usage)
    state = _StreamState()
    status = 200
    try:
        await _pump(resp, opened, state, include_usage)
        if state.usage is None:
            state.usage = _counted_usage(pipeline, body, state.payloads)
            if include_usage:
                await resp.write(frame(orjson.dumps(_usage_chunk(state.payloads, state.usage))))
        await resp.write(DONE)
    except BackendError as exc:
        status = 502
        state.cut = True
        await resp.write(frame(orjson.dumps(error_payload(exc))))
    except (asyncio.CancelledError, ConnectionResetError):
        status = 499
        state.cut = True
        raise
    finally:
        await close_chunks(opened.chunks)
        _bookkeeping(pipeline, ctx, opened, body, state, status)
    await resp.write_eof()
    return resp


async def _pump(resp: web.StreamResponse, opened: OpenStream, state: _StreamState, include_usage: bool) -> None:
    chunk: Chunk | None = opened.first
    chunks = opened.chunks
    while chunk is not None:
        if chunk.usage is not None:
            state.usage = chunk.usage
        if chunk.usage_only:
            if include_usage:
                await resp.write(frame(chunk.data))
        else:
            state.payloads.append(chunk.payload)
            await resp.write(frame(chunk.data))
        chunk = await anext(chunks, None)


def _counted_usage(pipeline: Pipeline, body: dict[str, Any], payloads: list[dict[str, Any]]) -> Usage:
    model = str(body.get("model", ""))
    return Usage(pipeline.counter.count_prompt(body, model),
                 pipeline.counter.count_text(collected_text(payloads), model))


def _usage_chunk(payloads: list[dict[str, Any]], usage: Usage) -> dict[str, Any]:
    head = payloads[0] if payloads else {}
    return {"id": head.get("id"), "object": head.get("object", "chat.completion.chunk"),
            "created": head.get("created"), "model": head.get("model"), "choices": [],
            "usage": usage.as_dict()}


def _bookkeeping(pipeline: Pipeline, ctx: RequestContext, opened: OpenStream, body: dict[str, Any],
                 state: _StreamState, status: int) -> None:
    done = opened.execution
    assert done is not None  # cached answers are replayed by _write_cached, not pumped
    # A cut stream still produced output upstream: settle what was generated so budgets see
    # real spend, but never cache it.
    usage = state.usage or _counted_usage(pipeline, body, state.payloads)
    pipeline.finish(opened.ticket, pipeline.outcome(
        ctx, done.model, done.deployment, usage, stream=True, status=status), status)
    if not state.cut and opened.cache_query is not None:
        answer = assemble(state.payloads, usage.as_dict())
        if answer is not None:
            pipeline.cache.store(opened.cache_query, answer)


async def _write_cached(resp: web.StreamResponse, pipeline: Pipeline, ctx: RequestContext,
                        opened: OpenStream, include_usage: bool) -> web.StreamResponse:
    assert opened.cached is not None
    answer = opened.cached.body
    try:
        for event in replay(answer, include_usage):
            await resp.write(event)
        await resp.write(DONE)
    except BaseException as exc:  # the client left mid-replay: the ticket must still be finished
        pipeline.abandon(opened.ticket, exc)
        raise
    usage = Usage.from_openai(answer.get("usage")) or Usage(0, 0)
    pipeline.finish(opened.ticket, pipeline.outcome(
        ctx, str(answer.get("model", "")), None, usage, cached=True, stream=True), 200)
    await resp.write_eof()
    return resp
