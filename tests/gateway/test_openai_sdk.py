"""The official openai SDK against a real gateway and a real mock upstream on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from backends.mock_server import MockServerHandle
from tests.conftest import GatewayFactory, free_port, openai_yaml

_clients: list[openai.AsyncOpenAI] = []


def client(base: str) -> openai.AsyncOpenAI:
    sdk = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=10)
    _clients.append(sdk)
    return sdk


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


async def _set_mock(handle: MockServerHandle, **changes: object) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{handle.url}/mock/config", json=changes) as r:
        assert r.status == 200, await r.text()


async def test_models_list_and_retrieve(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))
    ids = [m.id async for m in sdk.models.list()]
    assert ids == ["chat", "sim", "embed"]
    assert (await sdk.models.retrieve("chat")).id == "chat"
    with pytest.raises(openai.NotFoundError) as err:
        await sdk.models.retrieve("missing")
    assert err.value.code == "model_not_found"


async def test_chat_completion_with_headers(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))
    raw = await sdk.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hello"}], seed=7, user="u1",
        extra_headers={"x-request-id": "req-123"},
    )
    completion = raw.parse()
    assert raw.headers["x-request-id"] == "req-123"
    assert raw.headers["x-turnout-deployment"] == "up"
    assert raw.headers["x-turnout-attempts"] == "1"
    assert completion.model == "upstream-model"  # the upstream's own name
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 12


async def test_stream_with_usage(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))
    stream = await sdk.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "stream please"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_stream_without_usage_request_has_no_usage_chunk(
    gateway: GatewayFactory, mock_upstream: MockServerHandle,
) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))
    stream = await sdk.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "x"}], stream=True,
    )
    chunks = [c async for c in stream]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


async def test_stream_from_in_process_simulator(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))
    stream = await sdk.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "x"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


@pytest.mark.parametrize("model", ["chat", "sim"])
async def test_tool_call(gateway: GatewayFactory, mock_upstream: MockServerHandle, model: str) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }}]
    completion = await sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools,  # type: ignore[arg-type]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"


async def test_embeddings(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))
    result = await sdk.embeddings.create(model="embed", input=["one", "two"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as err:
        await sdk.embeddings.create(model="chat", input="x")
    assert err.value.code == "model_type_mismatch"


async def test_unknown_model_is_404(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))
    with pytest.raises(openai.NotFoundError) as err:
        await sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404
    assert err.value.body == {"message": "The model 'nope' does not exist", "type": "invalid_request_error",
                              "param": "model", "code": "model_not_found"}


async def test_empty_messages_is_400_naming_the_field(
    gateway: GatewayFactory, mock_upstream: MockServerHandle,
) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))
    with pytest.raises(openai.BadRequestError) as err:
        await sdk.chat.completions.create(model="chat", messages=[])
    assert err.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as err:
        await sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}],
                                          temperature=7)
    assert err.value.param == "temperature"


async def test_malformed_json_is_400(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    base = await gateway(openai_yaml(mock_upstream.url))
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/v1/chat/completions", data=b"{not json",
                          headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
            body = await r.json()
            assert body["error"]["type"] == "invalid_request_error"
            assert set(body["error"]) == {"message", "type", "param", "code"}
            assert r.headers["x-request-id"]
        async with s.get(f"{base}/v1/unknown") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "unknown_url"


async def test_body_too_large_is_413(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    base = await gateway("server: {body_limit: 1kb}\n" + openai_yaml(mock_upstream.url))
    sdk = client(base)
    with pytest.raises(openai.APIStatusError) as err:
        await sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x" * 5000}])
    assert err.value.status_code == 413
    assert err.value.code == "request_too_large"


async def test_upstream_timeout_is_504(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    base = await gateway(openai_yaml(mock_upstream.url).replace("total: 5s", "total: 300ms"))
    await _set_mock(mock_upstream, fail_mode="timeout")
    with pytest.raises(openai.APIStatusError) as err:
        await client(base).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 504
    assert err.value.code == "upstream_timeout"


async def test_upstream_unreachable_is_502(gateway: GatewayFactory) -> None:
    base = await gateway(openai_yaml(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(openai.APIStatusError) as err:
        await client(base).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    assert err.value.code == "upstream_unavailable"


async def test_upstream_4xx_passes_through(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    base = await gateway(openai_yaml(mock_upstream.url))
    await _set_mock(mock_upstream, fail_mode="context_length")
    with pytest.raises(openai.BadRequestError) as err:
        await client(base).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "context_length_exceeded"
    await _set_mock(mock_upstream, fail_mode="http_429")
    with pytest.raises(openai.RateLimitError) as rate:
        await client(base).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert rate.value.response.headers.get("retry-after")


async def test_200_concurrent_sdk_requests(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))

    async def one(i: int) -> str:
        if i % 2:
            stream = await sdk.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": f"q{i}"}], stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        completion = await sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": f"q{i}"}])
        return completion.choices[0].message.content or ""

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert len(results) == 200 and all(results)


async def test_legacy_completions(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    sdk = client(await gateway(openai_yaml(mock_upstream.url)))
    completion = await sdk.completions.create(model="chat", prompt="Once upon a time", max_tokens=5)
    assert completion.choices[0].text and completion.usage is not None
    assert completion.usage.completion_tokens == 5
    stream = await sdk.completions.create(model="chat", prompt="Once", stream=True,
                                          stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].usage is not None
