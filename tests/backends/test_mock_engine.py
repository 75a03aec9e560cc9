"""The mock engine: deterministic generation and exact OpenAI shapes."""

from __future__ import annotations

import base64
import math
import struct
from random import Random
from typing import Any

import orjson
import pytest

from backends.mock_engine import (
    MockError,
    count_tokens,
    draw_failure,
    http_failure,
    plan_chat,
    plan_completion,
)
from backends.mock_render import embeddings, render, render_chunks
from configs.schema import MockSpec

SPEC = MockSpec(output_tokens=8)
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"}, "detailed": {"type": "boolean"},
    }, "required": ["city", "unit", "days"]},
}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def chat(content: str = "hello world", **extra: Any) -> dict[str, Any]:
    return {"model": "m1", "messages": [{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": content}], **extra}


def test_chat_completion_shape() -> None:
    out = render(plan_chat(chat(), SPEC), created=123)
    assert set(out) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert out["id"].startswith("chatcmpl-") and out["object"] == "chat.completion"
    assert out["created"] == 123 and out["model"] == "m1"
    [choice] = out["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop" and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant" and choice["message"]["refusal"] is None
    assert len(choice["message"]["content"].split()) == 8
    # prompt: "be brief hello world" = 4 words -> round(5.2) = 5
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}


def test_output_is_deterministic_and_prompt_dependent() -> None:
    a1 = render(plan_chat(chat("alpha"), SPEC))["choices"][0]["message"]["content"]
    a2 = render(plan_chat(chat("alpha"), SPEC))["choices"][0]["message"]["content"]
    b = render(plan_chat(chat("beta"), SPEC))["choices"][0]["message"]["content"]
    assert a1 == a2 != b


def test_default_model_when_request_has_none() -> None:
    body = chat()
    del body["model"]
    assert render(plan_chat(body, SPEC, "fallback-model"))["model"] == "fallback-model"


def test_content_parts_count_as_text() -> None:
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "one two three"}, {"type": "image_url", "image_url": {"url": "x"}},
    ]}]}
    assert plan_chat(body, SPEC).prompt_tokens == round(3 * 1.3)


