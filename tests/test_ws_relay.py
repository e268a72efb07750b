"""The WebSocket signaling relay (the centralized baseline), on 127.0.0.1 with OS ports:
delivery both ways, offline recipients, replaced ids, bounds, garbage from either side."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from hailing.errors import HailingError, LocalProtocolError
from hailing.signaling.ws_relay import (
    CLOSE_TIMEOUT,
    MAX_PAYLOAD,
    RecipientOffline,
    RelayClient,
    RelayError,
    RelayServer,
    serve_relay,
)


@pytest.fixture
async def server() -> AsyncIterator[RelayServer]:
    async with RelayServer() as s:
        yield s


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def assert_still_serving(server: RelayServer) -> None:
    """Two fresh clients can still exchange a message through ``server``."""
    async with RelayClient(server.url, "probe-a") as a, RelayClient(server.url, "probe-b") as b:
        await a.send("probe-b", b"still there?")
        assert await asyncio.wait_for(b.recv(), 5) == ("probe-a", b"still there?")


async def closed_by_server(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """Read until the server closes; return (close code, reason)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        if msg.type is WSMsgType.CLOSE:
            return msg.data, msg.extra or ""
        if msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
            return ws.close_code, ""


# -- delivery --------------------------------------------------------------------------


async def test_two_clients_exchange_messages_both_ways(server: RelayServer) -> None:
    async with RelayClient(server.url, "alice") as a, RelayClient(server.url, "bob_2-X") as b:
        big = bytes(range(256)) * (MAX_PAYLOAD // 256)
        for payload in (b"offer", b"", b"\x00\x01\xff" * 10, big):
            await a.send("bob_2-X", payload)
            assert await asyncio.wait_for(b.recv(), 5) == ("alice", payload)
        await b.send("alice", b"answer")
        async for sender, payload in a:
            assert (sender, payload) == ("bob_2-X", b"answer")
            break
    assert server.stats.forwarded == 5
    assert server.stats.bad_frames == server.stats.oversized == 0


async def test_concurrent_sends_get_their_own_status(server: RelayServer) -> None:
    async with RelayClient(server.url, "a") as a, RelayClient(server.url, "b") as b:
        results = await asyncio.gather(
            *(a.send("b" if i % 2 else "nobody", bytes([i])) for i in range(20)),
            return_exceptions=True,
        )
        for i, r in enumerate(results):
            assert r is None if i % 2 else isinstance(r, RecipientOffline), (i, r)
        got = [await asyncio.wait_for(b.recv(), 5) for _ in range(10)]
        assert got == [("a", bytes([i])) for i in range(1, 20, 2)]


async def test_offline_recipient_raises_and_sender_keeps_working(server: RelayServer) -> None:
    async with RelayClient(server.url, "caller") as a:
        with pytest.raises(RecipientOffline, match="callee is not connected"):
            await a.send("callee", b"offer")
        assert server.stats.offline == 1
        async with RelayClient(server.url, "callee") as b:
            await a.send("callee", b"offer")
            assert await asyncio.wait_for(b.recv(), 5) == ("caller", b"offer")
        with pytest.raises(RecipientOffline):  # left again
            await a.send("callee", b"offer")
    assert server.stats.offline == 2


async def test_duplicate_id_replaces_the_first_connection(server: RelayServer) -> None:
    async with (
        RelayClient(server.url, "a") as a,
        RelayClient(server.url, "b") as b1,
        RelayClient(server.url, "b") as b2,
    ):
        with pytest.raises(RelayError, match="4001 replaced"):
            await asyncio.wait_for(b1.recv(), 5)
        assert b1.close_code == 4001
        with pytest.raises(RelayError, match="4001"):
            await b1.send("a", b"from the old one")
        await a.send("b", b"to the new one")
        assert await asyncio.wait_for(b2.recv(), 5) == ("a", b"to the new one")
        assert server.clients == 2
    assert server.stats.replaced == 1


# -- bounds and garbage from clients -------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"\x01t" + b"x" * (MAX_PAYLOAD + 1),  # over the payload limit, under the frame limit
        b"\x01t" + b"x" * (1 << 20),  # over the frame limit itself (aiohttp refuses it)
    ],
    ids=["payload-64KiB+1", "frame-1MiB"],
)
async def test_oversized_payload_closes_with_1009(
    server: RelayServer, session: aiohttp.ClientSession, frame: bytes
) -> None:
    async with RelayClient(server.url, "t") as target:
        ws = await session.ws_connect(server.url, params={"id": "big"})
        await ws.send_bytes(frame)
        code, _ = await closed_by_server(ws)
        assert code == 1009
        assert server.stats.oversized == 1 and server.stats.forwarded == 0
        await ws.close()
        await assert_still_serving(server)
        assert target.dropped == 0


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "empty"),
        (b"\x00payload", "length 0"),
        (b"\xffabc", "length 255"),
        (b"\x81" + b"a" * 200, "length 129"),
        (b"\x05ab", "past the end"),
        (b"\x03a b", "characters"),
        (b"\x02\xc3\xa9", "characters"),
        (b"\x03a/b", "characters"),
        (b"\x02a\n", "characters"),
    ],
)
async def test_malformed_frames_are_counted_and_close_the_connection(
    server: RelayServer, session: aiohttp.ClientSession, frame: bytes, reason: str
) -> None:
    async with RelayClient(server.url, "a") as bystander:
        ws = await session.ws_connect(server.url, params={"id": "evil"})
        await ws.send_bytes(frame)
        code, text = await closed_by_server(ws)
        assert code == 1008
        assert text.startswith("bad frame: ") and reason in text
        assert server.stats.bad_frames == 1 and server.stats.forwarded == 0
        await ws.close()
        await assert_still_serving(server)
        assert bystander.dropped == 0
    assert server.stats.bad_frames == 1


