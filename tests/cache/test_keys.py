from __future__ import annotations

from typing import Any

from cache.keys import is_deterministic, request_key


def body(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "m", "temperature": 0,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
    }
    base.update(over)
    return base


def test_key_is_stable_under_neutral_changes() -> None:
    a = request_key("t", "m", body())
    b = request_key("t", "m", {**body(), "stream": True, "user": "u1", "stream_options": {"x": 1}})
    reordered = dict(reversed(list(body().items())))
    c = request_key("t", "m", reordered)
    padded = body(messages=[{"role": "system", "content": "be brief "}, {"role": "user", "content": " hi there"}])
    assert a == b == c
    assert request_key("t", "m", padded).exact == a.exact


def test_key_changes_with_every_output_changing_input() -> None:
    base = request_key("t", "m", body())
    variants = [
        request_key("t2", "m", body()), request_key("t", "m2", body()),
        request_key("t", "m", body(max_tokens=5)), request_key("t", "m", body(top_p=0.5)),
        request_key("t", "m", body(stop=["x"])), request_key("t", "m", body(some_new_param=1)),
        request_key("t", "m", body(tools=[{"type": "function", "function": {"name": "f"}}])),
        request_key("t", "m", body(messages=[{"role": "system", "content": "be long"},
                                             {"role": "user", "content": "hi there"}])),
        request_key("t", "m", body(messages=[{"role": "system", "content": "be brief"},
                                             {"role": "user", "content": "hi there!"}])),
    ]
    assert len({v.exact for v in variants} | {base.exact}) == len(variants) + 1


def test_scope_prefix_names_tenant_and_model() -> None:
    key = request_key("acme", "llama", body())
    assert key.exact.startswith("acme|llama|") and key.exact.startswith(key.scope)
    assert request_key("a|b", "m", body()).scope.startswith("a_b|m|")  # no scope forging


def test_determinism_and_semantic_text() -> None:
    assert is_deterministic(body()) and is_deterministic(body(temperature=0.7, seed=1))
    assert not is_deterministic({"messages": []})
    assert request_key("t", "m", body()).semantic_text == "hi there"
    multi = body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                           {"role": "user", "content": "c"}])
    assert request_key("t", "m", multi).semantic_text is None
