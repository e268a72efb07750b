"""Browser calls through the daemon: who rings, who is being called, and the call log.

Theory of operation
-------------------
A page owns the media (its ``RTCPeerConnection``); the daemon signals for it.

**Outgoing** (:meth:`Calls.place`, ``POST /api/calls``): the page's offer goes through
``Peer.call_external`` under an id the page may choose, so that it can cancel the call
(``DELETE /api/calls/{id}``, or simply by aborting its request) while it waits; a
cancelled or unanswered call sends the callee a sealed CANCEL. A callee that refused
(blocked, busy, do-not-disturb) reads exactly as an offline one: a ``QueryTimeout``.

**Incoming** (:meth:`Calls.ring`, the Peer's ``on_media_offer``): an offer the call
policy accepted rings: a ``ring`` event, the ``--on-call`` command
(:class:`OnCallCommand`), until a page accepts (``answered``) or declines, the offer
expires or the caller cancels (``ring-ended`` with that reason; ``missed`` for the last
two). Refused media offers (blocked, busy, dnd, unknown, too many calls) are logged
here, for the callee only.

**The log** (:class:`CallLog`, ``DATA_DIR/calls.sqlite3``): one row per call, both
directions, newest first, at most :data:`MAX_LOG` rows; kept across restarts (a call
that rang or was active when the daemon stopped is closed as missed / ended at the next
start).

Events: ``ring``, ``ring-ended``, ``missed``, ``call-ended`` (docs/daemon.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._sqlite import SqliteFile
from .._sqlite import data_dir as _data_dir
from ..errors import DaemonError, HailingError, LocalProtocolError, NotFoundError, QueryTimeout
from ..identity import format_contact_id
from ..session.external import ExternalCall, IncomingCall, media_kinds, pack_external_sdp
from .events import EventBus

log = logging.getLogger(__name__)

DB_NAME = "calls.sqlite3"
SCHEMA_VERSION = 1
#: Rows the call log keeps (the oldest go).
MAX_LOG = 2000
#: Most entries one ``GET /api/calls`` returns.
MAX_PAGE = 500
#: Outgoing calls (dialing or answered and not ended) kept at once; past it the oldest
#: answered one is closed (a page that never said ``end``).
MAX_OUTGOING = 32
#: A page-chosen call id.
CALL_ID = re.compile(r"[A-Za-z0-9_.~-]{1,64}")
#: Seconds an ``--on-call`` command may run; commands running at once.
ON_CALL_TIMEOUT = 10.0
#: Seconds a call placed from a page rings before it gives up (``POST /api/calls``
#: without ``timeout``; ``hailing up --ring-timeout``).
DEFAULT_RING_TIMEOUT = 30.0
ON_CALL_PARALLEL = 4
MEDIA = ("audio", "video")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call TEXT NOT NULL UNIQUE,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer BLOB NOT NULL CHECK (length(peer) = 32),
    media TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    at REAL NOT NULL,
    answered_at REAL,
    ended_at REAL
);
"""
_COLUMNS = "call, direction, peer, media, state, reason, at, answered_at, ended_at"


