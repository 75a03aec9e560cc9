"""TGIBackend against a fake TGI server on loopback (tests/backends/fakes/fake_tgi.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from pytest_aiohttp import AiohttpServer

from backends.base import BackendRequest, Chunk, SupportsEmbeddings
from backends.errors import BackendHTTPError, BackendProtocolError, BackendTimeout, BackendUnavailable
from backends.tgi import TGIBackend
from configs.schema import BackendConfig, Timeouts
from tests.backends.fakes.control import Control
from tests.backends.fakes.fake_tgi import FakeTGI
from tests.backends.fakes.net import blackhole_url, closed_port_url, collect

CHAT = {"model": "llama", "messages": [{"role": "system", "content": "Be terse."},
                                       {"role": "user", "content": "Hi there"}]}
Session = aiohttp.ClientSession
Fake = tuple[Control, str]
HEADERS = {"X-Request-Id": "req-1", "traceparent": "00-abc-def-01", "Cookie": "no"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> tuple[Control, str]:
    f = FakeTGI()
    server = await aiohttp_server(f.app())
    return f.control, str(server.make_url("")).rstrip("/")


def backend(session: Session, url: str, **kw: Any) -> TGIBackend:
    return TGIBackend(BackendConfig(name="tgi-1", kind="tgi", url=url, **kw), session)


def content(chunks: list[Chunk]) -> str:
    deltas = [c.payload["choices"][0]["delta"] for c in chunks if c.payload["choices"]]
    return "".join(d.get("content") or "" for d in deltas)


def chat(stream: bool = False, **body: Any) -> BackendRequest:
    return BackendRequest("chat", {**CHAT, **body}, stream=stream, headers=HEADERS)


async def test_complete_chat_maps_params_and_usage(session: Session, fake: Fake) -> None:
    control, url = fake
    resp = await backend(session, url).complete(
        chat(max_tokens=10, temperature=0.5, top_p=0.9, seed=3, stop=["zzz"]))
    body = resp.body
    assert body["object"] == "chat.completion" and body["model"] == "llama"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello world!"}
    assert body["choices"][0]["finish_reason"] == "stop"
    sent = control.requests[0]
    prompt_words = len(sent["inputs"].split())
    assert body["usage"] == {"prompt_tokens": prompt_words, "completion_tokens": 4,
                             "total_tokens": prompt_words + 4}
    assert resp.usage is not None and resp.usage.completion_tokens == 4
    assert sent["inputs"] == ("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi there"
                              "<|im_end|>\n<|im_start|>assistant\n")
    assert sent["parameters"] == {
        "details": True, "decoder_input_details": True, "max_new_tokens": 10, "temperature": 0.5,
        "do_sample": True, "top_p": 0.9, "seed": 3, "stop": ["zzz", "<|im_end|>"]}
    assert control.headers[0]["x-request-id"] == "req-1"
    assert control.headers[0]["traceparent"] == "00-abc-def-01"
    assert "cookie" not in control.headers[0]


async def test_greedy_and_json_grammar(session: Session, fake: Fake) -> None:
    control, url = fake
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    await backend(session, url).complete(chat(
        temperature=0, top_p=1.0, response_format={"type": "json_schema", "json_schema": {"schema": schema}}))
    params = control.requests[0]["parameters"]
    assert params["do_sample"] is False and "temperature" not in params and "top_p" not in params
    assert params["grammar"] == {"type": "json", "value": schema}


async def test_completion_trims_stop_sequence(session: Session, fake: Fake) -> None:
    control, url = fake
    req = BackendRequest("completion", {"model": "llama", "prompt": "Say hi", "stop": "world"})
    body = (await backend(session, url).complete(req)).body
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Hello "
    assert body["choices"][0]["finish_reason"] == "stop"
    assert control.requests[0]["inputs"] == "Say hi"
    assert body["usage"]["prompt_tokens"] == 2


async def test_length_finish(session: Session, fake: Fake) -> None:
    _, url = fake
    body = (await backend(session, url).complete(chat(max_tokens=2))).body
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


async def test_stream_text_and_usage_trailer(session: Session, fake: Fake) -> None:
    control, url = fake
    chunks = await collect(backend(session, url).stream(chat(stream=True)))
    assert chunks[0].payload["choices"][0]["delta"]["role"] == "assistant"
    text = content(chunks)
    assert text == "Hello world!"
    assert chunks[-2].payload["choices"][0]["finish_reason"] == "stop"
    trailer = chunks[-1]
    assert trailer.usage_only and trailer.payload["choices"] == []
    prompt_words = len(control.requests[0]["inputs"].split())
    assert trailer.usage is not None and trailer.usage.as_dict() == {
        "prompt_tokens": prompt_words, "completion_tokens": 4, "total_tokens": prompt_words + 4}
    assert len({c.payload["id"] for c in chunks}) == 1
    assert all(orjson.loads(c.data) == c.payload for c in chunks)
    assert all(c.payload["object"] == "chat.completion.chunk" for c in chunks)
    assert "decoder_input_details" not in control.requests[0]["parameters"]


async def test_stream_holds_back_stop_split_over_tokens(session: Session,
                                                        fake: tuple[Control, str]) -> None:
    control, url = fake
    control.tokens = ["Hel", "lo <|im", "_end|>", " more"]
    chunks = await collect(backend(session, url).stream(chat(stream=True)))
    text = content(chunks)
    assert text == "Hello "
    assert chunks[-2].payload["choices"][0]["finish_reason"] == "stop"


async def test_stream_completion_shape(session: Session, fake: Fake) -> None:
    _, url = fake
    req = BackendRequest("completion", {"model": "llama", "prompt": ["one two three"]}, stream=True)
    chunks = await collect(backend(session, url).stream(req))
    assert all(c.payload["object"] == "text_completion" for c in chunks)
    assert "".join(c.payload["choices"][0]["text"] for c in chunks if c.payload["choices"]) == "Hello world!"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3


@pytest.mark.parametrize("body", [{"n": 2}, {"best_of": 3}, {"tools": [{"type": "function"}]}])
async def test_rejects_unsupported(session: Session, fake: Fake,
                                   body: dict[str, Any]) -> None:
    control, url = fake
    with pytest.raises(BackendHTTPError) as err:
        await backend(session, url).complete(chat(**body))
    assert err.value.status == 400 and err.value.param in {"n", "best_of", "tools"}
    assert control.requests == []


@pytest.mark.parametrize("stream", [False, True])
async def test_4xx_passthrough(session: Session, fake: Fake, stream: bool) -> None:
    control, url = fake
    control.fail_status, control.retry_after = 422, "3"
    b = backend(session, url)
    with pytest.raises(BackendHTTPError) as err:
        if stream:
            await collect(b.stream(chat(stream=True)))
        else:
            await b.complete(chat())
    assert err.value.status == 422 and err.value.error_type == "validation"
    assert err.value.message.startswith("Input validation error")
    assert err.value.retry_after == 3.0


async def test_5xx_plain_text(session: Session, fake: Fake) -> None:
    control, url = fake
    control.fail_status, control.fail_body = 503, b"model is loading"
    with pytest.raises(BackendHTTPError) as err:
        await backend(session, url).complete(chat())
    assert err.value.status == 503 and err.value.message == "model is loading"


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_refused(session: Session, stream: bool) -> None:
    b = backend(session, closed_port_url())
    with pytest.raises(BackendUnavailable):
        if stream:
            await collect(b.stream(chat(stream=True)))
        else:
            await b.complete(chat())


async def test_connect_timeout(session: aiohttp.ClientSession) -> None:
    with blackhole_url() as url:
        b = backend(session, url, timeouts=Timeouts(connect=0.2))
        with pytest.raises(BackendTimeout) as err:
            await b.complete(chat())
    assert err.value.phase == "connect"


async def test_malformed_line(session: Session, fake: Fake) -> None:
    control, url = fake
    control.malformed_after = 1
    got = []
    with pytest.raises(BackendProtocolError):
        async for chunk in backend(session, url).stream(chat(stream=True)):
            got.append(chunk)
    assert len(got) == 1


async def test_in_stream_error_event(session: Session, fake: Fake) -> None:
    control, url = fake
    control.stream_error = "CUDA out of memory"
    with pytest.raises(BackendHTTPError) as err:
        await collect(backend(session, url).stream(chat(stream=True)))
    assert err.value.status == 424 and err.value.message == "CUDA out of memory"


async def test_connection_cut_mid_stream(session: Session, fake: Fake) -> None:
    control, url = fake
    control.cut_after = 2
    with pytest.raises(BackendUnavailable):
        await collect(backend(session, url).stream(chat(stream=True)))


@pytest.mark.parametrize(("knobs", "timeouts", "phase"), [
    ({"first_delay": 1.0}, Timeouts(first_token=0.1), "first_token"),
    ({"token_delay": 1.0}, Timeouts(idle=0.1), "idle"),
    ({"token_delay": 0.15}, Timeouts(idle=1.0, total=0.3), "total"),
])
async def test_stream_timeouts(session: Session, fake: Fake,
                               knobs: dict[str, float], timeouts: Timeouts, phase: str) -> None:
    control, url = fake
    for k, v in knobs.items():
        setattr(control, k, v)
    with pytest.raises(BackendTimeout) as err:
        await collect(backend(session, url, timeouts=timeouts).stream(chat(stream=True)))
    assert err.value.phase == phase
    assert isinstance(err.value, TimeoutError)


async def test_complete_is_bounded_by_total_not_first_token(session: Session, fake: Fake) -> None:
    """A whole answer arrives after the generation: a first-token limit must not cut it."""
    control, url = fake
    control.first_delay = 0.3
    resp = await backend(session, url, timeouts=Timeouts(first_token=0.1, total=5)).complete(chat())
    assert resp.body["choices"][0]["message"]["content"]
    with pytest.raises(BackendTimeout) as err:
        await backend(session, url, timeouts=Timeouts(first_token=0.1, total=0.15)).complete(chat())
    assert err.value.phase == "total"
    control.first_delay = 1.0
    req = chat()
    req.deadline = asyncio.get_running_loop().time() + 0.1
    with pytest.raises(BackendTimeout) as err:
        await backend(session, url).complete(req)
    assert err.value.phase == "deadline"


async def test_aclose_disconnects_upstream(session: Session, fake: Fake) -> None:
    control, url = fake
    control.tokens, control.token_delay = ["tok "] * 200, 0.02
    gen = backend(session, url).stream(chat(stream=True))
    first = await gen.__anext__()
    assert first.payload["choices"][0]["delta"]["role"] == "assistant"
    await gen.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(control.disconnected.wait(), 2.0)


async def test_cancelled_consumer_disconnects_upstream(session: Session,
                                                       fake: tuple[Control, str]) -> None:
    control, url = fake
    control.tokens, control.token_delay = ["tok "] * 200, 0.02
    seen = asyncio.Event()

    async def consume() -> None:
        async for _ in backend(session, url).stream(chat(stream=True)):
            seen.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(seen.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(control.disconnected.wait(), 2.0)


async def test_messages_api(session: Session, fake: Fake) -> None:
    control, url = fake
    b = backend(session, url, tgi_messages_api=True)
    resp = await b.complete(chat(stream_options={"include_usage": True}))
    assert resp.body["choices"][0]["message"]["content"] == "Hello world!"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert "stream_options" not in control.requests[0] and control.requests[0]["stream"] is False
    chunks = await collect(b.stream(chat(stream=True)))
    assert control.requests[1]["stream_options"] == {"include_usage": True}
    assert "".join(c.payload["choices"][0]["delta"]["content"] for c in chunks[:-1]) == "Hello world!"
    assert chunks[-1].usage_only and chunks[-1].usage is not None
    assert chunks[0].data.startswith(b'{"id"')  # forwarded bytes, not re-encoded


async def test_completion_uses_native_api_even_with_messages_api(session: Session,
                                                                 fake: tuple[Control, str]) -> None:
    control, url = fake
    b = backend(session, url, tgi_messages_api=True)
    await b.complete(BackendRequest("completion", {"model": "llama", "prompt": "x"}))
    assert control.requests[0]["inputs"] == "x"


async def test_health_and_capabilities(session: Session, fake: Fake) -> None:
    _, url = fake
    assert (await backend(session, url).health()).ok
    down = await backend(session, closed_port_url()).health()
    assert not down.ok and down.detail
    assert not isinstance(backend(session, url), SupportsEmbeddings)
