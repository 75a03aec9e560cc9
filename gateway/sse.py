"""SSE framing and conversions between whole answers and chunk streams.

``replay`` turns a cached chat.completion into a valid chunk sequence (role, content, finish,
optional usage trailer); ``assemble`` rebuilds a chat.completion from streamed payloads, for
the cache. Only plain-text answers are assembled; anything with tool calls, logprobs or a
missing finish reason returns None (never cache what we cannot replay faithfully).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def frame(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def replay(answer: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    base = {"id": answer.get("id", "chatcmpl-cached"), "object": "chat.completion.chunk",
            "created": answer.get("created", 0), "model": answer.get("model", "")}
    choices = answer.get("choices", [])
    yield frame(orjson.dumps({**base, "choices": [
        {"index": c.get("index", i), "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        for i, c in enumerate(choices)]}))
    for i, c in enumerate(choices):
        content = (c.get("message") or {}).get("content") or ""
        yield frame(orjson.dumps({**base, "choices": [
            {"index": c.get("index", i), "delta": {"content": content}, "finish_reason": None}]}))
    yield frame(orjson.dumps({**base, "choices": [
        {"index": c.get("index", i), "delta": {}, "finish_reason": c.get("finish_reason", "stop")}
        for i, c in enumerate(choices)]}))
    if include_usage and isinstance(answer.get("usage"), dict):
        yield frame(orjson.dumps({**base, "choices": [], "usage": answer["usage"]}))


def assemble(payloads: list[dict[str, Any]], usage: dict[str, int] | None) -> dict[str, Any] | None:
    if not payloads:
        return None
    texts: dict[int, list[str]] = {}
    finish: dict[int, str] = {}
    for payload in payloads:
        for choice in payload.get("choices") or ():
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or delta.get("function_call") or choice.get("logprobs"):
                return None
            content = delta.get("content")
            if content:
                texts.setdefault(index, []).append(content)
            if choice.get("finish_reason"):
                finish[index] = choice["finish_reason"]
    if not finish or set(finish) != set(texts) | set(finish) or "length" in finish.values():
        return None
    head = payloads[0]
    return {
        "id": head.get("id"), "object": "chat.completion", "created": head.get("created"),
        "model": head.get("model"),
        "choices": [{"index": i, "message": {"role": "assistant", "content": "".join(texts.get(i, []))},
                     "finish_reason": finish[i], "logprobs": None} for i in sorted(finish)],
        "usage": usage,
    }


def collected_text(payloads: list[dict[str, Any]]) -> str:
    parts = []
    for payload in payloads:
        for choice in payload.get("choices") or ():
            delta = choice.get("delta") or {}
            parts.append(delta.get("content") or choice.get("text") or "")
            if delta.get("tool_calls"):
                parts.append(orjson.dumps(delta["tool_calls"]).decode())
    return "".join(parts)