async def test_text_frame_closes_with_1003(server: RelayServer, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(server.url, params={"id": "texter"})
    await ws.send_str('{"to": "bob"}')
    code, text = await closed_by_server(ws)
    assert (code, text) == (1003, "text frames are not supported")
    assert server.stats.text_frames == 1
    await ws.close()
    await assert_still_serving(server)


@pytest.mark.parametrize(
    "query",
    [
        {"id": ""},
        {"id": "a" * 129},
        {"id": "a b"},
        {"id": "é"},
        {"id": "../x"},
        {"id": "a\n"},
        {"id": "a\x00"},
        {},
        {"other": "a"},
        [("id", "a"), ("id", "b")],
    ],
    ids=str,
)
async def test_bad_id_in_the_url_is_refused(
    server: RelayServer, session: aiohttp.ClientSession, query: dict[str, str] | list[tuple[str, str]]
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(server.url, params=query)
    assert info.value.status == 400 and info.value.headers is not None
    assert info.value.headers["X-Relay-Refused"].startswith("invalid id")
    assert server.stats.bad_handshakes == 1 and server.clients == 0
    await assert_still_serving(server)


async def test_plain_http_get_is_refused(server: RelayServer, session: aiohttp.ClientSession) -> None:
    async with session.get(server.url.replace("ws://", "http://"), params={"id": "a"}) as resp:
        assert resp.status == 400
        assert "not a WebSocket" in await resp.text()
    assert server.stats.bad_handshakes == 1


async def test_id_at_the_limit_is_accepted(server: RelayServer) -> None:
    long_id = "Z" * 128
    async with RelayClient(server.url, long_id) as a, RelayClient(server.url, "b") as b:
        await a.send("b", b"hi")
        assert await asyncio.wait_for(b.recv(), 5) == (long_id, b"hi")
        await b.send(long_id, b"ho")
        assert await asyncio.wait_for(a.recv(), 5) == ("b", b"ho")


async def test_max_clients_refuses_with_503_but_allows_replacement() -> None:
    async with RelayServer(max_clients=2) as server:
        async with RelayClient(server.url, "a"), RelayClient(server.url, "b"):
            with pytest.raises(RelayError, match="HTTP 503 relay full"):
                await RelayClient(server.url, "c").connect()
            async with RelayClient(server.url, "a"):  # same id: replaces, not refused
                assert server.clients == 2
        assert server.stats.refused_full == 1
        await assert_still_serving(server)


async def test_rate_limit_refuses_then_disconnects() -> None:
    async with RelayServer(rate=0.5, burst=5) as server:
        async with RelayClient(server.url, "fast") as a, RelayClient(server.url, "b") as b:
            for i in range(5):
                await a.send("b", bytes([i]))
            for i in range(5):
                with pytest.raises(RelayError, match="rate limit"):
                    await a.send("b", bytes([i]))
            with pytest.raises(RelayError, match="1008 rate limit exceeded"):
                await a.send("b", b"one too many")
            assert [await b.recv() for _ in range(5)] == [("fast", bytes([i])) for i in range(5)]
        assert server.stats.rate_limited == 6 and server.stats.forwarded == 5
        await assert_still_serving(server)


async def test_a_recipient_that_does_not_read_is_reported_congested(
    session: aiohttp.ClientSession,
) -> None:
    async with RelayServer(rate=1e6, burst=1e6, outbox_frames=2) as server:
        sleeper = await session.ws_connect(server.url, params={"id": "sleeper"})  # never reads
        async with RelayClient(server.url, "a") as a:
            with pytest.raises(RelayError, match="sleeper is not reading"):
                for _ in range(2000):
                    await a.send("sleeper", bytes(MAX_PAYLOAD))
        assert server.stats.congested == 1
        await sleeper.close()


async def test_a_client_that_does_not_receive_pushes_back_and_still_closes_cleanly() -> None:
    before = asyncio.all_tasks()
    async with RelayServer(rate=1e6, burst=1e6, outbox_frames=2) as server:
        lazy = RelayClient(server.url, "lazy", inbox_size=2)
        await lazy.connect()
        async with RelayClient(server.url, "a") as a:
            sent = 0
            with pytest.raises(RelayError, match="lazy is not reading"):
                for sent in range(2000):
                    await a.send("lazy", sent.to_bytes(4, "big") + bytes(MAX_PAYLOAD - 4))
            assert 2 < sent < 2000
            assert lazy._inbox.qsize() == 2  # the client stopped reading its socket
            got = [await asyncio.wait_for(lazy.recv(), 5) for _ in range(sent)]
            assert [int.from_bytes(p[:4], "big") for _, p in got] == list(range(sent))
            await a.send("lazy", b"flowing again")
            assert await asyncio.wait_for(lazy.recv(), 5) == ("a", b"flowing again")
            for i in range(3):  # fill its inbox again, then close while its reader waits
                await a.send("lazy", bytes([i]))
            while lazy._inbox.qsize() < 2:
                await asyncio.sleep(0.001)
            await asyncio.wait_for(lazy.close(), 5)
    assert asyncio.all_tasks() == before


async def test_a_client_that_reads_nothing_can_be_replaced_and_stopped(
    session: aiohttp.ClientSession,
) -> None:
    before = asyncio.all_tasks()
    server = RelayServer(rate=1e6, burst=1e6, outbox_frames=2)
    await server.start()
    a = RelayClient(server.url, "a")
    await a.connect()
    deaf = {}
    for name in ("v", "w"):  # they never read: their queues and TCP buffers fill up
        deaf[name] = await session.ws_connect(server.url, params={"id": name})
        with pytest.raises(RelayError, match=f"{name} is not reading"):
            for _ in range(2000):
                await a.send(name, bytes(MAX_PAYLOAD))
    # The relay cannot queue the status for this frame behind the full queue to "v".
    await deaf["v"].send_bytes(b"\x01a" + b"from the deaf one")
    assert await asyncio.wait_for(a.recv(), 5) == ("v", b"from the deaf one")
    v2 = RelayClient(server.url, "v")
    await v2.connect()
    await a.send("v", b"for the new one")
    assert await asyncio.wait_for(v2.recv(), 5) == ("a", b"for the new one")
    for _ in range(400):  # the replaced connection's handler ends: a, the new v, and w remain
        if server.open_connections == 3:
            break
        await asyncio.sleep(0.005)
    assert (server.open_connections, server.stats.replaced) == (3, 1)
    t0 = time.perf_counter()
    await server.stop()  # "w" never answers the close: bounded by CLOSE_TIMEOUT, not forever
    assert time.perf_counter() - t0 < CLOSE_TIMEOUT + 1
    for c in (a, v2):
        await c.close()
    for ws in deaf.values():
        await ws.close()
    assert asyncio.all_tasks() == before


# -- garbage from the relay ------------------------------------------------------------


async def test_client_drops_garbage_from_the_relay() -> None:
    garbage = [b"", b"\x05ab", b"\x00", b"\x03a b", b"\x81" + b"x" * 200, b"\x00\x01\x03a b"]

    async def fake_relay(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for frame in garbage:  # nothing is pending: even a status is garbage here
            await ws.send_bytes(frame)
        await ws.send_str("text")
        await ws.send_bytes(b"\x01zafter the garbage")
        msg = await ws.receive()  # the client's send
        assert msg.type is WSMsgType.BINARY
        await ws.send_bytes(b"\x00\x01\x03a b")  # a status naming an impossible id
        await ws.send_bytes(b"\x00\x07")  # an unknown status
        await ws.send_bytes(b"\x00\x01\x02ab")  # a status nobody waits for
        await ws.close(code=4999, message=b"bye")
        return ws

    app = web.Application()
    app.router.add_get("/ws", fake_relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with RelayClient(f"ws://127.0.0.1:{port}/ws", "me") as c:
            assert await asyncio.wait_for(c.recv(), 5) == ("z", b"after the garbage")
            with pytest.raises(RelayError, match="unknown status 7"):
                await c.send("z", b"x")
            with pytest.raises(RelayError, match="4999 bye"):
                await asyncio.wait_for(c.recv(), 5)
            assert c.dropped == len(garbage) + 3
    finally:
        await runner.cleanup()


# -- client misuse and failures ------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "a" * 129, "a b", "é", "a:b"])
async def test_client_refuses_bad_ids_locally(server: RelayServer, bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        RelayClient(server.url, bad)
    async with RelayClient(server.url, "a") as a:
        with pytest.raises(LocalProtocolError):
            await a.send(bad, b"x")
        with pytest.raises(LocalProtocolError, match="exceeds"):
            await a.send("a", bytes(MAX_PAYLOAD + 1))
    assert server.stats.bad_frames == server.stats.forwarded == 0


async def test_send_before_connect_and_after_close(server: RelayServer) -> None:
    c = RelayClient(server.url, "a")
    with pytest.raises(RelayError, match="not connected"):
        await c.send("b", b"x")
    await c.connect()
    await c.close()
    with pytest.raises(RelayError, match="closed"):
        await c.send("b", b"x")
    with pytest.raises(RelayError, match="closed"):
        await c.recv()


@pytest.mark.parametrize("url", ["ws://127.0.0.1:1/ws", "not a url", "ws://127.0.0.1:{port}/nope"])
async def test_connect_failures_are_one_line_relay_errors(server: RelayServer, url: str) -> None:
    with pytest.raises(RelayError) as info:
        await RelayClient(url.format(port=server.port), "a").connect()
    assert "\n" not in str(info.value) and str(info.value)
    assert isinstance(info.value, HailingError)


# -- lifecycle -------------------------------------------------------------------------------


async def test_stop_closes_all_clients_and_leaves_no_tasks() -> None:
    before = asyncio.all_tasks()
    server = RelayServer()
    await server.start()
    clients = [RelayClient(server.url, f"c{i}") for i in range(5)]
    for c in clients:
        await c.connect()
    await clients[0].send("c1", b"x")
    await server.stop()
    for c in clients:
        with pytest.raises(RelayError, match="1001 relay shutting down"):
            while True:
                await asyncio.wait_for(c.recv(), 5)
        assert c.close_code == 1001
    with pytest.raises(RelayError):
        await RelayClient(server.url, "late").connect()
    for c in clients:
        await c.close()
    await server.stop()  # idempotent
    assert asyncio.all_tasks() == before


async def test_close_ends_iteration_and_leaves_no_tasks() -> None:
    before = asyncio.all_tasks()
    server = RelayServer()
    await server.start()
    c = RelayClient(server.url, "a")
    await c.connect()
    received: list[tuple[str, bytes]] = []

    async def consume() -> None:
        async for item in c:
            received.append(item)

    task = asyncio.create_task(consume())
    await c.send("a", b"to myself")
    while not received:
        await asyncio.sleep(0.001)
    await c.close()
    await asyncio.wait_for(task, 5)
    await c.close()  # idempotent
    assert received == [("a", b"to myself")]
    await server.stop()
    assert asyncio.all_tasks() == before


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> dict[str, asyncio.Event]:
    """Holds the server's WebSocket handshake for the ids put in it until their event is set."""
    gates: dict[str, asyncio.Event] = {}
    prepare = web.WebSocketResponse.prepare

    async def gated(self: web.WebSocketResponse, request: web.BaseRequest) -> object:
        if (event := gates.get(request.query.get("id", ""))) is not None:
            await event.wait()
        return await prepare(self, request)

    monkeypatch.setattr(web.WebSocketResponse, "prepare", gated)
    return gates


async def test_stop_during_a_handshake_closes_that_client_too(gate: dict[str, asyncio.Event]) -> None:
    gate["slow"] = asyncio.Event()
    server = RelayServer()
    await server.start()
    slow = RelayClient(server.url, "slow")
    connecting = asyncio.create_task(slow.connect())
    while server.clients == 0:
        await asyncio.sleep(0.001)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.01)
    gate["slow"].set()
    await connecting
    with pytest.raises(RelayError, match="1001 relay shutting down"):
        await asyncio.wait_for(slow.recv(), 5)
    await asyncio.wait_for(stopping, 5)
    await slow.close()


async def test_a_newer_connection_replaces_one_still_in_its_handshake(
    server: RelayServer, gate: dict[str, asyncio.Event]
) -> None:
    held = gate["b"] = asyncio.Event()
    first = RelayClient(server.url, "b")
    connecting = asyncio.create_task(first.connect())
    while server.clients == 0:
        await asyncio.sleep(0.001)
    del gate["b"]  # the second connection with this id is not held
    async with RelayClient(server.url, "b") as second, RelayClient(server.url, "a") as a:
        held.set()
        await connecting
        with pytest.raises(RelayError, match="4001 replaced"):
            await asyncio.wait_for(first.recv(), 5)
        await a.send("b", b"for the newer one")
        assert await asyncio.wait_for(second.recv(), 5) == ("a", b"for the newer one")
    await first.close()
    assert server.stats.replaced == 1


async def test_listening_on_a_busy_port_is_a_relay_error(server: RelayServer) -> None:
    with pytest.raises(RelayError, match=r"cannot listen on 127\.0\.0\.1"):
        await RelayServer("127.0.0.1", server.port).start()


async def test_serve_relay_prints_its_url_first_and_stops_when_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = asyncio.all_tasks()
    task = asyncio.create_task(serve_relay(("127.0.0.1", 0)))
    out = ""
    while not out:
        await asyncio.sleep(0.005)
        out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("relay listening on ws://127.0.0.1:") and first.endswith("/ws")
    url = first.removeprefix("relay listening on ")
    async with RelayClient(url, "a") as a, RelayClient(url, "b") as b:
        await a.send("b", b"hello")
        assert await asyncio.wait_for(b.recv(), 5) == ("a", b"hello")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(RelayError, match="1001"):
            await asyncio.wait_for(b.recv(), 5)
    assert asyncio.all_tasks() - {asyncio.current_task()} <= before


# -- the sanity figure -------------------------------------------------------------------


async def test_1000_round_trips_median_latency() -> None:
    async with (
        RelayServer(rate=1e6, burst=1e6) as server,  # the default 200 msgs/s would throttle it
        RelayClient(server.url, "ping") as a,
        RelayClient(server.url, "pong") as b,
    ):

        async def echo() -> None:
            async for sender, payload in b:
                await b.send(sender, payload)

        echoer = asyncio.create_task(echo())
        samples = []
        payload = bytes(300)  # about a sealed compact offer
        for i in range(1000):
            body = i.to_bytes(4, "big") + payload
            t0 = time.perf_counter()
            await a.send("pong", body)
            assert await asyncio.wait_for(a.recv(), 5) == ("pong", body)
            samples.append(time.perf_counter() - t0)
        await b.close()
        await echoer
    median_ms = statistics.median(samples) * 1000
    p95_ms = sorted(samples)[949] * 1000
    print(f"\nws relay: 1000 round trips, median {median_ms:.3f} ms, p95 {p95_ms:.3f} ms")
    assert server.stats.forwarded == 2000
    assert median_ms < 50
