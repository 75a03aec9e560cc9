"""OpenAI request bodies → Ollama native requests, and Ollama results → OpenAI values.

Mapping (Ollama ``docs/api.md``):
- messages: roles as is (``developer`` → ``system``); text content parts are joined, ``image_url``
  parts with ``data:`` URLs become ``images`` (base64); assistant ``tool_calls`` get their JSON
  ``arguments`` decoded to objects; ``tool`` messages carry ``tool_name`` found from the call id.
- options: ``temperature``, ``top_p``, ``seed``, ``stop``, ``frequency_penalty``,
  ``presence_penalty`` as is; ``max_tokens``/``max_completion_tokens`` → ``num_predict``.
- ``response_format`` json_object → ``format: "json"``; json_schema → ``format: <schema>``.
- ``tools`` pass through (same shape); returned ``message.tool_calls`` become OpenAI tool calls
  with generated ids and JSON-encoded ``arguments``.
- ``n``/``best_of`` > 1 are rejected with a 400.
"""

from __future__ import annotations

import base64
import uuid
from array import array
from typing import Any

import orjson

from backends._shapes import check_single_choice, reject
from backends.base import Endpoint, Usage

_OPTION_KEYS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")


def options(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: body[k] for k in _OPTION_KEYS if body.get(k) is not None}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        out["num_predict"] = max_tokens
    stop = body.get("stop")
    if stop:
        out["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return out


def response_format(fmt: object) -> str | dict[str, Any] | None:
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return "json"
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else "json"
    return None


def _content(backend: str, content: object) -> tuple[str, list[str]]:
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise reject(backend, "message content must be a string or a list of parts", "messages")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if not url.startswith("data:") or "," not in url:
                raise reject(backend, "Ollama takes images as base64 data: URLs only", "messages")
            images.append(url.split(",", 1)[1])
        else:
            raise reject(backend, f"unsupported content part type {kind!r}", "messages")
    return "".join(texts), images


def _calls_in(backend: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for call in calls:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = orjson.loads(args or "{}")
            except orjson.JSONDecodeError:
                raise reject(backend, "tool call arguments must be JSON", "messages") from None
        out.append({"function": {"name": fn.get("name"), "arguments": args or {}}})
    return out


def messages(backend: str, msgs: object) -> list[dict[str, Any]]:
    if not isinstance(msgs, list) or not msgs:
        raise reject(backend, "messages must be a non-empty list", "messages")
    names: dict[str, str] = {}
    out = []
    for msg in msgs:
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise reject(backend, "each message needs a role", "messages")
        role = "system" if msg["role"] == "developer" else msg["role"]
        text, images = _content(backend, msg.get("content"))
        item: dict[str, Any] = {"role": role, "content": text}
        if images:
            item["images"] = images
        if msg.get("tool_calls"):
            for call in msg["tool_calls"]:
                names[str(call.get("id"))] = str((call.get("function") or {}).get("name"))
            item["tool_calls"] = _calls_in(backend, msg["tool_calls"])
        if role == "tool" and str(msg.get("tool_call_id")) in names:
            item["tool_name"] = names[str(msg.get("tool_call_id"))]
        out.append(item)
    return out


def request(backend: str, endpoint: Endpoint, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The /api/chat or /api/generate request body for an OpenAI request."""
    check_single_choice(backend, body)
    out: dict[str, Any] = {"model": body.get("model"), "stream": stream, "options": options(body)}
    if endpoint == "chat":
        out["messages"] = messages(backend, body.get("messages"))
        if body.get("tools"):
            out["tools"] = body["tools"]
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise reject(backend, "prompt must be a single string for Ollama", "prompt")
        out["prompt"] = prompt
        if body.get("suffix"):
            out["suffix"] = body["suffix"]
    fmt = response_format(body.get("response_format"))
    if fmt is not None:
        out["format"] = fmt
    return out


def tool_calls_out(calls: object, start: int = 0, indexed: bool = False) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        return []
    out = []
    for i, call in enumerate(calls, start):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        args = fn.get("arguments")
        encoded = args if isinstance(args, str) else orjson.dumps(args or {}).decode()
        item: dict[str, Any] = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                "function": {"name": fn.get("name"), "arguments": encoded}}
        out.append({"index": i, **item} if indexed else item)
    return out


def finish_reason(done_reason: object, tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def usage_of(final: dict[str, Any]) -> Usage:
    """Counts from the ``done`` object; Ollama omits ``prompt_eval_count`` on a full prompt-cache
    hit (older versions), which counts as 0."""
    prompt, completion = final.get("prompt_eval_count"), final.get("eval_count")
    return Usage(prompt if isinstance(prompt, int) else 0,
                 completion if isinstance(completion, int) else 0)


def embed_request(backend: str, body: dict[str, Any]) -> dict[str, Any]:
    inp = body.get("input")
    if isinstance(inp, str):
        inp = [inp]
    if not isinstance(inp, list) or not inp or not all(isinstance(x, str) for x in inp):
        raise reject(backend, "input must be a string or a list of strings for Ollama", "input")
    out: dict[str, Any] = {"model": body.get("model"), "input": inp}
    if body.get("dimensions") is not None:
        out["dimensions"] = body["dimensions"]
    return out


def embed_response(data: dict[str, Any], model: str, encoding: object) -> dict[str, Any] | None:
    """OpenAI ``list`` of embeddings, or None when ``data`` has no ``embeddings`` list."""
    vectors = data.get("embeddings")
    if not isinstance(vectors, list):
        return None
    items = []
    for i, vec in enumerate(vectors):
        value: Any = vec
        if encoding == "base64":
            value = base64.b64encode(array("f", vec).tobytes()).decode()
        items.append({"object": "embedding", "index": i, "embedding": value})
    prompt = data.get("prompt_eval_count")
    tokens = prompt if isinstance(prompt, int) else 0
    return {"object": "list", "data": items, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
