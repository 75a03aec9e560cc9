"""OpenAI response shapes built by translating backends (TGI native, Ollama).

``Shape`` fixes the id/model/created of one response so every chunk of a stream carries the
same values, as OpenAI's do. Chat responses use ``chat.completion`` / ``chat.completion.chunk``
objects; completions use ``text_completion`` for both the body and its chunks.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from backends.base import Chunk, Endpoint, Usage
from backends.errors import BackendHTTPError


def new_id(endpoint: Endpoint) -> str:
    prefix = "chatcmpl" if endpoint == "chat" else "cmpl"
    return f"{prefix}-{uuid.uuid4().hex}"


def reject(backend: str, message: str, param: str | None = None) -> BackendHTTPError:
    """A request the upstream cannot serve, reported as the client's error (400)."""
    return BackendHTTPError(backend, 400, message, error_type="invalid_request_error", param=param)


def text_of(backend: str, content: object) -> str:
    """OpenAI message content (a string or a list of parts) as plain text; non-text parts are
    rejected by the caller's upstream kind, so they raise here."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise reject(backend, "only text content parts are supported by this backend",
                             "messages")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise reject(backend, "message content must be a string or a list of parts", "messages")


def check_single_choice(backend: str, body: dict[str, Any]) -> None:
    for key in ("n", "best_of"):
        value = body.get(key)
        if value is not None and value != 1:
            raise reject(backend, f"{key}={value} is not supported by this backend (only 1)", key)


@dataclass(slots=True)
class Shape:
    endpoint: Endpoint
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            self.id = new_id(self.endpoint)

    @property
    def _object(self) -> str:
        return "chat.completion" if self.endpoint == "chat" else "text_completion"

    def body(self, text: str, finish_reason: str | None, usage: Usage | None,
             tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish_reason}
        if self.endpoint == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                message["tool_calls"] = tool_calls
                message["content"] = text or None
            choice["message"] = message
        else:
            choice["text"] = text
        out: dict[str, Any] = {"id": self.id, "object": self._object, "created": self.created,
                               "model": self.model, "choices": [choice]}
        if usage is not None:
            out["usage"] = usage.as_dict()
        return out

    def chunk(self, text: str | None = None, *, role: bool = False, finish_reason: str | None = None,
              tool_calls: list[dict[str, Any]] | None = None) -> Chunk:
        choice: dict[str, Any] = {"index": 0}
        if self.endpoint == "chat":
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            if tool_calls:
                delta["tool_calls"] = tool_calls
            choice["delta"] = delta
            obj = "chat.completion.chunk"
        else:
            choice["text"] = text or ""
            obj = "text_completion"
        choice["logprobs"] = None
        choice["finish_reason"] = finish_reason
        payload = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                   "choices": [choice]}
        return Chunk(orjson.dumps(payload), payload)

    def trailer(self, usage: Usage) -> Chunk:
        obj = "chat.completion.chunk" if self.endpoint == "chat" else "text_completion"
        payload = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                   "choices": [], "usage": usage.as_dict()}
        return Chunk(orjson.dumps(payload), payload, usage=usage, usage_only=True)


class StopTrimmer:
    """Holds back streamed text that could be the start of a stop sequence, so stop sequences
    never reach the client (OpenAI semantics; TGI includes the matched stop in its output)."""

    __slots__ = ("_buf", "_stops")

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._buf = ""

    def feed(self, text: str) -> str:
        self._buf += text
        if not self._stops:
            out, self._buf = self._buf, ""
            return out
        keep = 0
        for stop in self._stops:
            for k in range(min(len(stop), len(self._buf)), keep, -1):
                if self._buf.endswith(stop[:k]):
                    keep = k
                    break
        out = self._buf[: len(self._buf) - keep]
        self._buf = self._buf[len(self._buf) - keep:]
        return out

    def finish(self) -> str:
        """The held-back rest, cut at the first stop sequence it contains."""
        out, self._buf = self._buf, ""
        return trim_stop(out, self._stops)


def trim_stop(text: str, stops: list[str]) -> str:
    cut = len(text)
    for stop in stops:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]
