"""Cloud providers through litellm (``kind: litellm``, ``model: "anthropic/claude-sonnet-4"``).

litellm is imported lazily on first use (about 3.5 s and a large memory footprint), after
``configs.environment.prepare_offline_environment()`` has pointed it at its bundled price map and
tokenizers (environment access stays in configs/). It costs ~3 ms of CPU per call, so it is for
providers without an OpenAI-compatible endpoint, never for vLLM/TGI/Ollama.

Calls: ``litellm.acompletion`` (chat), ``litellm.atext_completion`` (completions) and
``litellm.aembedding``, with ``model=cfg.model``, ``api_key=cfg.api_key``, ``api_base=cfg.url``,
``max_retries=0`` (retries belong to the gateway's executor) and ``timeout`` = what is left of
the call's budget. Results are litellm pydantic objects dumped to plain OpenAI-shaped dicts.
Streams ask for ``stream_options.include_usage`` and end with a usage-only trailer when the
provider reports usage. Closing a stream closes litellm's stream (and its HTTP response).

Error mapping (litellm exceptions subclass the openai SDK's):
``Timeout`` → ``BackendTimeout(total)``; ``APIConnectionError`` → ``BackendUnavailable``;
``ContextWindowExceededError`` → 400 with code ``context_length_exceeded``;
``ContentPolicyViolationError`` → 400 with code ``content_filter``; every other error with a
``status_code`` (``RateLimitError`` 429, ``BadRequestError`` 400, ``AuthenticationError`` 401,
``NotFoundError`` 404, ``ServiceUnavailableError`` 503, ...) → ``BackendHTTPError`` with that
status and ``Retry-After`` when the provider sent one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from types import ModuleType
from typing import Any

import aiohttp
import orjson

from backends._native_http import Budget, forward_headers
from backends.base import BackendRequest, BackendResponse, Chunk, EmbeddingRequest, Health, Usage
from backends.errors import (
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
)
from configs.environment import prepare_offline_environment
from configs.schema import BackendConfig

_DROPPED = frozenset({"model", "stream", "stream_options"})
_PREFIX = re.compile(r"^litellm\.\w+:\s*")


def load_litellm() -> ModuleType:
    prepare_offline_environment()
    import litellm  # lazy on purpose: ~3.5 s import

    litellm.suppress_debug_info = True  # no "Give Feedback" banners on stdout per error
    return litellm


class LiteLLMBackend:
    def __init__(self, cfg: BackendConfig, session: aiohttp.ClientSession) -> None:
        if not cfg.model:
            raise ValueError(f"backend {cfg.name}: kind litellm needs a model")
        self.name = cfg.name
        self._cfg = cfg
        self._model = cfg.model

    def _kwargs(self, body: Mapping[str, Any], headers: Mapping[str, str], budget: Budget) -> dict[str, Any]:
        kwargs = {k: v for k, v in body.items() if k not in _DROPPED}
        kwargs.update(model=self._model, api_key=self._cfg.api_key, api_base=self._cfg.url,
                      timeout=max(budget.limit("total")[1], 0.001), max_retries=0)
        extra = forward_headers(self._cfg.headers, headers)
        if extra:
            kwargs["extra_headers"] = extra
        return kwargs

    async def complete(self, req: BackendRequest) -> BackendResponse:
        litellm = load_litellm()
        budget = Budget(self.name, self._cfg.timeouts, req.deadline)
        kwargs = self._kwargs(req.body, req.headers, budget)
        call = litellm.acompletion if req.endpoint == "chat" else litellm.atext_completion
        return await self._whole(litellm, budget, call(stream=False, **kwargs))

    async def stream(self, req: BackendRequest) -> AsyncIterator[Chunk]:
        litellm = load_litellm()
        budget = Budget(self.name, self._cfg.timeouts, req.deadline)
        kwargs = self._kwargs(req.body, req.headers, budget)
        call = litellm.acompletion if req.endpoint == "chat" else litellm.atext_completion
        try:
            wrapper = await budget.wait("first_token", call(
                stream=True, stream_options={"include_usage": True}, **kwargs))
        except BackendError:
            raise
        except Exception as exc:
            raise self._map(litellm, exc, budget) from exc
        try:
            async for chunk in self._chunks(litellm, wrapper, budget):
                yield chunk
        finally:
            close = getattr(wrapper, "aclose", None)
            if close is not None:
                await close()

    async def _chunks(self, litellm: ModuleType, wrapper: Any, budget: Budget) -> AsyncIterator[Chunk]:
        it = wrapper.__aiter__()
        phase: Any = "first_token"
        pending: tuple[Usage, dict[str, Any]] | None = None
        while True:
            try:
                item = await budget.wait(phase, it.__anext__())
            except StopAsyncIteration:
                break
            except BackendError:
                raise
            except Exception as exc:
                raise self._map(litellm, exc, budget) from exc
            phase = "idle"
            payload = _plain(self.name, item)
            usage = Usage.from_openai(payload.pop("usage", None))
            if usage is not None and not payload.get("choices"):
                pending = None
                payload["usage"] = usage.as_dict()
                yield Chunk(orjson.dumps(payload), payload, usage=usage, usage_only=True)
                continue
            if usage is not None:
                pending = (usage, payload)
            if payload.get("choices"):
                yield Chunk(orjson.dumps(payload), payload)
        if pending is not None:
            usage, last = pending
            trailer: dict[str, Any] = {k: last.get(k) for k in ("id", "object", "created", "model")}
            trailer.update(choices=[], usage=usage.as_dict())
            yield Chunk(orjson.dumps(trailer), trailer, usage=usage, usage_only=True)

    async def embed(self, req: EmbeddingRequest) -> BackendResponse:
        litellm = load_litellm()
        budget = Budget(self.name, self._cfg.timeouts, req.deadline)
        kwargs = self._kwargs(req.body, req.headers, budget)
        return await self._whole(litellm, budget, litellm.aembedding(**kwargs))

    async def _whole(self, litellm: Any, budget: Budget, call: Awaitable[Any]) -> BackendResponse:
        """One non-streaming call, bounded by the total budget (not first_token: the answer comes
        whole, after the generation), its errors mapped to backends.errors."""
        try:
            result = await budget.wait("total", call)
        except BackendError:
            raise
        except Exception as exc:
            raise self._map(litellm, exc, budget) from exc
        body = _plain(self.name, result)
        return BackendResponse(body, Usage.from_openai(body.get("usage")))

    async def health(self) -> Health:
        """Cloud providers are not probed (a probe would cost a paid call); passive health
        (errors seen by the executor) is what counts for them."""
        return Health(True, "not probed (litellm provider)")

    async def aclose(self) -> None:
        """Nothing of its own to close; litellm's clients are process-wide and close at exit."""

    def _map(self, litellm: ModuleType, exc: Exception, budget: Budget) -> BackendError:
        return map_litellm_error(self.name, litellm.exceptions, exc, self._cfg.timeouts.total)


