"""Connection on its own: two aiortc peer connections wired together in one process (no
DHT, no envelope), ICE on 127.0.0.1. Cancellation, keepalive, hang-ups, file events, local
limits and partial files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiortc
import pytest
from pytest_helpers import loopback_ice

import hailing.rtc.files as files_mod
from hailing.errors import ConnectionClosed, HailingError, LocalProtocolError
from hailing.identity import Identity
from hailing.rtc import rtc_configuration
from hailing.rtc.connection import (
    LOST,
    MAX_TEXT,
    PEER_HUNG_UP,
    PEER_REPLACED,
    Connection,
    Event,
    FileAborted,
    FileReceived,
    FileStarted,
    TextMessage,
    check_file,
    check_text,
    clean_partials,
)
from hailing.signaling.sdp import encode_sdp, fingerprint_of

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


async def wire(tmp: Path, **kw: Any) -> tuple[Connection, Connection]:
    """(caller, callee), authenticated, as Peer builds them."""
    alice, bob = Identity.generate(), Identity.generate()
    pc1 = aiortc.RTCPeerConnection(configuration=rtc_configuration())
    pc2 = aiortc.RTCPeerConnection(configuration=rtc_configuration())
    ch1 = pc1.createDataChannel("hailing")
    await pc1.setLocalDescription(await pc1.createOffer())
    offer = encode_sdp(pc1.localDescription)
    await pc2.setRemoteDescription(pc1.localDescription)
    await pc2.setLocalDescription(await pc2.createAnswer())
    answer = encode_sdp(pc2.localDescription)
    fp1, fp2 = fingerprint_of(offer), fingerprint_of(answer)
    got: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()

    def on_channel(ch: Any) -> None:
        got.set_result(Connection(pc2, ch, bob, alice.public_key, initiator=False, local_fp=fp2,
                                  remote_fp=fp1, downloads=tmp / "bob", **kw))

    pc2.on("datachannel", on_channel)
    a = Connection(pc1, ch1, alice, bob.public_key, initiator=True, local_fp=fp1, remote_fp=fp2,
                   downloads=tmp / "alice", **kw)
    await pc1.setRemoteDescription(pc2.localDescription)
    b = await asyncio.wait_for(got, 10)
    await asyncio.gather(a.authenticate(), b.authenticate())
    return a, b


@pytest.fixture
async def conns(tmp_path: Path) -> AsyncIterator[tuple[Connection, Connection]]:
    a, b = await wire(tmp_path)
    try:
        yield a, b
    finally:
        await asyncio.gather(a.close(), b.close())


async def events_until(conn: Connection, pred: Callable[[Event], bool], timeout: float = 20) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        while True:
            ev = await conn.next_event()
            out.append(ev)
            if pred(ev):
                return out


def big_file(tmp: Path, size: int = 4 * 1024 * 1024) -> Path:
    p = tmp / "big.bin"
    p.write_bytes(random.Random(1).randbytes(size))
    return p


# -- cancellation ----------------------------------------------------------------------------


async def _cancel_send_at(a: Connection, b: Connection, src: Path, when: Callable[[asyncio.Task[Any]], None]) -> None:
    task = asyncio.ensure_future(a.send_file(src))
    when(task)
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):
            await task
    # The receiver hears of it: a file it started is aborted, never received. (Cancelled
    # while hashing, nothing was announced at all.)
    assert a.is_open and b.is_open  # a cancelled transfer does not hang up
    await a.send_text("marker")
    evs = await events_until(b, lambda e: e == TextMessage("marker"))
    assert evs in ([TextMessage("marker")],
                   [FileStarted(src.name, src.stat().st_size),
                    FileAborted(src.name, "cancelled by the sender"), TextMessage("marker")]), evs
    assert list((b.downloads).glob(".partial-*")) == []


@pytest.mark.parametrize("hops", range(6))
async def test_cancelling_send_file_right_after_the_buffer_drains_always_propagates(
        conns: tuple[Connection, Connection], tmp_path: Path, hops: int) -> None:
    """Issue 8 item 10: ``asyncio.wait_for`` (3.11) returns the result and drops the
    cancellation when both arrive in one loop iteration. Cancel ``hops`` callbacks after
    the channel's "buffered amount low" event, several times over: each must raise."""
    a, b = conns
    src = big_file(tmp_path)
    loop = asyncio.get_running_loop()
    for round_ in range(3):
        lows = 0

        def when(task: asyncio.Task[Any], round_: int = round_) -> None:
            def on_low() -> None:
                nonlocal lows
                lows += 1
                if lows == 2 + round_:
                    hop(hops)

            def hop(n: int) -> None:
                if n == 0:
                    task.cancel()
                else:
                    loop.call_soon(hop, n - 1)

            a.channel.on("bufferedamountlow", on_low)

        await _cancel_send_at(a, b, src, when)
        a.channel.remove_all_listeners("bufferedamountlow")
        a.channel.on("bufferedamountlow", a._low.set)


