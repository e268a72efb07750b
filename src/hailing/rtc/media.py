"""Media for Python peers: a file played into a call, the peer's tracks recorded to a file.

::

    playback = open_playback("greeting.mp4")          # fresh tracks, for one call
    conn = await peer.connect(bob, tracks=playback.tracks + playback.receive_only())
    media = CallMedia(conn.tracks.received, record="bob.mkv")
    await media.start()
    ...
    summary = await media.stop()                      # the file is finalized here
    playback.stop()

Theory of operation
-------------------
**Playing** (:class:`Playback`): aiortc's ``MediaPlayer`` decodes the file in a thread
of its own, paced in real time, and aiortc re-encodes each frame for the call (Opus;
VP8 or H.264, as negotiated). A player serves one call: its thread starts at the first
frame the call asks for, and only :meth:`Playback.stop` (or the end of the file) ends
it; that thread is not a daemon thread, so a player left running keeps the process
alive. With ``loop`` the file starts over at its end (it must be seekable).

**No file to play**: nothing is sent. The call still asks for the media it wants to
receive (:meth:`Playback.receive_only`, a ``recvonly`` media section per kind), so a
headless recorder calls a browser without inventing a fake camera. (aiortc's synthetic
tracks, a green picture and silence, are for tests.)

**Recording** (:class:`CallMedia`): every received track is read all call long (a track
nobody reads piles its decoded frames up in memory), frames are counted per kind, and
written to one file when ``record`` is given. The container is the extension's
(:data:`RECORD_FORMATS`): H.264 + AAC in .mp4/.mov/.mkv, VP8 + Opus in .webm, audio only
in .wav (PCM), .ogg (Opus) and .mp3 (a video track is then counted, not recorded). The
encoders run in a thread of the recording's own, tuned for speed (x264 ``ultrafast``, VP8
realtime); video frames it cannot keep up with are dropped and counted, never audio.
:meth:`CallMedia.stop` flushes the encoders and writes the container's index: an .mp4
is only readable once that happened, while a .mkv or .webm cut short by ``kill -9``
still plays up to where it stopped. A call that received no frame at all leaves no
file. An error writing the file (disk full) ends the recording, not the call, and is
reported by :meth:`CallMedia.stop`.

FFmpeg (PyAV) and aiortc are imported on first use, not with this module's importers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Container, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LocalProtocolError, UsageError
from .tracks import MEDIA_KINDS

__all__ = ["RECORD_FORMATS", "CallMedia", "MediaOptions", "Playback", "check_play",
           "check_record", "open_playback", "receive_only", "recording_path"]

log = logging.getLogger("hailing.media")

#: The recording containers, by extension, and the media kinds each one holds.
RECORD_FORMATS: dict[str, tuple[str, ...]] = {
    ".mp4": MEDIA_KINDS, ".mov": MEDIA_KINDS, ".mkv": MEDIA_KINDS, ".webm": MEDIA_KINDS,
    ".wav": ("audio",), ".ogg": ("audio",), ".mp3": ("audio",),
}
#: The frame rate a recording's video encoder is told (frames keep their own times).
RECORD_FPS = 30
#: The time base of recorded video: RTP's 90 kHz video clock, which the frames carry.
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
#: Seconds a recording holds its first packets for a kind that has sent nothing yet.
HOLD = 3.0
#: The video size of a recording whose video had not started after HOLD (later frames
#: are scaled to it).
DEFAULT_SIZE = (640, 480)
#: Least time between two recorded video frames (the muxers count in milliseconds).
MIN_FRAME_GAP = 0.002
#: Video frames waiting for the recorder's encoder before more are dropped (1 s at 30/s).
MAX_PENDING = 30


# -- checks, before any network ---------------------------------------------------------


def check_record(path: str | os.PathLike[str]) -> Path:
    """``path`` as a recording target: raises :class:`UsageError` for an extension that
    is not a known container, :class:`LocalProtocolError` for a directory that does not
    exist or cannot be written. An existing file is replaced."""
    p = Path(path)
    if p.suffix.lower() not in RECORD_FORMATS:
        raise UsageError(f"cannot record to {p.name!r}: the file name must end in "
                         f"{', '.join(RECORD_FORMATS)} (the container is the extension's)")
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise LocalProtocolError(f"cannot record to {p}: it is a directory")
    if not parent.is_dir():
        raise LocalProtocolError(f"cannot record to {p}: no directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise LocalProtocolError(f"cannot record to {p}: permission denied")
    return p


def check_play(path: str | os.PathLike[str], *, audio_only: bool = False,
               loop: bool = False) -> list[str]:
    """The media kinds the file at ``path`` would send (``audio`` first). Raises
    :class:`LocalProtocolError` with one line when it cannot be played: missing,
    unreadable, not a media file FFmpeg reads, nothing to send (no audio with
    ``audio_only``), or not seekable with ``loop``."""
    container = _open_input(Path(path))
    try:
        kinds = [k for k in MEDIA_KINDS
                 if any(s.type == k for s in container.streams) and (k == "audio" or not audio_only)]
        if not kinds:
            raise LocalProtocolError(f"cannot play {path}: it has no "
                                     f"{'audio' if audio_only else 'audio or video'} stream")
        if loop and container.duration is None:
            raise LocalProtocolError(f"cannot loop {path}: it is not seekable")
        return kinds
    finally:
        container.close()


def _open_input(p: Path) -> Any:
    if not p.exists():
        raise LocalProtocolError(f"cannot play {p}: no such file")
    if p.is_dir():
        raise LocalProtocolError(f"cannot play {p}: it is a directory")
    import av

    try:
        return av.open(str(p), mode="r")
    except PermissionError:
        raise LocalProtocolError(f"cannot play {p}: permission denied") from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise LocalProtocolError(f"cannot play {p}: not a media file FFmpeg reads ({why})") from None


# -- playing ----------------------------------------------------------------------------


class Playback:
    """One call's player of a file (see the module docstring): :attr:`tracks` to send
    (audio and/or video, as the file has and ``audio_only`` allows)."""

    def __init__(self, path: str | os.PathLike[str], *, audio_only: bool = False,
                 loop: bool = False) -> None:
        from aiortc.contrib.media import MediaPlayer

        check_play(path, audio_only=audio_only, loop=loop)
        try:
            self._player = MediaPlayer(str(path), loop=loop)
        except Exception as exc:  # FFmpeg's errors: the file changed since the check
            raise LocalProtocolError(f"cannot play {path}: {exc}") from None
        self.audio_only = audio_only
        self._started = False
        self._closed = False
        sources = [t for t in (self._player.audio, self._player.video) if t is not None]
        self._sources = {t.kind: t for t in sources}
        self.tracks: list[Any] = [_player_track(self, t) for t in sources]
        if audio_only:
            for track in [t for t in self.tracks if t.kind == "video"]:
                track.stop()

    @property
    def kinds(self) -> list[str]:
        return [t.kind for t in self.tracks]

    def receive_only(self) -> list[str]:
        """The media kinds a call wants but this file does not send (to receive only):
        pass them with :attr:`tracks` to ``Peer.connect``."""
        wanted = ("audio",) if self.audio_only else MEDIA_KINDS
        return [k for k in wanted if k not in self.kinds]

    @property
    def ended(self) -> bool:
        """Every track played to its end (never with ``loop``), or stopped."""
        return all(t.readyState == "ended" for t in self.tracks)

    async def wait_ended(self, poll: float = 0.2) -> None:
        """Return once :attr:`ended`."""
        while not self.ended:
            await asyncio.sleep(poll)

    def stop(self) -> None:
        """Stop the player (its thread, its file). Idempotent."""
        for track in list(self.tracks):
            track.stop()
        self._close()

    def _track_stopped(self, track: Any) -> None:
        """One of our tracks stopped. Before the player started (a track the call has no
        room for), its kind is taken out of the player, which then neither decodes it
        nor queues its frames for nobody; once none is left, the player stops."""
        if track in self.tracks:
            self.tracks.remove(track)
            if not self._started:
                _drop_stream(self._player, track.kind)
        if not self.tracks:
            self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            for source in self._sources.values():
                source.stop()  # the last one joins the player's thread, closes the file


def _drop_stream(player: Any, kind: str) -> None:
    """Make an unstarted aiortc ``MediaPlayer`` ignore the file's ``kind`` stream (its
    constructor takes every stream; nothing else can leave one out)."""
    streams = getattr(player, "_MediaPlayer__streams", None)
    attr = f"_MediaPlayer__{kind}"
    if isinstance(streams, list) and hasattr(player, attr):
        streams[:] = [s for s in streams if s.type != kind]
        setattr(player, attr, None)


_TRACK_CLASS: Any = None


def _player_track(playback: Playback, source: Any) -> Any:
    """A track of ``playback`` sending what ``source`` (a ``MediaPlayer`` track) reads."""
    global _TRACK_CLASS
    if _TRACK_CLASS is None:
        from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

        class PlaybackTrack(MediaStreamTrack):
            def __init__(self, playback: Playback, source: Any) -> None:
                super().__init__()
                self.kind = source.kind
                self._playback = playback
                self._source = source

            async def recv(self) -> Any:
                if self.readyState != "live":
                    raise MediaStreamError
                self._playback._started = True
                try:
                    return await self._source.recv()
                except MediaStreamError:
                    self.stop()  # the end of the file
                    raise

            def stop(self) -> None:
                if self.readyState == "live":
                    super().stop()
                    self._playback._track_stopped(self)

        _TRACK_CLASS = PlaybackTrack
    return _TRACK_CLASS(playback, source)


def open_playback(path: str | os.PathLike[str] | None, *, audio_only: bool = False,
                  loop: bool = False) -> Playback | None:
    """A :class:`Playback` of ``path``, or None when there is no file to play."""
    return None if path is None else Playback(path, audio_only=audio_only, loop=loop)


def receive_only(playback: Playback | None, audio_only: bool = False) -> list[str]:
    """What to pass to ``Peer.connect(tracks=...)`` besides the played tracks."""
    if playback is not None:
        return playback.receive_only()
    return ["audio"] if audio_only else list(MEDIA_KINDS)


# -- recording --------------------------------------------------------------------------


def recording_path(template: str | os.PathLike[str], who: str, when: float | None = None,
                   taken: Container[Path] = ()) -> Path:
    """The file of one call recorded by a daemon given ``--record template``:
    ``STEM-WHO-YYYYmmdd-HHMMSS.EXT`` beside the template (``WHO``: the contact's name,
    else the first 12 characters of its contact id; UTC time), with ``-2``, ``-3``, ...
    added when a file has that name or ``taken`` has it (recordings not written yet).
    ``calls.mkv`` -> ``calls-alice-20261129-061502.mkv``."""
    t = Path(template)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", who).strip("._")[:40] or "peer"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if when is None else when))
    base = f"{t.stem}-{safe}-{stamp}"
    candidate = t.with_name(base + t.suffix)
    n = 2
    while candidate.exists() or candidate in taken:
        candidate = t.with_name(f"{base}-{n}{t.suffix}")
        n += 1
    return candidate


class CallMedia:
    """What one call receives: every track in ``received`` is read, its frames counted
    (:attr:`frames`, per kind) and, with ``record``, written to that file (see the
    module docstring). :meth:`start`, then :meth:`stop` (returns the summary)."""

    def __init__(self, received: Sequence[Any], record: str | os.PathLike[str] | None = None
                 ) -> None:
        self.received = list(received)
        self.record = Path(record) if record is not None else None
        self.frames: Counter[str] = Counter()
        self.error: str | None = None
        self._recorder: _Recorder | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    @property
    def recorded_kinds(self) -> list[str]:
        if self.record is None:
            return []
        holds = RECORD_FORMATS.get(self.record.suffix.lower(), ())
        return [t.kind for t in self.received if t.kind in holds]

    async def start(self) -> None:
        kinds = self.recorded_kinds
        if self.record is not None and kinds:
            self._recorder = _Recorder(self.record, kinds)
        for track in self.received:
            self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        recorder = self._recorder if self._recorder and track.kind in self._recorder.kinds else None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames[track.kind] += 1
            if recorder is not None and not recorder.write(track.kind, frame):
                self.error = recorder.error
                recorder = None  # the call goes on; the frames are still counted

    async def stop(self) -> dict[str, Any]:
        """Stop reading, finalize the file; the summary: ``frames`` per kind,
        ``recording`` (the file, or None when nothing was written) and ``error``."""
        if not self._stopped:
            self._stopped = True
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._recorder is not None:
                await self._recorder.close()
                self.error = self.error or self._recorder.error
        return self.summary()

    def summary(self) -> dict[str, Any]:
        written = self._recorder is not None and self._recorder.written
        out: dict[str, Any] = {"frames": dict(sorted(self.frames.items())),
                               "recording": str(self.record) if written else None}
        if self._recorder is not None and self._recorder.dropped:
            out["dropped"] = self._recorder.dropped  # video frames not recorded
        if self.error:
            out["error"] = self.error
        return out


class _Recorder:
    """One output file: a stream per recorded kind, encoded in a thread of its own.

    The encoders (x264, and VP8 above all: tens of milliseconds a frame on a busy
    machine) run in one worker thread, in the order the frames came, so the event loop
    (the call's keepalive, the other calls) never waits for them; PyAV lets go of the
    GIL while it encodes. When the worker falls more than :data:`MAX_PENDING` video
    frames behind, video frames are dropped (counted in :attr:`dropped`), never audio.

    A container's header (written with its first packet) fixes every stream, the video
    size included, so packets are held until each recorded kind has had its first frame,
    or :data:`HOLD` seconds after the first frame of any (then a missing video stream
    gets :data:`DEFAULT_SIZE`, and frames of another size are scaled to the size the
    stream has). Video is timed in 1/90000 s, the RTP clock of its frames: at the
    stream's 1/30 s two frames a few milliseconds apart would get the same timestamp,
    which the muxer refuses; a frame too close to the previous one
    (:data:`MIN_FRAME_GAP`) is dropped for the same reason."""

    def __init__(self, path: Path, kinds: Sequence[str]) -> None:
        self.path = path
        self.kinds = tuple(dict.fromkeys(kinds))
        self.error: str | None = None
        self.written = False
        self._behind = 0  # video frames dropped on the loop: the worker was behind
        self._untimed = 0  # video frames dropped by the worker: untimed or too close
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hailing-recorder")
        self._pending = 0  # frames handed to the worker and not written yet (loop side)
        self._closed = False
        # the worker's state
        self._container: Any = None
        self._streams: dict[str, Any] = {}
        self._started: set[str] = set()
        self._held: list[Any] = []  # packets before the header can be written
        self._header = False
        self._first_at: float | None = None
        self._last_pts: float | None = None  # of the last video frame, in seconds

    # -- on the event loop ----------------------------------------------------------------

    def write(self, kind: str, frame: Any) -> bool:
        """Hand one frame to the worker; False once writing failed (see :attr:`error`)."""
        if self.error is not None or self._closed:
            return False
        if kind == "video" and self._pending >= MAX_PENDING:
            self._behind += 1
            return True
        self._pending += 1
        done = asyncio.get_running_loop().run_in_executor(self._pool, self._write, kind, frame)
        done.add_done_callback(self._written)
        return True

    @property
    def dropped(self) -> int:
        """Video frames not recorded (each counter has one writer thread)."""
        return self._behind + self._untimed

    def _written(self, _: asyncio.Future[None]) -> None:
        self._pending -= 1

    async def close(self) -> None:
        """Write what is pending, flush the encoders, finalize the file."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._finish)
        finally:
            self._pool.shutdown(wait=False)

    # -- in the worker thread -----------------------------------------------------------

    def _open(self) -> None:
        import av

        container = av.open(str(self.path), mode="w")
        fmt = container.format.name
        for kind in self.kinds:
            if kind == "audio":
                codec = ("pcm_s16le" if fmt == "wav" else "mp3" if fmt == "mp3"
                         else "libopus" if fmt in ("ogg", "webm") else "aac")
                self._streams[kind] = container.add_stream(codec, rate=48000)
            else:
                webm = fmt == "webm"
                stream = container.add_stream("libvpx" if webm else "libx264", rate=RECORD_FPS)
                stream.pix_fmt = "yuv420p"
                stream.width, stream.height = DEFAULT_SIZE
                stream.codec_context.time_base = VIDEO_TIME_BASE
                stream.options = ({"deadline": "realtime", "cpu-used": "16"} if webm
                                  else {"preset": "ultrafast", "tune": "zerolatency"})
                self._streams[kind] = stream
        self._container = container

    def _write(self, kind: str, frame: Any) -> None:
        if self.error is not None:
            return
        try:
            if self._container is None:
                self._open()
            now = time.monotonic()
            if self._first_at is None:
                self._first_at = now
            stream = self._streams[kind]
            if kind == "video":
                at = (float(frame.pts * frame.time_base)
                      if frame.pts is not None and frame.time_base is not None else None)
                if at is None or (self._last_pts is not None
                                  and at < self._last_pts + MIN_FRAME_GAP):
                    self._untimed += 1  # untimed, or too close to the previous one
                    return
                self._last_pts = at
                if kind not in self._started and not self._header:
                    stream.width, stream.height = frame.width, frame.height
            self._started.add(kind)
            packets = list(stream.encode(frame))
            if not self._header and (self._started == set(self.kinds)
                                     or now - self._first_at >= HOLD):
                self._write_header()
            if self._header:
                self._mux(packets)
            else:
                self._held.extend(packets)
        except Exception as exc:  # FFmpeg's: disk full, a frame the encoder refuses
            self.error = f"recording to {self.path} stopped: {type(exc).__name__}: {exc}"
            log.warning("%s", self.error)

    def _write_header(self) -> None:
        self._header = True
        held, self._held = self._held, []
        self._mux(held)

    def _mux(self, packets: Sequence[Any]) -> None:
        for packet in packets:
            self._container.mux(packet)
            self.written = True

    def _finish(self) -> None:
        if self._container is None:
            return
        container = self._container
        try:
            if self.error is None:
                if not self._header and self._held:
                    self._write_header()
                for kind in self._started:
                    packets = list(self._streams[kind].encode(None))
                    if not self._header and packets:
                        self._write_header()
                    self._mux(packets)
        except Exception as exc:
            self.error = f"recording to {self.path} was not finished: {type(exc).__name__}: {exc}"
        finally:
            self._container = None
            with contextlib.suppress(Exception):
                container.close()


# -- a daemon's answers -------------------------------------------------------------------


@dataclass(frozen=True)
class MediaOptions:
    """What a daemon that answers media calls itself (``hailing up --auto-answer``) plays
    and records: ``play`` (a file, None: send nothing), ``loop``, and ``record`` (the
    template of :func:`recording_path`; None: the caller's media is dropped)."""

    play: Path | None = None
    record: Path | None = None
    loop: bool = False

    def check(self) -> None:
        """Raise one line now (before the daemon starts) for a file that cannot be played
        or a recording target that cannot be written."""
        if self.play is not None:
            check_play(self.play, loop=self.loop)
        if self.record is not None:
            check_record(self.record)

    def answer_tracks(self, caller: bytes) -> list[Any]:
        """Fresh tracks for one call (``Peer(answer_tracks=...)``); they are stopped when
        that call ends."""
        playback = open_playback(self.play, loop=self.loop)
        return [] if playback is None else list(playback.tracks)
