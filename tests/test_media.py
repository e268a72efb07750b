"""Media for Python peers (hailing.rtc.media, hailing.rtc.tracks): a file played into a
call, the peer's tracks handed back and recorded, checked by decoding the recording with
PyAV. In-process peers over in-memory couplers; the CLI is in test_cli_media.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from media_clips import decoded_frames, make_clip, video_size
from pytest_helpers import loopback_ice
from session_doubles import Switchboard, eventually

from hailing.errors import ConnectionClosed, LocalProtocolError, QueryTimeout, UsageError
from hailing.identity import load_or_create_identity
from hailing.peer import Peer
from hailing.rtc.connection import TextMessage
from hailing.rtc.media import (
    CallMedia,
    MediaOptions,
    Playback,
    check_play,
    check_record,
    receive_only,
    recording_path,
)
from hailing.session.coupler import SignalKind
from hailing.session.external import IncomingCall

_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=2.0)


async def pair(tmp_path: Path, started: list[Peer], **bob_kw: object) -> tuple[Peer, Peer]:
    board = Switchboard()
    a_id = load_or_create_identity(tmp_path / "alice")
    b_id = load_or_create_identity(tmp_path / "bob")
    alice = Peer(tmp_path / "alice", couplers=[board.coupler(a_id.public_key)])
    bob = Peer(tmp_path / "bob", couplers=[board.coupler(b_id.public_key)], **bob_kw)  # type: ignore[arg-type]
    for p in (alice, bob):
        await p.start()
        started.append(p)
    assert bob.contacts is not None
    bob.contacts.add(alice.contact_id, "alice")
    return alice, bob


async def test_a_played_file_is_received_and_recorded_on_both_sides(
        tmp_path: Path, started: list[Peer], clip: Path) -> None:
    """alice plays the clip and records bob; bob (answer_tracks: a fresh player of the
    clip) records alice. Both recordings hold decoded video and audio of the clip's size."""
    alice, bob = await pair(tmp_path, started, answer_tracks=MediaOptions(play=clip).answer_tracks)
    playback = Playback(clip)
    assert playback.kinds == ["audio", "video"] and playback.receive_only() == []
    conn = await alice.connect(bob.contact_id, timeout=10, tracks=playback.tracks)
    inc = await bob.accept(10)
    assert sorted(t.kind for t in conn.tracks.received) == ["audio", "video"]
    assert sorted(t.kind for t in inc.tracks.received) == ["audio", "video"]
    assert sorted(t.kind for t in conn.tracks.sent) == ["audio", "video"]
    assert inc.tracks.kinds == ["audio", "video"]
    first = await conn.tracks.next(1)
    assert first is conn.tracks.received[0]
    mine = CallMedia(conn.tracks.received, record=tmp_path / "alice-got.webm")
    theirs = CallMedia(inc.tracks.received, record=tmp_path / "bob-got.mkv")
    await mine.start()
    await theirs.start()
    await conn.send_text("the data channel still works")
    assert await inc.recv() == TextMessage("the data channel still works")
    await eventually(lambda: theirs.frames["video"] >= 10 and mine.frames["video"] >= 10,
                     "frames on both sides", timeout=20)
    await conn.close()
    got = [await theirs.stop(), await mine.stop()]
    playback.stop()
    for summary, name in zip(got, ("bob-got.mkv", "alice-got.webm"), strict=True):
        assert summary["recording"] == str(tmp_path / name) and "error" not in summary
        frames = decoded_frames(tmp_path / name)
        assert frames.get("video", 0) >= 5 and frames.get("audio", 0) >= 5, (name, frames)
        assert video_size(tmp_path / name) == (320, 240)
    assert await conn.tracks.next(1) is conn.tracks.received[1]  # still handed out
    with pytest.raises(ConnectionClosed):
        await conn.tracks.next(1)  # none left, and closed
    await eventually(lambda: playback.ended, "the player stopped")


