"""The standalone mock server over real loopback sockets, seen by an aiohttp client."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from backends.mock import LoadGauges
from backends.mock_answers import ServerState, generate
from backends.mock_server import MockServerHandle, main, start_mock_server
from configs.schema import MockSpec

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hello mock"}]}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def server() -> AsyncIterator[MockServerHandle]:
    handle = await start_mock_server(spec=MockSpec(output_tokens=6, embedding_dim=8), model="served")
    yield handle
    await handle.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def configure(http: aiohttp.ClientSession, server: MockServerHandle, **settings: Any) -> dict[str, Any]:
    async with http.post(f"{server.url}/mock/config", json=settings) as resp:
        assert resp.status == 200, await resp.text()
        out: dict[str, Any] = await resp.json()
        return out


async def sse_events(resp: aiohttp.ClientResponse) -> list[bytes]:
    events = []
    async for line in resp.content:
        if line.startswith(b"data: "):
            events.append(line[6:].rstrip(b"\n"))
    return events


async def test_chat_completion(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{server.url}/v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        body = await resp.json()
    assert body["object"] == "chat.completion" and body["model"] == "m1"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] == 6


async def test_keep_alive_reuses_one_connection(server: MockServerHandle) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(5):
            async with http.post(f"{server.url}/v1/chat/completions", json=CHAT) as resp:
                assert resp.status == 200
                await resp.read()
    assert server.state.stats.connections == 1


async def test_stream_with_usage(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(f"{server.url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        events = await sse_events(resp)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


async def test_completions_embeddings_models(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{server.url}/v1/completions", json={"model": "c", "prompt": "hi"}) as resp:
        assert (await resp.json())["object"] == "text_completion"
    async with http.post(f"{server.url}/v1/embeddings", json={"input": ["a", "b"]}) as resp:
        emb = await resp.json()
    assert [len(d["embedding"]) for d in emb["data"]] == [8, 8] and emb["model"] == "served"
    async with http.get(f"{server.url}/v1/models") as resp:
        models = await resp.json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["served"]


@pytest.mark.parametrize(("method", "path", "data", "status"), [
    ("POST", "/v1/chat/completions", b"{not json", 400),
    ("POST", "/v1/chat/completions", b"[1, 2]", 400),
    ("POST", "/v1/chat/completions", b'{"messages": []}', 400),
    ("POST", "/v1/embeddings", b"", 400),
    ("GET", "/v1/chat/completions", b"", 405),
    ("GET", "/nope", b"", 404),
])
async def test_bad_requests_get_openai_errors(
    server: MockServerHandle, http: aiohttp.ClientSession, method: str, path: str, data: bytes, status: int,
) -> None:
    async with http.request(method, f"{server.url}{path}", data=data) as resp:
        assert resp.status == status
        body = await resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_health_metrics_and_runtime_config(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/health") as resp:
        assert resp.status == 200
    settings = await configure(http, server, waiting=4, running=2, kv_cache_usage=0.75, first_token_ms=1)
    assert settings["waiting"] == 4 and settings["first_token_ms"] == 1
    async with http.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    assert 'vllm:num_requests_waiting{model_name="served"} 4.0' in text
    assert 'vllm:num_requests_running{model_name="served"} 2.0' in text
    assert 'vllm:gpu_cache_usage_perc{model_name="served"} 0.75' in text
    await configure(http, server, fail_mode="http_500", fail_rate=1.0)
    async with http.get(f"{server.url}/health") as resp:
        assert resp.status == 503
    for bad in ({"fail_mode": "boom"}, {"output_tokens": 0}, {"nope": 1}, {"fail_rate": 2}):
        async with http.post(f"{server.url}/mock/config", json=bad) as resp:
            assert resp.status == 400
    async with http.get(f"{server.url}/mock/stats") as resp:
        assert set(await resp.json()) >= {"requests", "in_flight", "disconnects"}


async def test_running_gauge_is_live_without_override(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    await configure(http, server, first_token_ms=300)
    task = asyncio.ensure_future(http.post(f"{server.url}/v1/chat/completions", json=CHAT))
    await asyncio.sleep(0.1)
    async with http.get(f"{server.url}/metrics") as resp:
        assert 'vllm:num_requests_running{model_name="served"} 1.0' in await resp.text()
    resp = await task
    resp.release()


async def test_start_with_gauges() -> None:
    handle = await start_mock_server(gauges=LoadGauges(waiting=9))
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{handle.url}/metrics") as resp:
            assert "vllm:num_requests_waiting{model_name=\"mock\"} 9.0" in await resp.text()
    finally:
        await handle.close()


async def test_first_token_delay(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    await configure(http, server, first_token_ms=80, tokens_per_s=100)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with http.post(f"{server.url}/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
        first = None
        async for line in resp.content:
            if line.startswith(b"data: ") and first is None:
                first = loop.time() - start
    total = loop.time() - start
    assert first is not None and 0.075 <= first < 1.0
    assert 0.08 + 5 / 100 - 0.01 <= total < 2.0


@pytest.mark.parametrize(("mode", "status", "code"), [
    ("http_500", 500, "internal_error"), ("http_429", 429, "rate_limit_exceeded"),
    ("context_length", 400, "context_length_exceeded"),
])
async def test_http_failure_modes(
    server: MockServerHandle, http: aiohttp.ClientSession, mode: str, status: int, code: str,
) -> None:
    await configure(http, server, fail_mode=mode)
    for body in (CHAT, {**CHAT, "stream": True}):
        async with http.post(f"{server.url}/v1/chat/completions", json=body) as resp:
            assert resp.status == status
            assert (await resp.json())["error"]["code"] == code
            if mode == "http_429":
                assert resp.headers["Retry-After"] == "1"


async def test_timeout_mode_never_answers(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    await configure(http, server, fail_mode="timeout")
    with pytest.raises(asyncio.TimeoutError):
        await http.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=aiohttp.ClientTimeout(total=0.2))
    await asyncio.sleep(0.05)
    assert server.state.stats.disconnects == 1


async def test_reset_mode_drops_the_connection(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    await configure(http, server, fail_mode="reset")
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await http.post(f"{server.url}/v1/chat/completions", json=CHAT)


async def test_stream_cut_mode(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    await configure(http, server, fail_mode="stream_cut")
    events: list[bytes] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{server.url}/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
            assert resp.status == 200
            async for line in resp.content:
                if line.startswith(b"data: "):
                    events.append(line)
    assert events and b"[DONE]" not in b"".join(events)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{server.url}/v1/chat/completions", json=CHAT) as resp:
            await resp.read()


async def test_malformed_chunk_mode(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    await configure(http, server, fail_mode="malformed_chunk")
    async with http.post(f"{server.url}/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
        events = await sse_events(resp)
    assert orjson.loads(events[0])["object"] == "chat.completion.chunk"
    assert b"{not json" in events
    async with http.post(f"{server.url}/v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(await resp.read())


async def test_embeddings_failure_mode(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    await configure(http, server, fail_mode="http_429")
    async with http.post(f"{server.url}/v1/embeddings", json={"input": "a"}) as resp:
        assert resp.status == 429


async def test_client_disconnect_mid_stream_is_counted(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    await configure(http, server, tokens_per_s=20, output_tokens=100)
    resp = await http.post(f"{server.url}/v1/chat/completions", json={**CHAT, "stream": True})
    await resp.content.readline()
    resp.close()
    for _ in range(50):
        if server.state.stats.disconnects:
            break
        await asyncio.sleep(0.01)
    assert server.state.stats.disconnects == 1 and server.state.stats.in_flight == 0


async def raw_exchange(server: MockServerHandle, data: bytes, until: bytes, count: int = 1) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(data)
    got = b""
    while got.count(until) < count:
        chunk = await asyncio.wait_for(reader.read(65536), 2)
        if not chunk:
            break
        got += chunk
    writer.close()
    await writer.wait_closed()
    return got


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)


async def test_pipelined_requests_are_answered_in_order(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    await configure(http, server, tokens_per_s=200)  # first answer asynchronous
    slow = post("/v1/chat/completions", orjson.dumps(CHAT))
    fast = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    got = await raw_exchange(server, slow + fast + slow, b"HTTP/1.1 200", 3)
    assert got.count(b"HTTP/1.1 200 OK") == 3
    first, second, third = (got.index(b"chat.completion"), got.index(b'"object":"list"'),
                            got.rindex(b"chat.completion"))
    assert first < second < third


async def test_expect_continue_and_connection_close(server: MockServerHandle) -> None:
    body = orjson.dumps(CHAT)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(post("/v1/chat/completions", b"", b"Expect: 100-continue\r\nConnection: close\r\n")
                 .replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)))
    assert (await asyncio.wait_for(reader.readline(), 2)).startswith(b"HTTP/1.1 100")
    writer.write(body)
    rest = await asyncio.wait_for(reader.read(), 2)  # read() to EOF: the server closed
    assert b"HTTP/1.1 200 OK" in rest and b"chat.completion" in rest
    writer.close()
    await writer.wait_closed()


async def test_chunked_request_bodies_are_refused(server: MockServerHandle) -> None:
    got = await raw_exchange(
        server, b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"}")
    assert got.startswith(b"HTTP/1.1 411")


def test_main_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--fail-rate", "3"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["--fail-mode", "explode"])


async def test_main_serves_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backends.mock_server", "--port", "0", "--model", "cli-model", "--waiting", "2",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        url = line.split(" on ")[1].split()[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/v1/models") as resp:
                assert (await resp.json())["data"][0]["id"] == "cli-model"
            async with http.get(f"{url}/metrics") as resp:
                assert "vllm:num_requests_waiting{model_name=\"cli-model\"} 2.0" in await resp.text()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_malformed_request_line_and_oversized_head(server: MockServerHandle) -> None:
    got = await raw_exchange(server, b"HELLO\r\n\r\n", b"}")
    assert got.startswith(b"HTTP/1.1 400")
    got = await raw_exchange(server, b"GET /health HTTP/1.1\r\nX: " + b"a" * 70_000, b"}")
    assert got.startswith(b"HTTP/1.1 431")


async def test_completion_stream_and_delayed_embeddings(server: MockServerHandle, http: aiohttp.ClientSession) -> None:
    body = {"prompt": "go", "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(f"{server.url}/v1/completions", json=body) as resp:
        events = await sse_events(resp)
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks) and chunks[-1]["usage"]["completion_tokens"] == 6
    await configure(http, server, first_token_ms=50)
    start = asyncio.get_running_loop().time()
    async with http.post(f"{server.url}/v1/embeddings", json={"input": "a"}) as resp:
        assert resp.status == 200 and len((await resp.json())["data"]) == 1
    assert asyncio.get_running_loop().time() - start >= 0.045


async def test_slow_reader_backpressure(server: MockServerHandle) -> None:
    server.state.set_spec(MockSpec(output_tokens=40_000))
    body = orjson.dumps({**CHAT, "stream": True})
    reader, writer = await asyncio.open_connection(server.host, server.port, limit=1 << 20)
    writer.write(post("/v1/chat/completions", body))
    await asyncio.sleep(0.3)  # not reading: the server must pause instead of buffering it all
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
        assert chunk
        data += chunk
    assert data.count(b"data: ") == 40_003 and b"data: [DONE]" in data
    writer.close()
    await writer.wait_closed()


async def test_a_failing_answer_drops_only_its_connection(
    server: MockServerHandle, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("backends.mock_answers.render_chunks", broken)
    with pytest.raises(aiohttp.ClientError):
        async with http.post(f"{server.url}/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
            await resp.read()
    async with http.get(f"{server.url}/health") as resp:
        assert resp.status == 200


def test_plan_cache_is_bounded() -> None:
    state = ServerState(MockSpec(output_tokens=2))
    for i in range(3000):
        generate(state, "chat", orjson.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}))
    assert 0 < len(state.plans) <= 1024
    state.set_spec(MockSpec())
    assert not state.plans
