"""``hailing call``: a media call from the command line (a bot, a headless machine).

Output contract (scripts rely on it): one JSON line ``{"event": "connected", ...}`` with
``connect_ms``, ``coupler``, the media ``sent`` and ``received`` and the ``recording``
file; one ``{"event": "ended", ...}`` line with the ``reason``, ``duration_s``, the
``frames`` received per kind and the ``recording`` (None when nothing was written).
Exit 0 when the call ended (its duration, the file played, either side hung up), 1 with
one line when nobody answered, the connection was lost or the recording failed, 2 for
wrong arguments, 130 on Ctrl-C (one line; the recording is finalized first).

``call`` always runs its own short-lived, read-only DHT node, even beside a running
``hailing up``: the media (aiortc, the player, the recorder) lives in the process that
owns the peer connection, and the daemon's API carries no media.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from ..errors import HailingError, UsageError
from ..identity import format_contact_id
from ._common import Progress, _interruptible, _positive_seconds
from ._shared import _out, _peer, add_contact_arg, add_network_options

#: ``ended`` reasons of a call this side ends by itself.
DURATION_REACHED = "the call's duration was reached"
FILE_PLAYED = "the file was played"
INTERRUPTED = "interrupted"


def _name(args: argparse.Namespace) -> str:
    from ..services.contacts import ContactBook

    name = format_contact_id(args.contact)[:12]
    try:
        with ContactBook(args.data_dir) as book:
            c = book.get(args.contact)
            if c is not None and c.name:
                name = c.name
    except HailingError:
        pass  # a name is only for the messages
    return name


async def cmd_call(args: argparse.Namespace) -> int:
    from ..rtc.media import check_play, check_record

    # Everything that can be checked is, before any network.
    if args.loop and args.play is None:
        raise UsageError("--loop needs --play FILE")
    if args.play is not None:
        check_play(args.play, audio_only=args.audio_only, loop=args.loop)
    if args.record is not None:
        check_record(args.record)
    name = _name(args)
    connected: list[bool] = []
    interrupted, result = await _interruptible(_call(args, name, connected))
    if interrupted or result is None:
        what = f"hung up on {name}" if connected else f"the call to {name} was cancelled"
        print(f"hailing: interrupted; {what}", file=sys.stderr, flush=True)
        return 130
    if result.get("error"):
        raise HailingError(result["error"])
    if result.get("lost"):
        raise HailingError(f"the call with {name} ended: {result['reason']}")
    return 0


async def _call(args: argparse.Namespace, name: str, connected: list[bool]) -> dict[str, Any]:
    """The call; ``connected`` gets an item once it connected."""
    from ..rtc.connection import LOST
    from ..rtc.media import CallMedia, open_playback, receive_only

    who = format_contact_id(args.contact)
    head: dict[str, Any] = {"to": who} if name == who[:12] else {"to": who, "contact": name}
    playback = open_playback(args.play, audio_only=args.audio_only, loop=args.loop)
    progress = Progress()
    try:
        async with _peer(args, short_lived=True) as peer:
            progress.update(f"calling {name}...")
            try:
                tracks = [*(playback.tracks if playback else []),
                          *receive_only(playback, args.audio_only)]
                conn = await peer.connect(args.contact, timeout=args.timeout, tracks=tracks)
            finally:
                progress.done()
            connected.append(True)
            media = CallMedia(conn.tracks.received, record=args.record)
            await media.start()
            started = time.monotonic()
            _out({"event": "connected", **head, "connect_ms": round(conn.connect_ms or 0.0, 1),
                  "coupler": conn.coupler, "sent": [t.kind for t in conn.tracks.sent],
                  "received": [t.kind for t in conn.tracks.received],
                  "recording": str(args.record) if media.recorded_kinds else None})
            reason = INTERRUPTED
            try:
                reason = await _until_end(conn, playback, args.duration)
            finally:
                summary = await media.stop()  # the file is finalized before anything else
                if playback is not None:
                    playback.stop()
                if conn.close_reason is None:
                    await conn.close(reason)
                ended = {"event": "ended", **head, "reason": reason,
                         "duration_s": round(time.monotonic() - started, 1), **summary}
                _out(ended)
            lost = conn.close_reason is not None and not conn.closed_here and (
                conn.close_reason == LOST or conn.close_reason.startswith("the peer stopped"))
            return {**ended, "lost": lost}
    finally:
        if playback is not None:
            playback.stop()


async def _until_end(conn: Any, playback: Any, duration: float | None) -> str:
    """Wait for the call's end: the peer hangs up or is lost (its close reason), the
    duration is over, or (without a duration) the file was played (not with --loop)."""
    waits: dict[asyncio.Future[Any], str] = {}

    async def closed() -> None:
        async for _ in conn:  # messages of a media call are not shown
            pass

    waits[asyncio.ensure_future(closed())] = ""
    if duration is not None:
        waits[asyncio.ensure_future(asyncio.sleep(duration))] = DURATION_REACHED
    elif playback is not None:
        waits[asyncio.ensure_future(playback.wait_ended())] = FILE_PLAYED
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    first = next(iter(done))
    return waits[first] or str(conn.close_reason)


# -- parser --------------------------------------------------------------------------------


def add_media_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "call", help="a media call to CONTACT: play a file, record what comes back",
        description="Call CONTACT with audio and video (a bot, a headless machine; the "
        "callee may be a browser). --play sends a file's audio and video (without it, "
        "nothing is sent and the peer's media is still received); --record writes what "
        "the peer sends (the container is the extension's: .mp4 .mov .mkv .webm; audio "
        "only: .wav .ogg .mp3). One JSON line when connected, one when the call ended. "
        "The call lasts --duration S, else until the file was played (with --play, not "
        "--loop), else until the peer hangs up. Ctrl-C: the recording is finalized, one "
        "line, exit 130. Always runs its own short-lived DHT node (not through 'hailing up').")
    add_contact_arg(p)
    p.add_argument("--audio-only", action="store_true",
                   help="audio only: no video is sent or asked for")
    p.add_argument("--play", default=None, metavar="FILE",
                   help="send this file's audio (and video) to the peer")
    p.add_argument("--loop", action="store_true", help="play the file again and again")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="record what the peer sends to FILE (replaced if it exists)")
    p.add_argument("--duration", type=_positive_seconds, default=None, metavar="S",
                   help="hang up after S seconds")
    p.add_argument("--timeout", type=_positive_seconds, default=30.0, metavar="S",
                   help="seconds to wait for an answer (default 30)")
    add_network_options(p)
    p.set_defaults(func=cmd_call)


__all__ = ["add_media_commands"]
