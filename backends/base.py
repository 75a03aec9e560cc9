"""The backend contract.

A backend talks to one upstream kind and speaks OpenAI's wire format to the gateway: requests
arrive as OpenAI request bodies (``model`` already replaced by the upstream's name) and come
back as OpenAI response bodies or ``chat.completion.chunk`` events. Translation for non-OpenAI
upstreams happens inside the backend module.

Contracts:
- ``complete`` returns a whole response or raises a ``BackendError``.
- ``stream`` is an async generator. An error before the first chunk is raised from the first
  ``__anext__``; later errors are raised mid-iteration. Closing the generator (``aclose`` or
  cancellation of the consumer) must abort the upstream request and release its connection.
- ``health`` never raises; it reports.
- ``aclose`` releases what the backend opened itself; the shared ``ClientSession`` belongs to
  the gateway and is closed by it.
Extra capabilities are separate Protocols, checked once when backends are built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Endpoint = Literal["chat", "completion"]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_openai(cls, raw: object) -> Usage | None:
        if not isinstance(raw, dict):
            return None
        prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
        if not isinstance(prompt, int):
            return None
        return cls(prompt, completion if isinstance(completion, int) else 0)


@dataclass(slots=True)
class BackendRequest:
    """One call to one backend. ``deadline`` is an absolute ``loop.time()`` (client deadline or
    None); the backend applies the tighter of it and its own timeouts."""

    endpoint: Endpoint
    body: dict[str, Any]
    stream: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    deadline: float | None = None


@dataclass(slots=True)
class EmbeddingRequest:
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    deadline: float | None = None


@dataclass(slots=True)
class BackendResponse:
    body: dict[str, Any]
    usage: Usage | None = None


@dataclass(slots=True)
class Chunk:
    """One streamed event. ``data`` is the exact JSON payload to forward (no re-encoding for
    pass-through upstreams); ``payload`` is the same, parsed. A chunk with ``usage_only`` set is
    the ``include_usage`` trailer (empty ``choices``)."""

    data: bytes
    payload: dict[str, Any]
    usage: Usage | None = None
    usage_only: bool = False


@dataclass(slots=True, frozen=True)
class Health:
    ok: bool
    detail: str = ""
    # Load signals, when the upstream exposes them (vLLM /metrics); None when unknown.
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None


class Backend(Protocol):
    name: str

    async def complete(self, req: BackendRequest) -> BackendResponse: ...

    def stream(self, req: BackendRequest) -> AsyncIterator[Chunk]: ...

    async def health(self) -> Health: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SupportsEmbeddings(Protocol):
    async def embed(self, req: EmbeddingRequest) -> BackendResponse: ...