def map_litellm_error(backend: str, ex: Any, exc: Exception, total: float) -> BackendError:
    """litellm (openai SDK) exceptions → the backend error tree; ``ex`` is ``litellm.exceptions``."""
    message = _PREFIX.sub("", str(getattr(exc, "message", None) or exc))
    chain = _chain(exc)
    if any(isinstance(e, ex.Timeout | ex.openai.APITimeoutError) for e in chain):
        return BackendTimeout(backend, "total", total)
    # litellm re-wraps transport failures (e.g. as InternalServerError "Connection error."):
    # the cause chain tells what really happened.
    if any(isinstance(e, ex.openai.APIConnectionError | ConnectionError) for e in chain):
        return BackendUnavailable(backend, message)
    code = None
    if isinstance(exc, ex.ContextWindowExceededError):
        code = "context_length_exceeded"
    elif isinstance(exc, ex.ContentPolicyViolationError):
        code = "content_filter"
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        return BackendProtocolError(backend, f"{type(exc).__name__}: {message}")
    error_type = "invalid_request_error" if status == 400 else None
    return BackendHTTPError(backend, status, message, error_type=error_type, code=code,
                            retry_after=_retry_after(exc))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (``__cause__``/``__context__``/litellm's ``original_exception``)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        original = getattr(e, "original_exception", None)
        todo += [e.__cause__, e.__context__, original if isinstance(original, BaseException) else None]
    return seen


def _retry_after(exc: Exception) -> float | None:
    candidates: tuple[Any, ...] = (getattr(exc, "litellm_response_headers", None), getattr(exc, "headers", None),
                                   getattr(getattr(exc, "response", None), "headers", None))
    for headers in candidates:
        value = headers.get("retry-after") if isinstance(headers, Mapping) or hasattr(headers, "get") else None
        if value is not None:
            try:
                return max(float(value), 0.0)
            except ValueError:
                return None
    return None


def _plain(backend: str, obj: Any) -> dict[str, Any]:
    """A litellm pydantic result as a plain dict (private ``_hidden_params`` dropped)."""
    dump = getattr(obj, "model_dump", None)
    data = dump() if callable(dump) else obj
    if not isinstance(data, dict):
        raise BackendProtocolError(backend, f"litellm returned {type(obj).__name__}, not a response object")
    return {k: v for k, v in data.items() if not k.startswith("_")}
