"""The pricing catalogue: USD per token for each gateway model.

Order of precedence: ``models.<name>.price`` in the YAML (per million tokens), then
``admin.gpu_prices.<name>`` (per GPU-hour, turned into per token through the declared
throughput; charged on output tokens, prompt tokens are free in that model), then litellm's
model price map looked up by the model name and by its backends' upstream model names.

The litellm map is the JSON file litellm itself loads when ``LITELLM_LOCAL_MODEL_COST_MAP`` is
set; it is read directly (``find_spec``, no ``import litellm``, which costs seconds) and only
when the catalogue is built, off the request path. A model with no price costs 0 and is
logged once.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from configs import GatewayConfig

log = logging.getLogger("turnout.admin.pricing")
_MAP_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True, slots=True)
class TokenPrice:
    input_usd: float  # per token
    output_usd: float
    source: str

    def cost_nusd(self, prompt_tokens: int, completion_tokens: int) -> int:
        return math.ceil((prompt_tokens * self.input_usd + completion_tokens * self.output_usd) * 1e9)


FREE = TokenPrice(0.0, 0.0, "unpriced")


def load_litellm_map() -> Mapping[str, Any]:
    """litellm's bundled price map, or {} when litellm is not installed."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / _MAP_FILE
    if not path.exists():
        return {}
    data = orjson.loads(path.read_bytes())
    return data if isinstance(data, dict) else {}


def _from_map(entry: Any) -> TokenPrice | None:
    if not isinstance(entry, dict):
        return None
    inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if not isinstance(inp, (int, float)) and not isinstance(out, (int, float)):
        return None
    return TokenPrice(float(inp or 0.0), float(out or 0.0), "litellm")


class Catalogue:
    def __init__(self, prices: Mapping[str, TokenPrice]) -> None:
        self._prices = dict(prices)
        self._warned: set[str] = set()

    def price(self, model: str) -> TokenPrice:
        price = self._prices.get(model)
        if price is None:
            if model not in self._warned and len(self._warned) < 1000:
                self._warned.add(model)
                log.warning("no price for model %r: usage is metered at 0 USD", model)
            return FREE
        return price

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {m: {"input_per_mtok": p.input_usd * 1e6, "output_per_mtok": p.output_usd * 1e6,
                    "source": p.source} for m, p in sorted(self._prices.items())}


def _candidates(cfg: GatewayConfig, model: str) -> list[str]:
    names = [model]
    for dep in cfg.models[model].deployments:
        backend = cfg.backends.get(dep.backend)
        if backend is not None and backend.model:
            names += [backend.model, backend.model.split("/", 1)[-1]]
    return names


def build_catalogue(cfg: GatewayConfig, price_map: Mapping[str, Any]) -> Catalogue:
    gpu = cfg.admin.gpu_prices if cfg.admin is not None else {}
    prices: dict[str, TokenPrice] = {}
    for name, model in cfg.models.items():
        if model.price is not None:
            prices[name] = TokenPrice(model.price.input_per_mtok / 1e6, model.price.output_per_mtok / 1e6,
                                      "config")
        elif name in gpu:
            prices[name] = TokenPrice(0.0, gpu[name].usd_per_token, "gpu_hour")
        else:
            for candidate in _candidates(cfg, name):
                found = _from_map(price_map.get(candidate))
                if found is not None:
                    prices[name] = found
                    break
    return Catalogue(prices)