async def test_audio_only_from_a_file_with_video_and_receive_only_calls(
        tmp_path: Path, started: list[Peer], clip: Path) -> None:
    """--audio-only with a file that has video: the video stream is taken out of the
    player (not decoded for nobody), only audio is offered; the callee's answer tracks
    of a kind the offer lacks are stopped without breaking its player. A caller with no
    file receives only; a data-only call never asks for answer tracks."""
    asked: list[bytes] = []
    options = MediaOptions(play=clip)

    def answer_tracks(caller: bytes) -> list[object]:
        asked.append(caller)
        return options.answer_tracks(caller)

    alice, bob = await pair(tmp_path, started, answer_tracks=answer_tracks)
    plain = await alice.connect(bob.contact_id, timeout=10)
    await bob.accept(10)
    assert asked == [] and plain.tracks.kinds == [] and plain.tracks.received == []

    playback = Playback(clip, audio_only=True)
    assert playback.kinds == ["audio"] and playback.receive_only() == []
    conn = await alice.connect(bob.contact_id, timeout=10, tracks=playback.tracks)
    inc = await bob.accept(10)
    assert len(asked) == 1
    assert conn.tracks.kinds == ["audio"] and [t.kind for t in inc.tracks.received] == ["audio"]
    assert [t.kind for t in conn.tracks.received] == ["audio"]  # bob's video: no room, stopped
    got = CallMedia(conn.tracks.received)
    heard = CallMedia(inc.tracks.received)
    await got.start()
    await heard.start()
    await eventually(lambda: got.frames["audio"] >= 20 and heard.frames["audio"] >= 20,
                     "audio both ways", timeout=20)
    await conn.close()
    assert (await got.stop())["recording"] is None
    playback.stop()

    listener = await alice.connect(bob.contact_id, timeout=10, tracks=receive_only(None))
    inc = await bob.accept(10)
    assert listener.tracks.sent == [] and sorted(listener.tracks.kinds) == ["audio", "video"]
    assert sorted(t.kind for t in listener.tracks.received) == ["audio", "video"]
    assert inc.tracks.received == []
    await listener.close()


async def test_next_track_times_out_and_ends_with_the_connection(
        tmp_path: Path, started: list[Peer]) -> None:
    alice, bob = await pair(tmp_path, started)
    conn = await alice.connect(bob.contact_id, timeout=10)
    with pytest.raises(QueryTimeout, match="no media track"):
        await conn.tracks.next(0.05)
    waiting = asyncio.ensure_future(conn.tracks.next())
    await asyncio.sleep(0)
    await conn.close()
    with pytest.raises(ConnectionClosed):
        await waiting


# -- checks before any network ------------------------------------------------------------


def test_check_play_and_check_record_say_what_is_wrong_in_one_line(
        tmp_path: Path, clip: Path) -> None:
    assert check_play(clip) == ["audio", "video"]
    assert check_play(clip, audio_only=True) == ["audio"]
    silent = make_clip(tmp_path / "silent.mp4", 0.5, audio=False)
    with pytest.raises(LocalProtocolError, match="no audio stream"):
        check_play(silent, audio_only=True)
    with pytest.raises(LocalProtocolError, match="no such file"):
        check_play(tmp_path / "missing.mp4")
    (tmp_path / "notes.txt").write_text("not a film")
    with pytest.raises(LocalProtocolError, match="not a media file"):
        check_play(tmp_path / "notes.txt")
    with pytest.raises(LocalProtocolError, match="a directory"):
        check_play(tmp_path)
    with pytest.raises(UsageError, match=r"must end in \.mp4"):
        check_record(tmp_path / "out.avi")
    with pytest.raises(LocalProtocolError, match="no directory"):
        check_record(tmp_path / "nowhere" / "out.mkv")
    assert check_record(tmp_path / "out.MKV") == tmp_path / "out.MKV"