@pytest.mark.parametrize("delay_ms", [0, 1, 3, 7, 15, 30, 60, 120])
async def test_cancelling_send_file_at_any_time_propagates(
        conns: tuple[Connection, Connection], tmp_path: Path, delay_ms: int) -> None:
    a, b = conns
    src = big_file(tmp_path, 16 * 1024 * 1024)
    await _cancel_send_at(a, b, src, lambda t: asyncio.get_running_loop().call_later(delay_ms / 1000, t.cancel))
    # And the connection still carries a whole file afterwards.
    small = tmp_path / "small.txt"
    small.write_bytes(b"after the cancel")
    assert await a.send_file(small) == hashlib.sha256(b"after the cancel").hexdigest()
    evs = await events_until(b, lambda e: isinstance(e, FileReceived))
    assert evs == [FileStarted("small.txt", 16), FileReceived(
        "small.txt", b.downloads / "small.txt", 16, hashlib.sha256(b"after the cancel").hexdigest())]


async def test_cancelling_send_text_propagates(conns: tuple[Connection, Connection]) -> None:
    a, b = conns
    for _ in range(20):
        task = asyncio.ensure_future(a.send_text("hi"))
        got = asyncio.ensure_future(b.recv())
        await got
        task.cancel()  # the ack may be on its way in this very iteration
        with pytest.raises(asyncio.CancelledError):
            await task


# -- file events and progress ---------------------------------------------------------------


async def test_file_events_and_progress(conns: tuple[Connection, Connection], tmp_path: Path) -> None:
    a, b = conns
    src = big_file(tmp_path, 1_000_000)
    seen: list[tuple[int, int]] = []
    digest = await a.send_file(src, progress=lambda sent, total: seen.append((sent, total)))
    assert seen[-1] == (1_000_000, 1_000_000)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen) and len(seen) > 10
    evs = await events_until(b, lambda e: isinstance(e, FileReceived))
    assert evs[0] == FileStarted("big.bin", 1_000_000)
    assert isinstance(evs[1], FileReceived) and evs[1].sha256 == digest and len(evs) == 2
    # recv() skips the FileStarted event: old callers see what they saw before.
    await a.send_file(src)
    got = await b.recv()
    assert isinstance(got, FileReceived) and got.path.name == "big (1).bin"


async def test_a_receiver_that_cannot_store_refuses_at_once(
        conns: tuple[Connection, Connection], tmp_path: Path) -> None:
    a, b = conns
    b.downloads.write_bytes(b"not a directory")
    src = big_file(tmp_path, 16 * 1024 * 1024)
    with pytest.raises(HailingError, match="refused the file: the receiver cannot store it"):
        await asyncio.wait_for(a.send_file(src), 20)
    evs = await events_until(b, lambda e: isinstance(e, FileAborted))
    assert evs[0] == FileStarted("big.bin", 16 * 1024 * 1024)
    assert isinstance(evs[1], FileAborted) and evs[1].reason.startswith("cannot write it"), evs
    await a.send_text("still fine")
    assert await b.recv() == TextMessage("still fine")
    assert b.stats["garbage"] == 0 and a.is_open


async def test_a_receiver_that_hangs_up_midway_stops_the_sender(
        conns: tuple[Connection, Connection], tmp_path: Path) -> None:
    a, b = conns
    src = big_file(tmp_path, 16 * 1024 * 1024)
    task = asyncio.ensure_future(a.send_file(src))
    await events_until(b, lambda e: isinstance(e, FileStarted))
    await b.close("interrupted")
    with pytest.raises(ConnectionClosed, match=PEER_HUNG_UP):
        await asyncio.wait_for(task, 10)
    evs = [e async for e in b]
    assert evs == [FileAborted("big.bin", "the connection closed: interrupted")]
    assert b.close_reason == "interrupted"
    async with asyncio.timeout(10):
        assert [e async for e in a] == []
    assert a.close_reason == PEER_HUNG_UP
    assert list(b.downloads.glob(".partial-*")) == []


async def test_a_sender_that_hangs_up_midway(conns: tuple[Connection, Connection], tmp_path: Path) -> None:
    a, b = conns
    src = big_file(tmp_path, 16 * 1024 * 1024)
    task = asyncio.ensure_future(a.send_file(src))
    await events_until(b, lambda e: isinstance(e, FileStarted))
    await a.close()
    with pytest.raises(ConnectionClosed):
        await task
    async with asyncio.timeout(10):
        evs = [e async for e in b]
    assert len(evs) == 1 and isinstance(evs[0], FileAborted), evs
    assert b.close_reason == PEER_HUNG_UP


async def test_close_replaced_tells_the_peer(conns: tuple[Connection, Connection]) -> None:
    a, b = conns
    await a.close(replaced=True)
    async with asyncio.timeout(10):
        assert [e async for e in b] == []
    assert b.close_reason == PEER_REPLACED
    with pytest.raises(ConnectionClosed, match=PEER_REPLACED):
        await b.send_text("anyone?")