class CallLog(SqliteFile):
    """The call log of one data directory (see the module docstring)."""

    def __init__(self, data_dir: str | os.PathLike[str], now: float | None = None) -> None:
        super().__init__(_data_dir(data_dir) / DB_NAME, _SCHEMA, SCHEMA_VERSION)
        now = time.time() if now is None else now
        # what rang or was under way when the daemon stopped
        self._write_all([
            ("UPDATE calls SET state = 'missed', reason = 'daemon stopped', ended_at = ? "
             "WHERE state = 'ringing' AND direction = 'in'", (now,)),
            ("UPDATE calls SET state = 'failed', reason = 'daemon stopped', ended_at = ? "
             "WHERE state = 'ringing' AND direction = 'out'", (now,)),
            ("UPDATE calls SET state = 'ended', reason = 'daemon stopped', ended_at = ? "
             "WHERE state = 'answered'", (now,))])

    def add(self, call: str, direction: str, peer: bytes, media: str, state: str,
            reason: str | None = None, at: float | None = None) -> None:
        self._write_all([
            ("INSERT INTO calls (call, direction, peer, media, state, reason, at) "
             "VALUES (?, ?, ?, ?, ?, ?, ?)",
             (call, direction, peer, media, state, reason, time.time() if at is None else at)),
            ("DELETE FROM calls WHERE id <= (SELECT max(id) FROM calls) - ?", (MAX_LOG,))])

    def update(self, call: str, state: str, reason: str | None = None, *,
               answered_at: float | None = None, ended_at: float | None = None) -> None:
        self._write("UPDATE calls SET state = ?, reason = coalesce(?, reason), "
                    "answered_at = coalesce(?, answered_at), ended_at = coalesce(?, ended_at) "
                    "WHERE call = ?", (state, reason, answered_at, ended_at, call))

    def has(self, call: str) -> bool:
        return bool(self._query("SELECT 1 FROM calls WHERE call = ?", (call,)))

    def get(self, call: str) -> dict[str, Any] | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM calls WHERE call = ?", (call,))
        return _entry(rows[0]) if rows else None

    def page(self, limit: int = 50) -> list[dict[str, Any]]:
        """The ``limit`` newest entries, newest first."""
        limit = max(1, min(limit, MAX_PAGE))
        rows = self._query(f"SELECT {_COLUMNS} FROM calls ORDER BY id DESC LIMIT ?", (limit,))
        return [_entry(r) for r in rows]

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM calls")[0][0])


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    call, direction, peer, media, state, reason, at, answered_at, ended_at = row
    out: dict[str, Any] = {"call": call, "direction": direction,
                           ("from" if direction == "in" else "to"): format_contact_id(peer),
                           "media": media, "state": state, "at": at}
    if reason is not None:
        out["reason"] = reason
    if answered_at is not None:
        out["answered_at"] = answered_at
    if ended_at is not None:
        out["ended_at"] = ended_at
        if answered_at is not None:
            out["duration_s"] = round(max(0.0, ended_at - answered_at), 1)
    return out


