"""Cache keys and scopes.

A *scope* is everything that must match before two requests may share an answer at all:
tenant, model alias, system prompt(s), tools, and every output-changing parameter. It is a
readable prefix ``{tenant}|{model}|{digest}`` so invalidation by tenant, model or scope is a
prefix delete. The *exact key* adds the normalised conversation: ``{scope}|e|{digest}``.
Semantic entries live under ``{scope}|s|{id}``.

Contract: two bodies that can produce different outputs never share a key (unknown parameters
are part of the key: only fields known not to change the output are dropped); bodies that
differ only in field order, whitespace at the ends of messages, ``stream``/``stream_options``,
``user`` or ``metadata`` share one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# Fields that do not change the generated answer (stream is replayed from the stored body).
NEUTRAL_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "user", "metadata", "store"})
SCOPE_FIELDS = frozenset({"tools", "tool_choice", "functions", "function_call", "parallel_tool_calls"})


@dataclass(frozen=True, slots=True)
class RequestKey:
    scope: str  # "{tenant}|{model}|{digest}"
    exact: str  # "{scope}|e|{digest}"
    deterministic: bool
    semantic_text: str | None  # the single user question when the request is single-turn
    has_tools: bool


def _digest(value: object) -> str:
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _clean(part: str) -> str:
    return part.replace("|", "_")


def _content(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Sequence):  # content parts: keep order, strip text parts
        return [
            {**p, "text": p["text"].strip()} if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            else p for p in value
        ]
    return value


def normalise_message(msg: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in msg.items() if v is not None}
    if "content" in out:
        out["content"] = _content(out["content"])
    return out


def is_deterministic(body: Mapping[str, Any]) -> bool:
    """Temperature 0 or a fixed seed (OpenAI's default temperature is 1)."""
    temperature = body.get("temperature", 1.0)
    return body.get("seed") is not None or (isinstance(temperature, (int, float)) and temperature == 0)


def text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, Sequence):
        texts = [p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        if len(texts) == len(content):
            return " ".join(t.strip() for t in texts)
    return None  # images or other parts: not eligible for semantic matching


def request_key(tenant: str, model: str, body: Mapping[str, Any]) -> RequestKey:
    messages = [normalise_message(m) for m in body.get("messages", ())]
    system = [m for m in messages if m.get("role") in ("system", "developer")]
    convo = [m for m in messages if m.get("role") not in ("system", "developer")]
    params = {k: v for k, v in body.items() if k not in NEUTRAL_FIELDS}
    scope = f"{_clean(tenant)}|{_clean(model)}|{_digest([system, params])}"
    semantic_text = None
    if len(convo) == 1 and convo[0].get("role") == "user":
        semantic_text = text_of(convo[0].get("content"))
    return RequestKey(
        scope=scope, exact=f"{scope}|e|{_digest(convo)}", deterministic=is_deterministic(body),
        semantic_text=semantic_text or None, has_tools=bool(SCOPE_FIELDS & params.keys()),
    )


def tenant_prefix(tenant: str, model: str | None = None) -> str:
    return f"{_clean(tenant)}|" if model is None else f"{_clean(tenant)}|{_clean(model)}|"
