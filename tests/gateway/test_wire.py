"""Request validation names the offending field."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidRequest, MalformedJSON
from gateway.wire import parse_body, validate_chat, validate_completion, validate_embedding

OK: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_valid_chat_returns_alias() -> None:
    assert validate_chat(dict(OK)) == "m"
    tool_answer = {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}
    assert validate_chat({**OK, "messages": [*OK["messages"], tool_answer,
                                             {"role": "tool", "tool_call_id": "1", "content": "x"}]}) == "m"


@pytest.mark.parametrize(("patch", "param"), [
    ({"model": ""}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 0}, "n"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"tools": [{"type": "function"}]}, "tools[0]"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"seed": 1.5}, "seed"),
    ({"logprobs": "yes"}, "logprobs"),
])
def test_invalid_chat_fields(patch: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_chat({**OK, **patch})
    assert err.value.param == param
    assert err.value.status == 400


def test_unknown_fields_pass_through() -> None:
    assert validate_chat({**OK, "top_k": 5, "repetition_penalty": 1.1}) == "m"


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b"null", b"\xff"])
def test_parse_body_rejects_non_objects(raw: bytes) -> None:
    with pytest.raises(MalformedJSON):
        parse_body(raw)


def test_completion_and_embedding_inputs() -> None:
    assert validate_completion({"model": "m", "prompt": "x"}) == "m"
    assert validate_completion({"model": "m", "prompt": [[1, 2], [3]]}) == "m"
    with pytest.raises(InvalidRequest, match="prompt"):
        validate_completion({"model": "m", "prompt": ""})
    assert validate_embedding({"model": "m", "input": ["a", "b"]}) == "m"
    with pytest.raises(InvalidRequest) as err:
        validate_embedding({"model": "m", "input": [], "encoding_format": "float"})
    assert err.value.param == "input"
    with pytest.raises(InvalidRequest) as err:
        validate_embedding({"model": "m", "input": "x", "encoding_format": "hex"})
    assert err.value.param == "encoding_format"
