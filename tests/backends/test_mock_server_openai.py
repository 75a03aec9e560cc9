"""The mock server seen by the official ``openai`` SDK: it must parse every answer unchanged and
surface every failure mode as the SDK's own exceptions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from backends.mock_server import MockServerHandle, start_mock_server
from configs.schema import MockSpec

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS: list[ChatCompletionToolParam] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]


@pytest.fixture
async def server() -> AsyncIterator[MockServerHandle]:
    handle = await start_mock_server(spec=MockSpec(output_tokens=5, embedding_dim=16))
    yield handle
    await handle.close()


@pytest.fixture
async def client(server: MockServerHandle) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{server.url}/v1", api_key="sk-mock", max_retries=0, timeout=5) as c:
        yield c


def fail(server: MockServerHandle, mode: str) -> None:
    server.state.set_spec(MockSpec(output_tokens=5, fail_mode=mode))


async def test_chat(client: AsyncOpenAI) -> None:
    out = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert out.object == "chat.completion" and out.model == "m"
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.content is not None and len(out.choices[0].message.content.split()) == 5
    assert out.usage is not None and out.usage.completion_tokens == 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + 5


async def test_stream_with_usage(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


async def test_tool_calls(client: AsyncOpenAI) -> None:
    out = await client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock"}
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, tools=TOOLS, stream=True,
    )
    args, names = "", []
    async for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            assert delta.function is not None
            names += [delta.function.name] if delta.function.name else []
            args += delta.function.arguments or ""
    assert names == ["get_weather"] and json.loads(args) == {"city": "mock"}


async def test_embeddings_completions_models(client: AsyncOpenAI) -> None:
    emb = await client.embeddings.create(model="e", input=["a", "b"])  # the SDK asks for base64
    assert [len(d.embedding) for d in emb.data] == [16, 16]
    assert abs(sum(x * x for x in emb.data[0].embedding) - 1) < 1e-4
    floats = await client.embeddings.create(model="e", input="a", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(emb.data[0].embedding, abs=1e-6)
    text = await client.completions.create(model="c", prompt="Once upon a time", max_tokens=3)
    assert text.choices[0].finish_reason == "length" and len(text.choices[0].text.split()) == 3
    models = await client.models.list()
    assert [m.id for m in models.data] == ["mock"]


@pytest.mark.parametrize(("mode", "error"), [
    ("http_500", openai.InternalServerError), ("http_429", openai.RateLimitError),
])
async def test_http_errors(server: MockServerHandle, client: AsyncOpenAI, mode: str, error: type[Exception]) -> None:
    fail(server, mode)
    with pytest.raises(error):
        await client.chat.completions.create(model="m", messages=MESSAGES)


async def test_context_length(server: MockServerHandle, client: AsyncOpenAI) -> None:
    fail(server, "context_length")
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.code == "context_length_exceeded"


async def test_timeout(server: MockServerHandle) -> None:
    fail(server, "timeout")
    async with AsyncOpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0, timeout=0.3) as c:
        with pytest.raises(openai.APITimeoutError):
            await c.chat.completions.create(model="m", messages=MESSAGES)


async def test_reset(server: MockServerHandle, client: AsyncOpenAI) -> None:
    fail(server, "reset")
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=MESSAGES)


async def test_stream_cut(server: MockServerHandle, client: AsyncOpenAI) -> None:
    fail(server, "stream_cut")
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    received = 0
    with pytest.raises((openai.APIConnectionError, httpx.RemoteProtocolError)):  # SDK version dependent
        async for _ in stream:
            received += 1
    assert received >= 1


async def test_malformed_chunk(server: MockServerHandle, client: AsyncOpenAI) -> None:
    fail(server, "malformed_chunk")
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    received = 0
    with pytest.raises(json.JSONDecodeError):
        async for _ in stream:
            received += 1
    assert received >= 1
