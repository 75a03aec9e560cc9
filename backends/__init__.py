"""Talking to upstreams: one module per kind behind the ``Backend`` Protocol."""

from backends.base import (
    Backend,
    BackendRequest,
    BackendResponse,
    Chunk,
    EmbeddingRequest,
    Health,
    SupportsEmbeddings,
    Usage,
)
from backends.errors import (
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
)
from backends.registry import BACKEND_CLASSES, build_backend

__all__ = [
    "BACKEND_CLASSES",
    "Backend",
    "BackendError",
    "BackendHTTPError",
    "BackendProtocolError",
    "BackendRequest",
    "BackendResponse",
    "BackendTimeout",
    "BackendUnavailable",
    "Chunk",
    "EmbeddingRequest",
    "Health",
    "SupportsEmbeddings",
    "Usage",
    "build_backend",
]
