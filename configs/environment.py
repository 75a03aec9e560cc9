"""Process environment for offline operation. Environment access lives in configs/ only.

tiktoken downloads its BPE files on first use unless ``TIKTOKEN_CACHE_DIR`` points at a copy;
litellm bundles cl100k_base and o200k_base under ``litellm_core_utils/tokenizers`` (found
without importing litellm, which costs ~3.5 s). litellm also fetches its price map at import
unless ``LITELLM_LOCAL_MODEL_COST_MAP`` is set. Call ``prepare_offline_environment()`` once at
process start, before tiktoken or litellm load anything.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def bundled_tiktoken_dir() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return path if path.is_dir() else None


def prepare_offline_environment() -> None:
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        bundled = bundled_tiktoken_dir()
        if bundled is not None:
            os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def env_value(name: str, default: str | None = None) -> str | None:
    """Read one environment variable (tests and CLIs use this instead of os.environ)."""
    return os.environ.get(name, default)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prometheus_multiproc_dir() -> str | None:
    """The directory prometheus-client shares between worker processes, when set."""
    return os.environ.get(MULTIPROC_ENV) or None


def set_prometheus_multiproc_dir(path: str) -> None:
    """Set before worker processes start (they inherit it) and before prometheus_client is
    imported in this process: the client reads it at import."""
    os.environ[MULTIPROC_ENV] = path