@pytest.mark.parametrize(("limit_key"), ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates_with_length(limit_key: str) -> None:
    out = render(plan_chat({**chat(), limit_key: 3}, SPEC))
    assert len(out["choices"][0]["message"]["content"].split()) == 3
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 3


def test_max_tokens_above_output_is_a_normal_stop() -> None:
    out = render(plan_chat(chat(max_tokens=100), SPEC))
    assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["completion_tokens"] == 8


def test_stop_sequence_cuts_before_it() -> None:
    full = render(plan_chat(chat(), SPEC))["choices"][0]["message"]["content"]
    third = full.split()[2]
    out = render(plan_chat(chat(stop=["zzz", " " + third]), SPEC))
    choice = out["choices"][0]
    assert choice["message"]["content"] == " ".join(full.split()[:2])
    assert choice["finish_reason"] == "stop" and out["usage"]["completion_tokens"] == 2


def test_n_choices_differ_and_usage_sums() -> None:
    out = render(plan_chat(chat(n=3), SPEC))
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    texts = {c["message"]["content"] for c in out["choices"]}
    assert len(texts) == 3
    assert out["usage"]["completion_tokens"] == 24


@pytest.mark.parametrize("body", [
    {"messages": []}, {"messages": "hi"}, {}, {"messages": [1]},
    chat(n=0), chat(max_tokens=0), chat(max_tokens="5"), chat(stop=5), chat(tools="x"),
])
def test_invalid_chat_requests_are_400(body: dict[str, Any]) -> None:
    with pytest.raises(MockError) as info:
        plan_chat(body, SPEC)
    assert info.value.status == 400 and info.value.error_type == "invalid_request_error"


def test_prompt_over_context_window() -> None:
    with pytest.raises(MockError) as info:
        plan_chat(chat("word " * 100), MockSpec(context_window=50))
    err = info.value
    assert err.status == 400 and err.code == "context_length_exceeded" and err.param == "messages"
    assert err.body()["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 50 tokens" in err.message


def _chunks(body: dict[str, Any], spec: MockSpec = SPEC) -> list[tuple[int, dict[str, Any]]]:
    return list(render_chunks(plan_chat(body, spec), created=7))


def test_stream_chunk_order_and_fields() -> None:
    chunks = _chunks(chat(stream=True, stream_options={"include_usage": True}))
    payloads = [c for _, c in chunks]
    assert len({p["id"] for p in payloads}) == 1
    for p in payloads:
        assert p["object"] == "chat.completion.chunk" and p["created"] == 7 and p["model"] == "m1"
    first, *content, final, trailer = payloads
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["usage"] is None and first["choices"][0]["finish_reason"] is None
    assert [c["choices"][0]["delta"]["content"] for c in content] == \
        [w if i == 0 else " " + w for i, w in enumerate(
            render(plan_chat(chat(), SPEC))["choices"][0]["message"]["content"].split())]
    assert final["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert trailer["choices"] == [] and trailer["usage"] == {
        "prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}
    assert [cost for cost, _ in chunks] == [0] + [1] * 8 + [0, 0]


def test_stream_without_include_usage_has_no_usage_key() -> None:
    payloads = [c for _, c in _chunks(chat(stream=True))]
    assert all("usage" not in p for p in payloads)
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_n_choices_cost_one_token_time_per_step() -> None:
    chunks = _chunks(chat(n=2, max_tokens=2))
    assert [(cost, c["choices"][0]["index"]) for cost, c in chunks] == [
        (0, 0), (0, 1), (1, 0), (0, 1), (1, 0), (0, 1), (0, 0), (0, 1)]


def test_tool_call_auto_calls_first_tool_with_required_args() -> None:
    out = render(plan_chat(chat(tools=[WEATHER, TIME]), SPEC))
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "mock", "unit": "celsius", "days": 1}
    assert out["usage"]["completion_tokens"] > 0


def test_tool_choice_named_function_and_none() -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    out = render(plan_chat(chat(tools=[WEATHER, TIME], tool_choice=named), SPEC))
    assert out["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "get_time", "arguments": "{}"}
    none = render(plan_chat(chat(tools=[WEATHER], tool_choice="none"), SPEC))
    assert none["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in none["choices"][0]["message"]


def test_tool_choice_unknown_function_is_400() -> None:
    with pytest.raises(MockError) as info:
        plan_chat(chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), SPEC)
    assert info.value.status == 400 and info.value.param == "tool_choice"


def test_after_a_tool_result_auto_answers_in_text_but_required_still_calls() -> None:
    body = chat(tools=[WEATHER])
    body["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert render(plan_chat(body, SPEC))["choices"][0]["finish_reason"] == "stop"
    assert render(plan_chat({**body, "tool_choice": "required"}, SPEC))["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_call_stream_deltas_reassemble() -> None:
    payloads = [c for _, c in _chunks(chat(tools=[WEATHER], stream=True))]
    opening = payloads[0]["choices"][0]["delta"]
    assert opening["role"] == "assistant"
    [head] = opening["tool_calls"]
    assert head["index"] == 0 and head["function"] == {"name": "get_weather", "arguments": ""}
    args = "".join(p["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for p in payloads[1:-1])
    whole = render(plan_chat(chat(tools=[WEATHER]), SPEC))["choices"][0]["message"]["tool_calls"][0]
    assert args == whole["function"]["arguments"] and head["id"] == whole["id"]
    assert payloads[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_text_completion_shape_and_stream() -> None:
    p = plan_completion({"model": "m", "prompt": ["a b c", "d e"], "n": 2, "max_tokens": 2,
                         "stream_options": {"include_usage": True}}, SPEC)
    out = render(p)
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    assert all(set(c) == {"index", "text", "logprobs", "finish_reason"} for c in out["choices"])
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": round(3 * 1.3) + round(2 * 1.3), "completion_tokens": 8,
                            "total_tokens": 4 + 3 + 8}
    chunks = [c for _, c in render_chunks(p)]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "role" not in str(chunks[0]) and chunks[0]["choices"][0]["text"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8


def test_invalid_completion_prompt() -> None:
    with pytest.raises(MockError):
        plan_completion({"prompt": 5}, SPEC)


def _norm(vec: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vec))


def test_embeddings_float_list_input() -> None:
    out = embeddings({"model": "e", "input": ["one", "two words"]}, MockSpec(embedding_dim=16))
    assert out["object"] == "list" and out["model"] == "e"
    assert [d["index"] for d in out["data"]] == [0, 1] and all(d["object"] == "embedding" for d in out["data"])
    v0, v1 = (d["embedding"] for d in out["data"])
    assert len(v0) == 16 and abs(_norm(v0) - 1) < 1e-5 and v0 != v1
    assert out["usage"] == {"prompt_tokens": 1 + 3, "total_tokens": 4}
    again = embeddings({"input": "one"}, MockSpec(embedding_dim=16))["data"][0]["embedding"]
    assert again == v0


def test_embeddings_base64_matches_float_and_dimensions() -> None:
    spec = MockSpec(embedding_dim=8)
    floats = embeddings({"input": "x"}, spec)["data"][0]["embedding"]
    b64 = embeddings({"input": "x", "encoding_format": "base64"}, spec)["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(b64))
    assert decoded == pytest.approx(floats)
    short = embeddings({"input": "x", "dimensions": 3}, spec)["data"][0]["embedding"]
    assert len(short) == 3 and abs(_norm(short) - 1) < 1e-5


@pytest.mark.parametrize("body", [
    {"input": ""}, {"input": []}, {"input": 3}, {"input": "x", "encoding_format": "hex"},
    {"input": "x", "dimensions": 1000},
])
def test_embeddings_invalid(body: dict[str, Any]) -> None:
    with pytest.raises(MockError):
        embeddings(body, MockSpec(embedding_dim=8))


def test_draw_failure_rates() -> None:
    rng = Random(1)
    assert draw_failure(MockSpec(), rng) is None
    assert draw_failure(MockSpec(fail_mode="http_500"), rng) == "http_500"  # rate 0 with a mode: always
    draws = [draw_failure(MockSpec(fail_mode="reset", fail_rate=0.3), rng) for _ in range(2000)]
    assert 450 < draws.count("reset") < 750


def test_http_failures() -> None:
    assert http_failure("http_500").status == 500
    limited = http_failure("http_429")
    assert limited.status == 429 and limited.retry_after == 1.0 and limited.error_type == "rate_limit_error"
    ctx = http_failure("context_length", 9000, 8192)
    assert ctx.status == 400 and ctx.code == "context_length_exceeded"


def test_count_tokens() -> None:
    assert count_tokens("") == 0
    assert count_tokens("a b c d e f g h i j") == 13


def test_stop_as_string_and_mid_token() -> None:
    full = render(plan_chat(chat(), SPEC))["choices"][0]["message"]["content"]
    words = full.split()
    cut_inside = words[1][:2]  # a stop sequence that starts inside the second word
    out = render(plan_chat(chat(stop=words[1][1:]), SPEC))
    assert out["choices"][0]["message"]["content"] == f"{words[0]} {cut_inside[:1]}"
    assert out["usage"]["completion_tokens"] == 2  # the cut token still counts


def test_completion_accepts_token_prompts() -> None:
    assert plan_completion({"prompt": [1, 2, 3]}, SPEC).prompt_tokens == round(3 * 1.3)


def test_embeddings_accept_token_arrays_and_reject_long_inputs() -> None:
    spec = MockSpec(embedding_dim=4, context_window=5)
    assert len(embeddings({"input": [1, 2, 3]}, spec)["data"]) == 1
    assert len(embeddings({"input": [[1, 2], [3]]}, spec)["data"]) == 2
    with pytest.raises(MockError) as info:
        embeddings({"input": "a " * 10}, spec)
    assert info.value.status == 400 and info.value.param == "input"


def test_tool_arguments_from_loose_schemas() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "required": ["a", "b", "c", 7],
        "properties": {"a": {"type": ["null", "integer"]}, "b": "not a schema"},
    }}}
    call = render(plan_chat(chat(tools=[tool]), SPEC))["choices"][0]["message"]["tool_calls"][0]
    assert orjson.loads(call["function"]["arguments"]) == {"a": 1, "b": "mock", "c": "mock"}
    bare = {"type": "function", "function": {"name": "g"}}
    call = render(plan_chat(chat(tools=[bare]), SPEC))["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "g", "arguments": "{}"}
