"""LiteLLMBackend against a fake OpenAI-compatible server on loopback: litellm is pointed at it
as ``model="openai/<name>"`` with ``api_base=http://127.0.0.1:<port>/v1``. This is the only test
module that imports litellm (through the backend)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from pytest_aiohttp import AiohttpServer

from backends.base import BackendRequest, EmbeddingRequest, SupportsEmbeddings
from backends.errors import BackendHTTPError, BackendTimeout, BackendUnavailable
from backends.litellm_backend import LiteLLMBackend
from configs.schema import BackendConfig, Timeouts
from tests.backends.fakes.control import Control
from tests.backends.fakes.fake_openai_min import FakeOpenAI
from tests.backends.fakes.net import closed_port_url, collect

# litellm's stream types trip a pydantic UserWarning on this pydantic version (not ours to fix).
pytestmark = pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning")
Session = aiohttp.ClientSession
Fake = tuple[Control, str]
CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
async def session() -> AsyncIterator[Session]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> Fake:
    f = FakeOpenAI()
    server = await aiohttp_server(f.app())
    return f.control, str(server.make_url("/v1"))


def backend(session: Session, url: str, **kw: Any) -> LiteLLMBackend:
    cfg = BackendConfig(name="cloud", kind="litellm", url=url, model="openai/gpt-x", api_key="sk-test", **kw)
    return LiteLLMBackend(cfg, session)


def chat(stream: bool = False, **body: Any) -> BackendRequest:
    return BackendRequest("chat", {**CHAT, **body}, stream=stream, headers={"x-request-id": "lite-1"})


async def test_complete(session: Session, fake: Fake) -> None:
    control, url = fake
    resp = await backend(session, url).complete(chat(temperature=0.3, max_tokens=9))
    assert resp.body["object"] == "chat.completion"
    assert resp.body["choices"][0]["message"]["content"] == "Hello world!"
    assert resp.usage is not None and resp.usage.as_dict() == {
        "prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    orjson.dumps(resp.body)  # plain, serialisable
    sent = control.requests[0]
    assert sent["model"] == "gpt-x" and sent["temperature"] == 0.3 and sent["max_tokens"] == 9
    assert control.headers[0]["authorization"] == "Bearer sk-test"
    assert control.headers[0]["x-request-id"] == "lite-1"


async def test_completion_endpoint(session: Session, fake: Fake) -> None:
    _, url = fake
    req = BackendRequest("completion", {"model": "gpt-x", "prompt": "Say"})
    resp = await backend(session, url).complete(req)
    assert resp.body["choices"][0]["text"] == "Hello world!"
    assert resp.usage is not None and resp.usage.completion_tokens == 3


async def test_stream_with_usage_trailer(session: Session, fake: Fake) -> None:
    control, url = fake
    chunks = await collect(backend(session, url).stream(chat(stream=True)))
    text = "".join(c.payload["choices"][0]["delta"].get("content") or "" for c in chunks if c.payload["choices"])
    assert text == "Hello world!"
    assert control.requests[0]["stream_options"] == {"include_usage": True}
    assert chunks[-1].usage_only and chunks[-1].payload["choices"] == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8
    assert sum(c.usage_only for c in chunks) == 1
    assert all(orjson.loads(c.data) == c.payload for c in chunks)


async def test_embed(session: Session, fake: Fake) -> None:
    _, url = fake
    b = backend(session, url)
    assert isinstance(b, SupportsEmbeddings)
    resp = await b.embed(EmbeddingRequest({"model": "emb", "input": ["a", "b"]}))
    assert [d["embedding"] for d in resp.body["data"]] == [[0.1, 0.2, 0.0], [0.1, 0.2, 1.0]]
    assert resp.usage is not None and resp.usage.prompt_tokens == 2


@pytest.mark.parametrize(("status", "message", "retry_after", "code"), [
    (429, "Rate limit reached", "7", None),
    (400, "This model's maximum context length is 8192 tokens", None, "context_length_exceeded"),
    (401, "Incorrect API key provided", None, None),
    (503, "The server is overloaded", None, None),
])
async def test_error_mapping(session: Session, fake: Fake, status: int, message: str,
                             retry_after: str | None, code: str | None) -> None:
    control, url = fake
    control.fail_status, control.retry_after = status, retry_after
    control.fail_body = orjson.dumps({"error": {"message": message, "type": "x", "param": None, "code": None}})
    with pytest.raises(BackendHTTPError) as err:
        await backend(session, url).complete(chat())
    assert err.value.status == status
    assert message in err.value.message
    assert err.value.code == code
    if retry_after:
        assert err.value.retry_after == float(retry_after)
    assert len(control.requests) == 1  # no hidden retries inside litellm


async def test_stream_error_before_first_chunk(session: Session, fake: Fake) -> None:
    control, url = fake
    control.fail_status = 500
    with pytest.raises(BackendHTTPError) as err:
        await collect(backend(session, url).stream(chat(stream=True)))
    assert err.value.status == 500 and "upstream exploded" in err.value.message


async def test_connection_refused(session: Session) -> None:
    with pytest.raises(BackendUnavailable):
        await backend(session, closed_port_url() + "/v1").complete(chat())


async def test_timeouts(session: Session, fake: Fake) -> None:
    control, url = fake
    control.first_delay = 0.4  # a whole answer is bounded by total, never by first_token
    resp = await backend(session, url, timeouts=Timeouts(first_token=0.2, total=5)).complete(chat())
    assert resp.body["choices"]
    control.first_delay = 1.0
    with pytest.raises(BackendTimeout) as err:
        await backend(session, url, timeouts=Timeouts(first_token=0.2, total=0.3)).complete(chat())
    assert err.value.phase == "total"
    control.first_delay, control.token_delay = 0.0, 1.0
    with pytest.raises(BackendTimeout) as err:
        await collect(backend(session, url, timeouts=Timeouts(idle=0.2)).stream(chat(stream=True)))
    assert err.value.phase == "idle"


async def test_aclose_disconnects_upstream(session: Session, fake: Fake) -> None:
    control, url = fake
    control.tokens, control.token_delay = ["tok "] * 200, 0.02
    gen = backend(session, url).stream(chat(stream=True))
    await gen.__anext__()
    await gen.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(control.disconnected.wait(), 3.0)


async def test_health_is_passive(session: Session) -> None:
    assert (await backend(session, closed_port_url()).health()).ok