def test_recording_names_of_a_daemon_never_collide(tmp_path: Path) -> None:
    template = tmp_path / "calls.mkv"
    when = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
    first = recording_path(template, "Alice Smith/../x", when)
    assert first == tmp_path / "calls-Alice_Smith_.._x-20270115-080000.mkv"
    first.write_bytes(b"taken")
    second = recording_path(template, "Alice Smith/../x", when)
    assert second.name == "calls-Alice_Smith_.._x-20270115-080000-2.mkv"
    third = recording_path(template, "Alice Smith/../x", when, taken={second})
    assert third.name.endswith("-3.mkv") and third.parent == tmp_path
    assert recording_path(template, "...", when).name == "calls-peer-20270115-080000.mkv"


async def test_a_cancel_on_its_way_out_is_sent_before_the_caller_stops(
        tmp_path: Path, started: list[Peer]) -> None:
    """A one-shot ``hailing call`` interrupted while the callee rings stops its Peer at
    once: the CANCEL (sent in a supervised task) still gets out, so the callee stops
    ringing instead of ringing on until the offer expires."""
    board = Switchboard()
    a_id = load_or_create_identity(tmp_path / "alice")
    b_id = load_or_create_identity(tmp_path / "bob")
    rings: list[IncomingCall] = []
    bob = Peer(tmp_path / "bob", couplers=[board.coupler(b_id.public_key)],
               on_media_offer=rings.append)
    coupler = board.coupler(a_id.public_key)
    send = coupler.send

    async def slow_cancels(peer: bytes, blob: bytes, kind: SignalKind) -> int:
        if kind == "cancel":
            await asyncio.sleep(0.3)  # a relay or a DHT post takes a while
        return await send(peer, blob, kind)

    coupler.send = slow_cancels  # type: ignore[method-assign]
    alice = Peer(tmp_path / "alice", couplers=[coupler])
    await bob.start()
    started.append(bob)
    await alice.start()
    assert bob.contacts is not None
    bob.contacts.add(alice.contact_id, "alice")
    calling = asyncio.ensure_future(alice.connect(bob.contact_id, timeout=30, tracks=["audio"]))
    await eventually(lambda: len(rings) == 1, "bob rings")
    calling.cancel()  # Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await calling
    await alice.stop()
    assert len(rings) == 1 and alice.stats["cancels_sent"] == 1
    await eventually(lambda: rings[0].state != "ringing", "the ring stopped")
    assert rings[0].reason == "cancelled"


async def test_a_recording_waits_for_the_video_size_and_takes_jittery_timestamps(
        tmp_path: Path) -> None:
    """As from a browser: audio starts before the first video frame (whose size the
    file's header must carry), video timestamps jitter (two frames 5 ms apart at a
    nominal 30 fps) and the size changes midway (scaled to the first). The frames come
    faster than real time: the recorder keeps up with what it can and drops the rest."""
    import fractions

    import av
    from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack

    class BrowserVideo(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            self.ticks = 0

        async def recv(self) -> av.VideoFrame:
            if self.n == 0:
                await asyncio.sleep(0.5)  # the browser's camera starts late
            if self.n >= 40:
                self.stop()
                raise MediaStreamError
            await asyncio.sleep(0.01)
            self.n += 1
            self.ticks += (450, 3000, 5550)[self.n % 3]  # 5 ms, 33 ms, 62 ms
            big = self.n < 20
            frame = av.VideoFrame(480 if big else 320, 360 if big else 240, "yuv420p")
            frame.pts, frame.time_base = self.ticks, fractions.Fraction(1, 90000)
            return frame

    for name in ("browser.mp4", "browser.webm"):
        media = CallMedia([AudioStreamTrack(), BrowserVideo()], record=tmp_path / name)
        await media.start()
        await eventually(lambda m=media: m.frames["video"] >= 40, "all the video")
        summary = await media.stop()
        assert "error" not in summary, summary
        frames = decoded_frames(tmp_path / name)
        # an encoder that falls behind (VP8 on a busy machine) drops video, and says so
        assert frames.get("video", 0) + summary.get("dropped", 0) == 40, (name, frames, summary)
        assert frames.get("video", 0) >= 5 and frames.get("audio", 0) >= 10, (name, frames)
        assert video_size(tmp_path / name) == (480, 360)
