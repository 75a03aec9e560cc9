"""OpenAI wire shapes for the mock backend: whole responses, stream chunks and embeddings.

Stream order (``render_chunks``), the one OpenAI documents for chat and what vLLM sends:
1. per choice, a role chunk (``delta: {"role": "assistant", "content": ""}``; for a tool call the
   role chunk also opens ``tool_calls`` with id, name and empty arguments) — chat only;
2. content chunks, one per token per choice (tool calls: argument fragments);
3. per choice, a chunk with an empty delta and its ``finish_reason``;
4. when ``stream_options.include_usage`` is true, a chunk with ``choices: []`` and ``usage``
   (and every earlier chunk carries ``"usage": null``).
Each chunk is paired with the number of token-times to wait before sending it, so callers can
pace the stream; choices generate in parallel, so a step costs one token-time whatever ``n``.
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from backends.mock_engine import ChoicePlan, Plan, count_tokens, invalid
from configs.schema import MockSpec

_PREFIX = {"chat": "chatcmpl-", "completion": "cmpl-"}
_CHUNK_OBJECT = {"chat": "chat.completion.chunk", "completion": "text_completion"}
_OBJECT = {"chat": "chat.completion", "completion": "text_completion"}


def new_id(prefix: str) -> str:
    return f"{prefix}{random.getrandbits(96):024x}"


def _message(choice: ChoicePlan) -> dict[str, Any]:
    if choice.tool_call is not None:
        return {"role": "assistant", "content": None, "refusal": None,
                "tool_calls": [choice.tool_call.message_entry()]}
    return {"role": "assistant", "content": "".join(choice.pieces), "refusal": None}


def _whole_choice(plan: Plan, index: int, choice: ChoicePlan) -> dict[str, Any]:
    if plan.kind == "chat":
        return {"index": index, "message": _message(choice), "logprobs": None,
                "finish_reason": choice.finish_reason}
    return {"index": index, "text": "".join(choice.pieces), "logprobs": None,
            "finish_reason": choice.finish_reason}


def render(plan: Plan, rid: str | None = None, created: int | None = None) -> dict[str, Any]:
    """The non-streaming response body."""
    return {
        "id": rid or new_id(_PREFIX[plan.kind]),
        "object": _OBJECT[plan.kind],
        "created": int(time.time()) if created is None else created,
        "model": plan.model,
        "choices": [_whole_choice(plan, i, c) for i, c in enumerate(plan.choices)],
        "usage": plan.usage(),
        "system_fingerprint": "fp_mock",
    }


def _opening_delta(choice: ChoicePlan) -> dict[str, Any]:
    call = choice.tool_call
    if call is None:
        return {"role": "assistant", "content": ""}
    return {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}},
    ]}


def _piece_delta(choice: ChoicePlan, piece: str) -> dict[str, Any]:
    if choice.tool_call is None:
        return {"content": piece}
    return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}


class _ChunkMaker:
    def __init__(self, plan: Plan, rid: str, created: int) -> None:
        self.plan = plan
        self.head = {"id": rid, "object": _CHUNK_OBJECT[plan.kind], "created": created, "model": plan.model}

    def chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        out = {**self.head, "system_fingerprint": "fp_mock", "choices": [choice]}
        if self.plan.include_usage:
            out["usage"] = None
        return out

    def choice(self, index: int, choice: ChoicePlan, piece: str | None, finish: str | None) -> dict[str, Any]:
        if self.plan.kind == "completion":
            text = piece or ""
            return self.chunk({"text": text, "index": index, "logprobs": None, "finish_reason": finish})
        if piece is None:
            delta: dict[str, Any] = {} if finish else _opening_delta(choice)
        else:
            delta = _piece_delta(choice, piece)
        return self.chunk({"index": index, "delta": delta, "logprobs": None, "finish_reason": finish})

    def usage(self) -> dict[str, Any]:
        return {**self.head, "system_fingerprint": "fp_mock", "choices": [], "usage": self.plan.usage()}


def render_chunks(
    plan: Plan, rid: str | None = None, created: int | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(token-times to wait first, chunk) pairs in stream order; see the module docstring."""
    created = int(time.time()) if created is None else created
    maker = _ChunkMaker(plan, rid or new_id(_PREFIX[plan.kind]), created)
    choices = list(enumerate(plan.choices))
    if plan.kind == "chat":
        for index, choice in choices:
            yield 0, maker.choice(index, choice, None, None)
    for step in range(plan.max_pieces):
        cost = 1
        for index, choice in choices:
            if step < len(choice.pieces):
                yield cost, maker.choice(index, choice, choice.pieces[step], None)
                cost = 0
    for index, choice in choices:
        yield 0, maker.choice(index, choice, None, choice.finish_reason)
    if plan.include_usage:
        yield 0, maker.usage()


def _inputs(body: dict[str, Any]) -> list[str]:
    raw = body.get("input")
    if isinstance(raw, str) and raw:
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, str) and x for x in raw):
            return list(raw)
        if all(isinstance(x, int) for x in raw):
            return [" ".join(map(str, raw))]
        if all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in raw):
            return [" ".join(map(str, x)) for x in raw]
    raise invalid("'input' must be a non-empty string, array of strings, or token arrays", "input")


def unit_vector(text: str, dim: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A deterministic float32 unit vector for ``text``."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    vec = np.random.default_rng(seed).standard_normal(dim)
    return (vec / np.linalg.norm(vec)).astype(np.float32)


def _dimensions(body: dict[str, Any], spec: MockSpec) -> int:
    dims = body.get("dimensions")
    if dims is None:
        return spec.embedding_dim
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= spec.embedding_dim:
        raise invalid(f"'dimensions' must be an integer between 1 and {spec.embedding_dim}", "dimensions")
    return dims


def embeddings(body: dict[str, Any], spec: MockSpec, default_model: str = "mock") -> dict[str, Any]:
    """The embeddings response body; raises ``MockError`` like a real server would."""
    texts = _inputs(body)
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dim = _dimensions(body, spec)
    tokens = [max(1, count_tokens(t)) for t in texts]
    if max(tokens) > spec.context_window:
        raise invalid(f"input too long: {max(tokens)} tokens > {spec.context_window}", "input")
    data = []
    for i, text in enumerate(texts):
        vec = unit_vector(text, spec.embedding_dim)[:dim]
        vec = vec / np.linalg.norm(vec) if dim < spec.embedding_dim else vec
        raw = vec.astype("<f4").tobytes()
        value: object = vec.tolist() if fmt == "float" else base64.b64encode(raw).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    model = body.get("model")
    return {
        "object": "list", "data": data, "model": model if isinstance(model, str) and model else default_model,
        "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)},
    }
