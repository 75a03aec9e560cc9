from __future__ import annotations

import pytest

from admin.pricing import FREE, build_catalogue, load_litellm_map
from configs import load_text


def test_precedence_config_then_gpu_then_litellm() -> None:
    cfg = load_text("""
backends:
  oai: {kind: openai, url: "http://127.0.0.1:1", model: gpt-4o-mini}
  gpu: {kind: vllm, url: "http://127.0.0.1:2", model: meta-llama/Llama-3.1-8B-Instruct}
models:
  cheap: {deployments: [oai]}
  pinned: {deployments: [oai], price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
  llama: {deployments: [gpu]}
  mystery: {deployments: [gpu]}
admin:
  gpu_prices: {llama: {usd_per_gpu_hour: 3.6, tokens_per_s: 1000}}
""")
    price_map = load_litellm_map()
    assert "gpt-4o-mini" in price_map
    cat = build_catalogue(cfg, price_map)
    assert cat.price("cheap").source == "litellm"
    assert cat.price("cheap").input_usd == price_map["gpt-4o-mini"]["input_cost_per_token"]
    pinned = cat.price("pinned")
    assert (pinned.source, pinned.cost_nusd(1_000_000, 500_000)) == ("config", 2 * 10**9)
    llama = cat.price("llama")
    assert llama.source == "gpu_hour" and llama.output_usd == pytest.approx(1e-6)
    assert cat.price("mystery") is FREE and cat.price("mystery").cost_nusd(10, 10) == 0