class OnCallCommand:
    """``hailing up --on-call CMD``: ``argv`` runs (no shell) for each ring with the ring
    event as one JSON line on stdin, at most :data:`ON_CALL_TIMEOUT` seconds (then
    killed) and :data:`ON_CALL_PARALLEL` at once (a ring past that is skipped). A
    failure is logged and counted (``on_call_failures``, ``on_call_skipped``), never
    fatal."""

    def __init__(self, argv: Sequence[str], stats: Counter[str], *,
                 timeout: float = ON_CALL_TIMEOUT, parallel: int = ON_CALL_PARALLEL) -> None:
        if not argv or not all(isinstance(a, str) and a for a in argv):
            raise LocalProtocolError("--on-call needs a command")
        self.argv = list(argv)
        self.stats = stats
        self.timeout = timeout
        self.parallel = parallel
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, event: dict[str, Any]) -> None:
        if len(self._tasks) >= self.parallel:
            self.stats["on_call_skipped"] += 1
            log.warning("--on-call: %d commands still running; this ring skipped",
                        len(self._tasks))
            return
        task = asyncio.ensure_future(self._run(json.dumps(event) + "\n"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, line: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            self._failed(f"cannot start {self.argv[0]!r}: {exc.strerror or exc}")
            return
        try:
            async with asyncio.timeout(self.timeout):
                assert proc.stdin is not None
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(line.encode())
                    await proc.stdin.drain()
                    proc.stdin.close()
                code = await proc.wait()
        except TimeoutError:
            self._failed(f"{self.argv[0]!r} ran longer than {self.timeout:.0f} s: killed")
            await _kill(proc)
            return
        except asyncio.CancelledError:
            await _kill(proc)
            raise
        if code != 0:
            self._failed(f"{self.argv[0]!r} exited with status {code}")
        else:
            self.stats["on_call_runs"] += 1

    def _failed(self, why: str) -> None:
        self.stats["on_call_failures"] += 1
        log.warning("--on-call: %s", why)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(Exception):
        await proc.wait()


@dataclass
class _Outgoing:
    peer: bytes
    task: asyncio.Task[ExternalCall] | None = None
    result: ExternalCall | None = None


class Calls:
    """The daemon's browser calls (see the module docstring). ``peer`` (set by the
    daemon once built) dials; ``name_of`` names a contact id for the answers."""

    def __init__(self, data_dir: str | os.PathLike[str], events: EventBus, *,
                 name_of: Callable[[str], str | None] | None = None,
                 on_call: Sequence[str] | None = None) -> None:
        self.log = CallLog(data_dir)
        self.events = events
        self.stats: Counter[str] = Counter()
        self.peer: Any = None
        self._name_of = name_of
        self._on_call = OnCallCommand(on_call, self.stats) if on_call else None
        self._in: dict[str, IncomingCall] = {}
        self._out: dict[str, _Outgoing] = {}
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        for task in [o.task for o in self._out.values() if o.task is not None]:
            task.cancel()
        if self._on_call is not None:
            await self._on_call.aclose()
        for call in list(self._in.values()):
            call.on_state = None
        self._in.clear()
        self.log.close()

    # -- incoming ------------------------------------------------------------------------

    def ring(self, call: IncomingCall) -> None:
        """A ringing call from the Peer (its ``on_media_offer``)."""
        if self._closed:  # the daemon is stopping: nobody would hear it
            call.decline()
            return
        call_id = _new_id()
        self._in[call_id] = call
        who = format_contact_id(call.sender)
        media = _media_word(call.media)
        self.log.add(call_id, "in", call.sender, media, "ringing")
        self.stats["rang"] += 1
        event = {"event": "ring", "call": call_id, "from": who, "media": media,
                 "expires": call.expires}
        self.events.emit(event)
        call.on_state = lambda c: self._changed(call_id, c)
        if self._on_call is not None:
            self._on_call.run(dict(event))

    def refused(self, peer: bytes, reason: str, media: Sequence[str]) -> None:
        """A media offer the policy (or the call caps) refused: logged, for us only."""
        if self._closed:
            return
        self.log.add(_new_id(), "in", peer, _media_word(media), "refused", reason)
        self.stats["refused"] += 1

    def answered_here(self, peer: bytes, media: Sequence[str]) -> str | None:
        """A media call the daemon answered itself (``--auto-answer``): logged as
        answered; returns its call id for :meth:`ended_here` (None if it cannot be
        logged: the call goes on)."""
        if self._closed:
            return None
        call_id = _new_id()
        now = time.time()
        try:
            self.log.add(call_id, "in", peer, _media_word(media), "answered", at=now)
            self.log.update(call_id, "answered", answered_at=now)
        except HailingError as exc:
            log.warning("cannot log a call: %s", exc)
            return None
        self.stats["answered_here"] += 1
        return call_id

    def ended_here(self, call_id: str, peer: bytes, reason: str | None) -> None:
        """That call ended: logged, ``call-ended`` emitted (with its duration)."""
        if self._closed:
            return
        reason = reason or "hung up"
        try:
            self.log.update(call_id, "ended", reason, ended_at=time.time())
            entry = self.log.get(call_id)
        except HailingError as exc:
            log.warning("cannot log a call's end: %s", exc)
            return
        self.events.emit({"event": "call-ended", "call": call_id,
                          "from": format_contact_id(peer), **_duration(entry),
                          "reason": reason})

    def _changed(self, call_id: str, call: IncomingCall) -> None:
        who = format_contact_id(call.sender)
        now = time.time()
        state, reason = call.state, call.reason
        if state == "answered":
            self.log.update(call_id, "answered", answered_at=call.answered_at or now)
            self.events.emit({"event": "ring-ended", "call": call_id, "from": who,
                              "reason": "answered"})
            return
        if state == "ended":
            self._in.pop(call_id, None)
            self.log.update(call_id, "ended", reason, ended_at=now)
            self.events.emit({"event": "call-ended", "call": call_id, "from": who,
                              **_duration(self.log.get(call_id)), "reason": reason})
            return
        self._in.pop(call_id, None)
        if state in ("cancelled", "expired"):
            why = "expired" if state == "expired" else "cancelled"
            self.log.update(call_id, "missed", reason or why, ended_at=now)
            self.stats["missed"] += 1
            self.events.emit({"event": "ring-ended", "call": call_id, "from": who,
                              "reason": why})
            self.events.emit({"event": "missed", "call": call_id, "from": who,
                              "media": _media_word(call.media), "reason": why})
        else:  # declined, failed
            self.log.update(call_id, state, reason, ended_at=now)
            self.events.emit({"event": "ring-ended", "call": call_id, "from": who,
                              "reason": state})

    # -- outgoing ------------------------------------------------------------------------

    async def place(self, peer: bytes, sdp: object, media: object, call_id: str | None,
                    timeout: float) -> dict[str, Any]:
        """Call ``peer`` with the page's offer ``sdp``; the answer for the page."""
        if media not in MEDIA:
            raise LocalProtocolError("'media' is 'audio' or 'video'")
        pack_external_sdp(sdp, None)  # a bad SDP is a 400 before anything is dialed
        assert isinstance(sdp, str)
        if not media_kinds(sdp):
            raise LocalProtocolError("the SDP has no audio or video section")
        if call_id is None:
            call_id = _new_id()
        elif not CALL_ID.fullmatch(call_id):
            raise LocalProtocolError("'call' is 1-64 letters, digits or -_.~")
        if call_id in self._in or call_id in self._out or self.log.has(call_id):
            raise DaemonError(f"the call id {call_id!r} is already used")
        self._make_room()
        self.log.add(call_id, "out", peer, str(media), "ringing")
        out = _Outgoing(peer)
        self._out[call_id] = out
        task = out.task = asyncio.ensure_future(self.peer.call_external(peer, sdp, timeout))
        try:
            result = await task
        except asyncio.CancelledError:
            self._out.pop(call_id, None)
            self.log.update(call_id, "cancelled", "hung up before an answer",
                            ended_at=time.time())
            self.stats["cancelled"] += 1
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                raise DaemonError("the call was cancelled before an answer") from None
            raise
        except QueryTimeout:
            self._failed(call_id, "no answer")
            raise
        except Exception as exc:  # HailingError, or a bug: logged either way
            self._failed(call_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise
        out.result = result
        self.log.update(call_id, "answered", answered_at=time.time())
        self.stats["answered_out"] += 1
        answer: dict[str, Any] = {"call": call_id, "to": format_contact_id(peer)}
        name = self._name(answer["to"])
        if name:
            answer["contact"] = name
        answer.update(sdp=result.sdp, proof=result.proof_hex, coupler=result.coupler,
                      signal_ms=result.signal_ms)
        return answer

    def _failed(self, call_id: str, reason: str) -> None:
        self._out.pop(call_id, None)
        self.log.update(call_id, "failed", reason, ended_at=time.time())
        self.stats["failed_out"] += 1

    def _make_room(self) -> None:
        if len(self._out) < MAX_OUTGOING:
            return
        answered = [cid for cid, o in self._out.items() if o.result is not None]
        if not answered:
            raise DaemonError(f"{MAX_OUTGOING} calls are being placed already")
        self._end_out(answered[0], "never ended by its page")

    def cancel(self, call_id: str) -> dict[str, Any]:
        """``DELETE /api/calls/{id}``: stop an outgoing call before its answer, or
        decline a ringing incoming one."""
        out = self._out.get(call_id)
        if out is not None:
            if out.result is not None:
                raise DaemonError("the call was answered: end it instead")
            if out.task is not None:
                out.task.cancel()
            return {"call": call_id, "cancelled": True}
        self._incoming(call_id).decline()
        return {"call": call_id, "declined": True}

    # -- both ----------------------------------------------------------------------------

    def get(self, call_id: str) -> dict[str, Any]:
        call = self._in.get(call_id)
        if call is not None and call.ringing:
            who = format_contact_id(call.sender)
            out: dict[str, Any] = {"call": call_id, "from": who}
            name = self._name(who)
            if name:
                out["contact"] = name
            out.update(media=_media_word(call.media), state="ringing", sdp=call.sdp,
                       expires=call.expires)
            return out
        entry = self.log.get(call_id)
        if entry is None:
            raise NotFoundError(f"no call {call_id!r}")
        return self._named(entry)

    def list(self, limit: int) -> list[dict[str, Any]]:
        return [self._named(e) for e in self.log.page(limit)]

    async def accept(self, call_id: str, sdp: object) -> dict[str, Any]:
        call = self._incoming(call_id)
        proof = await call.answer(sdp)
        self.stats["accepted"] += 1
        return {"call": call_id, "proof": proof}

    def decline(self, call_id: str) -> dict[str, Any]:
        self._incoming(call_id).decline()
        return {"call": call_id, "declined": True}

    def verify(self, call_id: str, proof: object) -> bool:
        if not isinstance(proof, str):
            raise LocalProtocolError("'proof' must be text (hex)")
        call = self._in.get(call_id)
        if call is not None:
            ok = call.verify(proof)
        elif call_id in self._out:
            result = self._out[call_id].result
            ok = result is not None and result.verify(proof)
        elif self.log.has(call_id):
            raise DaemonError("the call is over")
        else:
            raise NotFoundError(f"no call {call_id!r}")
        self.stats["verified" if ok else "verify_failed"] += 1
        return ok

    def end(self, call_id: str, reason: str | None) -> dict[str, Any]:
        if reason is not None and len(reason) > 200:
            raise LocalProtocolError("'reason' is at most 200 characters")
        reason = reason or "hung up"
        call = self._in.get(call_id)
        if call is not None:
            if call.ringing:
                call.decline()
            else:
                call.end(reason)
        elif call_id in self._out:
            out = self._out[call_id]
            if out.result is None:
                self.cancel(call_id)
            else:
                self._end_out(call_id, reason)
        entry = self.log.get(call_id)
        if entry is None:
            raise NotFoundError(f"no call {call_id!r}")
        return self._named(entry)

    def _end_out(self, call_id: str, reason: str) -> None:
        out = self._out.pop(call_id)
        self.log.update(call_id, "ended", reason, ended_at=time.time())
        self.events.emit({"event": "call-ended", "call": call_id,
                          "to": format_contact_id(out.peer),
                          **_duration(self.log.get(call_id)), "reason": reason})

    def _incoming(self, call_id: str) -> IncomingCall:
        call = self._in.get(call_id)
        if call is not None:
            return call
        if call_id in self._out:
            raise LocalProtocolError("this is an outgoing call")
        entry = self.log.get(call_id)
        if entry is None:
            raise NotFoundError(f"no call {call_id!r}")
        raise DaemonError(f"the call no longer rings ({entry['state']})")

    def _name(self, who: str) -> str | None:
        if self._name_of is None:
            return None
        try:
            return self._name_of(who)
        except (HailingError, ValueError, sqlite3.Error):
            return None

    def _named(self, entry: dict[str, Any]) -> dict[str, Any]:
        name = self._name(entry.get("from") or entry["to"])
        if name:
            entry["contact"] = name
        return entry


def _duration(entry: dict[str, Any] | None) -> dict[str, Any]:
    if entry is None or "duration_s" not in entry:
        return {}
    return {"duration_s": entry["duration_s"]}


def _media_word(kinds: Sequence[str]) -> str:
    return "video" if "video" in kinds else "audio"


def _new_id() -> str:
    return secrets.token_urlsafe(12)
