"""Backend kinds → implementing classes, imported lazily by dotted path.

Every backend class is constructed as ``cls(cfg: BackendConfig, session: aiohttp.ClientSession)``.
Lazy import keeps optional heavy dependencies (litellm: ~3.5 s import) off processes that do not
configure them; a missing module fails at build time with the backend's config path.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import aiohttp

from backends.base import Backend, SupportsEmbeddings
from configs.schema import BackendConfig

BACKEND_CLASSES: Mapping[str, str] = {
    "openai": "backends.openai_compat:OpenAIBackend",
    "vllm": "backends.openai_compat:OpenAIBackend",
    "tgi": "backends.tgi:TGIBackend",
    "ollama": "backends.ollama:OllamaBackend",
    "litellm": "backends.litellm_backend:LiteLLMBackend",
    "mock": "backends.mock:MockBackend",
}


def build_backend(cfg: BackendConfig, session: aiohttp.ClientSession) -> Backend:
    module_name, _, class_name = BACKEND_CLASSES[cfg.kind].partition(":")
    module = importlib.import_module(module_name)
    backend: Backend = getattr(module, class_name)(cfg, session)
    return backend


def supports_embeddings(backend: Backend) -> bool:
    return isinstance(backend, SupportsEmbeddings)
