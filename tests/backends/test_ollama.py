"""OllamaBackend against a fake Ollama server on loopback (tests/backends/fakes/fake_ollama.py)."""

from __future__ import annotations

import asyncio
import base64
from array import array
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from pytest_aiohttp import AiohttpServer

from backends.base import BackendRequest, Chunk, EmbeddingRequest, SupportsEmbeddings
from backends.errors import BackendHTTPError, BackendProtocolError, BackendTimeout, BackendUnavailable
from backends.ollama import OllamaBackend
from configs.schema import BackendConfig, Timeouts
from tests.backends.fakes.control import Control
from tests.backends.fakes.fake_ollama import FakeOllama
from tests.backends.fakes.net import closed_port_url, collect

Session = aiohttp.ClientSession
Fake = tuple[Control, str]
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi there"}]}
TOOLS = [{"type": "function", "function": {"name": "weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture
async def session() -> AsyncIterator[Session]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> Fake:
    f = FakeOllama()
    server = await aiohttp_server(f.app())
    return f.control, str(server.make_url("")).rstrip("/")


def backend(session: Session, url: str, **kw: Any) -> OllamaBackend:
    return OllamaBackend(BackendConfig(name="ollama-1", kind="ollama", url=url, **kw), session)


def chat(stream: bool = False, **body: Any) -> BackendRequest:
    return BackendRequest("chat", {**CHAT, **body}, stream=stream,
                          headers={"x-request-id": "r-9", "traceparent": "00-1-2-01"})


def content(chunks: list[Chunk]) -> str:
    deltas = [c.payload["choices"][0]["delta"] for c in chunks if c.payload["choices"]]
    return "".join(d.get("content") or "" for d in deltas)


async def test_complete_chat_maps_options(session: Session, fake: Fake) -> None:
    control, url = fake
    resp = await backend(session, url).complete(chat(
        max_tokens=50, temperature=0.2, top_p=0.8, seed=7, stop="END",
        response_format={"type": "json_object"}))
    assert resp.body["object"] == "chat.completion" and resp.body["model"] == "llama3.2"
    assert resp.body["choices"][0]["message"] == {"role": "assistant", "content": "Hello world!"}
    assert resp.body["choices"][0]["finish_reason"] == "stop"
    assert resp.body["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    sent = control.requests[0]
    assert sent["stream"] is False and sent["format"] == "json"
    assert sent["options"] == {"temperature": 0.2, "top_p": 0.8, "seed": 7, "num_predict": 50, "stop": ["END"]}
    assert sent["messages"] == [{"role": "user", "content": "Hi there"}]
    assert control.headers[0]["x-request-id"] == "r-9" and control.headers[0]["traceparent"] == "00-1-2-01"


async def test_json_schema_format_and_length(session: Session, fake: Fake) -> None:
    control, url = fake
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    resp = await backend(session, url).complete(chat(
        max_tokens=2, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert control.requests[0]["format"] == schema
    assert resp.body["choices"][0]["finish_reason"] == "length"


async def test_complete_completion(session: Session, fake: Fake) -> None:
    control, url = fake
    req = BackendRequest("completion", {"model": "llama3.2", "prompt": "once upon a"})
    body = (await backend(session, url).complete(req)).body
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "Hello world!"
    assert body["usage"]["prompt_tokens"] == 3
    assert control.requests[0]["prompt"] == "once upon a"


async def test_stream_text_and_usage(session: Session, fake: Fake) -> None:
    _, url = fake
    chunks = await collect(backend(session, url).stream(chat(stream=True)))
    assert chunks[0].payload["choices"][0]["delta"]["role"] == "assistant"
    assert content(chunks) == "Hello world!"
    assert chunks[-2].payload["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1].usage_only and chunks[-1].payload["choices"] == []
    assert chunks[-1].usage is not None and chunks[-1].usage.as_dict() == {
        "prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert len({c.payload["id"] for c in chunks}) == 1
    assert all(orjson.loads(c.data) == c.payload for c in chunks)


async def test_stream_completion(session: Session, fake: Fake) -> None:
    _, url = fake
    req = BackendRequest("completion", {"model": "llama3.2", "prompt": "x y"}, stream=True)
    chunks = await collect(backend(session, url).stream(req))
    assert "".join(c.payload["choices"][0]["text"] for c in chunks if c.payload["choices"]) == "Hello world!"
    assert all(c.payload["object"] == "text_completion" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 2


async def test_tools_complete(session: Session, fake: Fake) -> None:
    control, url = fake
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    resp = await backend(session, url).complete(chat(messages=history, tools=TOOLS))
    choice = resp.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "weather", "arguments": '{"city":"Paris"}'}
    sent = control.requests[0]
    assert sent["tools"] == TOOLS
    assert sent["messages"][1]["tool_calls"] == [{"function": {"name": "weather", "arguments": {"city": "Rome"}}}]
    assert sent["messages"][2] == {"role": "tool", "content": "sunny", "tool_name": "weather"}


async def test_tools_stream(session: Session, fake: Fake) -> None:
    _, url = fake
    chunks = await collect(backend(session, url).stream(chat(stream=True, tools=TOOLS)))
    deltas = [c.payload["choices"][0]["delta"] for c in chunks if c.payload["choices"]]
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert len(calls) == 1 and calls[0]["index"] == 0
    assert orjson.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert chunks[-2].payload["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1].usage_only


async def test_images_become_base64(session: Session, fake: Fake) -> None:
    control, url = fake
    parts = [{"type": "text", "text": "What is it?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    await backend(session, url).complete(chat(messages=[{"role": "user", "content": parts}]))
    assert control.requests[0]["messages"][0] == {"role": "user", "content": "What is it?", "images": ["iVBORw0KGgo="]}


async def test_embed(session: Session, fake: Fake) -> None:
    control, url = fake
    b = backend(session, url)
    assert isinstance(b, SupportsEmbeddings)
    resp = await b.embed(EmbeddingRequest({"model": "nomic-embed-text", "input": ["a b", "ccc"]}))
    assert resp.body["object"] == "list" and resp.body["model"] == "nomic-embed-text"
    assert [d["index"] for d in resp.body["data"]] == [0, 1]
    assert resp.body["data"][1]["embedding"] == [3.0, 0.5, -0.25, 1.0]
    assert resp.usage is not None and resp.usage.prompt_tokens == 3
    assert control.requests[0] == {"model": "nomic-embed-text", "input": ["a b", "ccc"]}
    b64 = await b.embed(EmbeddingRequest({"model": "m", "input": "xy", "encoding_format": "base64"}))
    raw = base64.b64decode(b64.body["data"][0]["embedding"])
    assert list(array("f", raw)) == [2.0, 0.5, -0.25, 0.0]


@pytest.mark.parametrize("stream", [False, True])
async def test_model_not_found_passthrough(session: Session, fake: Fake, stream: bool) -> None:
    _, url = fake
    b = backend(session, url)
    with pytest.raises(BackendHTTPError) as err:
        if stream:
            await collect(b.stream(chat(stream=True, model="missing")))
        else:
            await b.complete(chat(model="missing"))
    assert err.value.status == 404
    assert err.value.message == 'model "missing" not found, try pulling it first'


async def test_5xx_with_retry_after(session: Session, fake: Fake) -> None:
    control, url = fake
    control.fail_status, control.retry_after = 503, "2"
    with pytest.raises(BackendHTTPError) as err:
        await backend(session, url).embed(EmbeddingRequest({"model": "m", "input": "x"}))
    assert err.value.status == 503 and err.value.retry_after == 2.0
    assert err.value.message == "unexpected server status: llm busy"


async def test_n_rejected(session: Session, fake: Fake) -> None:
    control, url = fake
    with pytest.raises(BackendHTTPError) as err:
        await backend(session, url).complete(chat(n=3))
    assert err.value.status == 400 and err.value.param == "n" and control.requests == []


async def test_connection_refused(session: Session) -> None:
    b = backend(session, closed_port_url())
    with pytest.raises(BackendUnavailable):
        await collect(b.stream(chat(stream=True)))
    with pytest.raises(BackendUnavailable):
        await b.embed(EmbeddingRequest({"model": "m", "input": "x"}))
    assert not (await b.health()).ok


async def test_malformed_line(session: Session, fake: Fake) -> None:
    control, url = fake
    control.malformed_after = 2
    got = []
    with pytest.raises(BackendProtocolError):
        async for chunk in backend(session, url).stream(chat(stream=True)):
            got.append(chunk)
    assert content(got) == "Hello world"


async def test_in_stream_error(session: Session, fake: Fake) -> None:
    control, url = fake
    control.stream_error = "llama runner process has terminated"
    with pytest.raises(BackendHTTPError) as err:
        await collect(backend(session, url).stream(chat(stream=True)))
    assert err.value.status == 500 and err.value.message == "llama runner process has terminated"


async def test_cut_mid_stream(session: Session, fake: Fake) -> None:
    control, url = fake
    control.cut_after = 2
    with pytest.raises(BackendUnavailable):
        await collect(backend(session, url).stream(chat(stream=True)))


@pytest.mark.parametrize(("knobs", "timeouts", "phase"), [
    ({"first_delay": 1.0}, Timeouts(first_token=0.1), "first_token"),
    ({"token_delay": 1.0}, Timeouts(idle=0.1), "idle"),
    ({"token_delay": 0.15}, Timeouts(idle=1.0, total=0.3), "total"),
])
async def test_stream_timeouts(session: Session, fake: Fake, knobs: dict[str, float],
                               timeouts: Timeouts, phase: str) -> None:
    control, url = fake
    for k, v in knobs.items():
        setattr(control, k, v)
    with pytest.raises(BackendTimeout) as err:
        await collect(backend(session, url, timeouts=timeouts).stream(chat(stream=True)))
    assert err.value.phase == phase


async def test_embed_deadline(session: Session, fake: Fake) -> None:
    control, url = fake
    control.first_delay = 1.0
    req = EmbeddingRequest({"model": "m", "input": "x"}, deadline=asyncio.get_running_loop().time() + 0.1)
    with pytest.raises(BackendTimeout) as err:
        await backend(session, url).embed(req)
    assert err.value.phase == "deadline"


async def test_aclose_disconnects_upstream(session: Session, fake: Fake) -> None:
    control, url = fake
    control.tokens, control.token_delay = ["tok "] * 200, 0.02
    gen = backend(session, url).stream(chat(stream=True))
    await gen.__anext__()
    await gen.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(control.disconnected.wait(), 2.0)


async def test_health(session: Session, fake: Fake) -> None:
    _, url = fake
    health = await backend(session, url).health()
    assert health.ok and "0.9.0" in health.detail


async def test_complete_is_bounded_by_total_not_first_token(session: Session, fake: Fake) -> None:
    """A whole answer arrives after the generation: a first-token limit must not cut it."""
    control, url = fake
    control.first_delay = 0.3
    resp = await backend(session, url, timeouts=Timeouts(first_token=0.1, total=5)).complete(chat())
    assert resp.body["choices"][0]["message"]["content"]
    with pytest.raises(BackendTimeout) as err:
        await backend(session, url, timeouts=Timeouts(first_token=0.1, total=0.15)).complete(chat())
    assert err.value.phase == "total"