async def test_a_message_that_crosses_a_bye_is_not_taken(conns: tuple[Connection, Connection]) -> None:
    """A message sent as the peer hangs up is either delivered and acknowledged, or
    neither: never shown by the peer while its sender hears "not delivered" (a chat would
    send it again on another connection: twice)."""
    a, b = conns
    closer = asyncio.ensure_future(b.close(replaced=True))
    await asyncio.sleep(0)  # b's bye is out
    with pytest.raises(ConnectionClosed, match=PEER_REPLACED):
        await a.send_text("crossing")
    await closer
    async with asyncio.timeout(10):
        assert [e async for e in b] == []
    assert b.stats["after_bye"] in (0, 1) and b.stats["garbage"] == 0


# -- keepalive -------------------------------------------------------------------------------


async def test_a_silent_peer_is_noticed_by_the_keepalive(tmp_path: Path) -> None:
    """The peer's process is frozen (nothing leaves it, not even SCTP's own heartbeats):
    the sender notices after ``keepalive_timeout`` instead of SCTP's 30-60 s."""
    a, b = await wire(tmp_path, keepalive_interval=0.2, keepalive_timeout=1.0)
    try:
        b._pinger.cancel()  # type: ignore[union-attr]
        b.channel.remove_all_listeners("message")  # b hears nothing and answers nothing
        b.pc.sctp._send_chunk = _silent  # and sends nothing at all
        src = big_file(tmp_path, 16 * 1024 * 1024)
        with pytest.raises(ConnectionClosed, match="stopped answering"):
            await asyncio.wait_for(a.send_file(src), 20)
        assert a.close_reason is not None and "stopped answering" in a.close_reason
        assert not a.is_open
    finally:
        await asyncio.gather(a.close(), b.close())


async def _silent(*_: object) -> None:
    return None


async def test_keepalive_keeps_a_quiet_link_open(tmp_path: Path) -> None:
    a, b = await wire(tmp_path, keepalive_interval=0.1, keepalive_timeout=0.5)
    try:
        await asyncio.sleep(1.5)  # three timeouts with nothing to say
        assert a.is_open and b.is_open
        await a.send_text("still here")
        assert await b.recv() == TextMessage("still here")
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_transport_lost_ends_the_stream(conns: tuple[Connection, Connection]) -> None:
    a, b = conns
    await b.pc.close()  # no bye: the transport just goes
    async with asyncio.timeout(10):
        assert [e async for e in a] == []
    assert a.close_reason in (LOST,) or "stopped answering" in (a.close_reason or "")


# -- local limits, before anything is sent ---------------------------------------------------


def test_check_text_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_text("x" * MAX_TEXT)
    with pytest.raises(LocalProtocolError, match="at most 65536 bytes"):
        check_text("é" * (MAX_TEXT // 2 + 1))
    with pytest.raises(LocalProtocolError, match="no such file"):
        check_file(tmp_path / "nope")
    with pytest.raises(LocalProtocolError, match="not a regular file"):
        check_file(tmp_path)
    f = tmp_path / "f"
    f.write_bytes(b"12345")
    assert check_file(f) == 5
    monkeypatch.setattr(files_mod, "MAX_FILE", 4)
    with pytest.raises(LocalProtocolError, match="the most a file can be is 4 bytes"):
        check_file(f)
    if os.geteuid() != 0:
        monkeypatch.setattr(files_mod, "MAX_FILE", 100)
        f.chmod(0)
        with pytest.raises(LocalProtocolError, match="cannot read"):
            check_file(f)


async def test_send_checks_limits_before_sending(conns: tuple[Connection, Connection], tmp_path: Path) -> None:
    a, b = conns
    with pytest.raises(LocalProtocolError):
        await a.send_text("x" * (MAX_TEXT + 1))
    with pytest.raises(LocalProtocolError):
        await a.send_file(tmp_path / "nope")
    await a.send_text("fine")
    assert await b.recv() == TextMessage("fine")
    assert b.stats["garbage"] == 0


# -- partial files ---------------------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_clean_partials(tmp_path: Path) -> None:
    d = tmp_path / "downloads"
    d.mkdir()
    now = time.time()
    crashed = d / f".partial-{_dead_pid()}-1-1"  # its writer is gone
    crashed.write_bytes(b"x")
    held = d / f".partial-{os.getpid()}-2-2"  # a live transfer, locked
    f = files_mod._Incoming(2, "held", 10, "0" * 64, held)
    old_unheld = d / f".partial-{os.getpid()}-3-3"  # alive pid, not locked, old
    old_unheld.write_bytes(b"x")
    os.utime(old_unheld, (now - 60, now - 60))
    fresh_unheld = d / f".partial-{os.getpid()}-4-4"  # may be about to be locked
    fresh_unheld.write_bytes(b"x")
    keep = d / "photo.jpg"
    keep.write_bytes(b"x")
    try:
        removed = clean_partials(d, now=now)
    finally:
        f.stream.close()
    assert sorted(removed) == sorted([crashed, old_unheld])
    assert sorted(d.iterdir()) == sorted([held, fresh_unheld, keep])
    assert clean_partials(tmp_path / "missing") == []

