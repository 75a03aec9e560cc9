"""A fake Text Generation Inference server following TGI's documented wire format (OpenAPI of
TGI 2.x router, ``docs/source/conceptual/streaming.md``):

- ``POST /generate``  ``{"inputs": str, "parameters": {max_new_tokens, stop, details,
  decoder_input_details, ...}}`` → ``{"generated_text": str, "details": {"finish_reason":
  "length"|"eos_token"|"stop_sequence", "generated_tokens": int, "seed": int|null,
  "prefill": [{"id", "text", "logprob"}], "tokens": [{"id", "text", "logprob", "special"}]}}``.
  ``prefill`` is empty unless ``decoder_input_details`` is true; ``generated_text`` excludes
  special tokens but includes a matched stop sequence.
- ``POST /generate_stream`` → SSE ``data:{"index", "token": {"id", "text", "logprob",
  "special"}, "generated_text": null, "details": null, "top_tokens": null}``; the last event
  carries ``generated_text`` and ``details: {"finish_reason", "generated_tokens", "seed"}``.
- errors: status + ``{"error": str, "error_type": "validation"|"overloaded"|"generation"}``,
  in-stream errors as an SSE event with the same object.
- ``POST /tokenize`` → ``[{"id", "text", "start", "stop"}]``; ``GET /health`` → 200.
- ``POST /v1/chat/completions`` (Messages API) → OpenAI ``chat.completion`` / SSE chunks ending
  with ``data: [DONE]``, a usage-only chunk first when ``stream_options.include_usage``.

Tokens are the ``Control.tokens`` list in order, then an ``</s>`` end-of-sequence token;
prompt tokens are the whitespace-separated words of ``inputs``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from tests.backends.fakes.control import Control, sleep_or_note_disconnect, write_or_note_disconnect

VALIDATION_ERROR = orjson.dumps({
    "error": "Input validation error: inputs tokens + max_new_tokens must be <= 2048",
    "error_type": "validation"})


def generate(control: Control, params: dict[str, Any]) -> tuple[list[tuple[str, bool]], str]:
    """(tokens as (text, special), finish_reason) for these parameters."""
    limit = params.get("max_new_tokens") or 100
    stops = params.get("stop") or []
    out: list[tuple[str, bool]] = []
    text = ""
    for tok in control.tokens:
        if len(out) >= limit:
            return out, "length"
        out.append((tok, False))
        text += tok
        if any(s in text for s in stops):
            return out, "stop_sequence"
    if len(out) >= limit:
        return out, "length"
    out.append(("</s>", True))
    return out, "eos_token"


def _token(i: int, text: str, special: bool) -> dict[str, Any]:
    return {"id": 100 + i, "text": text, "logprob": -0.5, "special": special}


class FakeTGI:
    def __init__(self, control: Control | None = None) -> None:
        self.control = control or Control()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/generate", self.generate)
        app.router.add_post("/generate_stream", self.generate_stream)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_get("/health", self.health)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def _start(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.control.record(request, body)
        if self.control.first_delay:
            await asyncio.sleep(self.control.first_delay)
        return dict(body)

    async def generate(self, request: web.Request) -> web.Response:
        body = await self._start(request)
        if self.control.fail_status:
            return self.control.error_response(VALIDATION_ERROR)
        params = body.get("parameters") or {}
        tokens, reason = generate(self.control, params)
        prompt = str(body["inputs"]).split()
        details = {
            "finish_reason": reason, "generated_tokens": len(tokens), "seed": params.get("seed"),
            "prefill": [{"id": i, "text": w, "logprob": None} for i, w in enumerate(prompt)]
            if params.get("decoder_input_details") else [],
            "tokens": [_token(i, t, s) for i, (t, s) in enumerate(tokens)],
        }
        text = "".join(t for t, special in tokens if not special)
        out: dict[str, Any] = {"generated_text": text}
        if params.get("details"):
            out["details"] = details
        return web.json_response(out)

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        body = await self._start(request)
        if self.control.fail_status:
            return self.control.error_response(VALIDATION_ERROR)
        params = body.get("parameters") or {}
        tokens, reason = generate(self.control, params)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        text = ""
        for i, (tok, special) in enumerate(tokens):
            if i and not await sleep_or_note_disconnect(request, self.control.token_delay, self.control):
                return resp
            if not await self._extras(request, resp, i):
                return resp
            event: dict[str, Any] = {"index": i + 1, "token": _token(i, tok, special),
                                     "generated_text": None, "details": None, "top_tokens": None}
            text += "" if special else tok
            if i == len(tokens) - 1:
                event["generated_text"] = text
                event["details"] = {"finish_reason": reason, "generated_tokens": len(tokens),
                                    "seed": params.get("seed")}
            data = b"data:" + orjson.dumps(event) + b"\n\n"
            if not await write_or_note_disconnect(resp, data, self.control):
                return resp
        await resp.write_eof()
        return resp

    async def _extras(self, request: web.Request, resp: web.StreamResponse, i: int) -> bool:
        """Failure injections before chunk ``i``; False when the stream must stop here."""
        c = self.control
        if c.malformed_after is not None and i == c.malformed_after:
            await resp.write(b"data:{not json\n\n")
        if c.stream_error is not None and i == 1:
            err = {"error": c.stream_error, "error_type": "generation"}
            await resp.write(b"data:" + orjson.dumps(err) + b"\n\n")
            return False
        if c.cut_after is not None and i == c.cut_after:
            assert request.transport is not None
            request.transport.close()
            return False
        return True

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        words = str(body["inputs"]).split()
        return web.json_response([{"id": i, "text": w, "start": 0, "stop": 0} for i, w in enumerate(words)])

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._start(request)
        if self.control.fail_status:
            return self.control.error_response(VALIDATION_ERROR)
        tokens = list(self.control.tokens)
        prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        usage = {"prompt_tokens": prompt, "completion_tokens": len(tokens),
                 "total_tokens": prompt + len(tokens)}
        base = {"id": "", "created": 1732600000, "model": "tgi", "system_fingerprint": "3.0.1-native"}
        if not body.get("stream"):
            msg = {"role": "assistant", "content": "".join(tokens)}
            return web.json_response({**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": msg, "logprobs": None, "finish_reason": "stop"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, tok in enumerate(tokens):
            delta = {"role": "assistant", "content": tok}
            chunk = {**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "logprobs": None,
                 "finish_reason": "stop" if i == len(tokens) - 1 else None}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            trailer = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            await resp.write(b"data: " + orjson.dumps(trailer) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
