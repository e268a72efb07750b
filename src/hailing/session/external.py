"""Calls whose media belongs to someone else: a browser page's RTCPeerConnection.

Theory of operation
-------------------
A browser makes its own offer or answer (tracks, a data channel ``hailing``); the daemon
only seals, sends and receives its SDP text, and signs the identity proof on the page's
behalf. Nothing here touches aiortc.

**Candidates.** A page's SDP goes out with its host candidates filtered to the
configured ICE hosts (when set), and with its server-reflexive and relay candidates
(from the daemon's ICE servers, ``GET /api/ice``) checked (:func:`filter_candidates`).
Like every description, it travels only sealed to the other party, and a callee's
answer (its candidates) only once its policy accepted the call.

**Calling** (:meth:`hailing.peer.Peer.call_external`): the page's SDP, its host
candidates filtered to the configured ICE hosts (:func:`filter_candidates`), is packed
(format 2, :mod:`hailing.signaling.sdp_text`) and dialed through the ladder
(:meth:`ConnectionManager.exchange <hailing.session.connections.ConnectionManager.exchange>`);
the answer comes back as an :class:`ExternalCall`: the callee's SDP text, our hello
proof for the page to send (:attr:`ExternalCall.proof_hex`) and :meth:`ExternalCall.verify`
for the callee's.

**Being called** (``Peer(on_media_offer=...)``): an offer the call policy accepted, with
room for it (the call caps), whose SDP has an audio or video section becomes an
:class:`IncomingCall` handed to the callback. It *rings* until one of: :meth:`answer`
(the page's answer SDP sealed, naming the offer, and sent back the way the offer came;
returns our proof), :meth:`decline` (nothing is sent: the caller sees what an offline
callee looks like), the offer's expiry, or the caller's sealed CANCEL. Every change of
state calls :attr:`IncomingCall.on_state`; :attr:`IncomingCall.finished` is set when it
stops ringing. An answered call keeps its place in the call caps until :meth:`end`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..errors import DaemonError, HailingError, LocalProtocolError, RemoteProtocolError
from ..identity import Identity
from ..rtc.ice import current_host_addresses
from ..signaling import envelope, sdp_text
from ..signaling.envelope import transcript_proof, verify_transcript
from .coupler import Coupler
from .descriptions import decode_description, description_fingerprint
from .dialer import Dialer

__all__ = ["ExternalCall", "IncomingCall", "IncomingState", "dial_external",
           "filter_candidates", "media_kinds", "media_of", "pack_external_sdp", "sdp_of_body",
           "usable_reflexive"]

IncomingState = Literal["ringing", "answered", "declined", "cancelled", "expired", "failed",
                        "ended"]

log = logging.getLogger("hailing.session")

#: An answer's body starts with this many bytes of the offer's reference
#: (connections.ANSWER_REF, which imports this module).
_REF = 8
_MEDIA = re.compile(r"^m=(audio|video) ", re.MULTILINE)
_SDP_LINE = re.compile(r"[a-z]=[^\x00]*")
_LINES = re.compile(r"[^\n]*\n|[^\n]+")


def media_kinds(sdp: str) -> tuple[str, ...]:
    """The media kinds (``audio``, ``video``) an SDP text has sections for, in order of
    first appearance; empty for a data-only description."""
    seen: list[str] = []
    for kind in _MEDIA.findall(sdp):
        if kind not in seen:
            seen.append(kind)
    return tuple(seen)


def filter_candidates(sdp: str, hosts: Sequence[str] | None) -> str:
    """``sdp`` without the ``a=candidate`` lines ICE must not use: those of type ``host``
    whose address is not one of ``hosts`` (the configured ICE hosts:
    ``HAILING_ICE_HOSTS`` / ``--ice-host``; None: any host address), and those of type
    ``srflx``, ``prflx`` or ``relay`` (a STUN server's or a relay's view, allowed
    through) whose address is not a usable public-side one (:func:`usable_reflexive`).
    Every other byte is kept as it was."""
    allowed = None if hosts is None else set(hosts)
    out = []
    for line in _LINES.findall(sdp):
        if line.startswith("a=candidate:"):
            parts = line.split()
            typ = parts.index("typ") if "typ" in parts else -1
            kind = parts[typ + 1] if 0 <= typ < len(parts) - 1 else None
            if kind == "host" and len(parts) > 4 and allowed is not None \
                    and parts[4] not in allowed:
                continue
            if kind in ("srflx", "prflx", "relay") and (
                    len(parts) < 6 or not usable_reflexive(parts[4], parts[5])):
                continue
        out.append(line)
    return "".join(out)


def usable_reflexive(address: str, port: str) -> bool:
    """Whether a server-reflexive, peer-reflexive or relay candidate's address can be one:
    an IP address that is not loopback, unspecified, multicast or link-local, and a port
    in 1-65535."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        return False
    return port.isdigit() and 0 < int(port) < 65536


def pack_external_sdp(sdp: object, hosts: Sequence[str] | None) -> tuple[bytes, bytes]:
    """A page's SDP text as an envelope body (format 2) and its DTLS fingerprint;
    LocalProtocolError for anything that is not one SDP text with exactly one sha-256
    fingerprint, at most :data:`~hailing.signaling.sdp_text.MAX_TEXT` bytes."""
    if not isinstance(sdp, str):
        raise LocalProtocolError("the SDP must be text")
    if len(sdp.encode("utf-8", "replace")) > sdp_text.MAX_TEXT:
        raise LocalProtocolError(f"the SDP is longer than {sdp_text.MAX_TEXT} bytes")
    if not sdp.startswith("v=0") or not _is_sdp(sdp):
        raise LocalProtocolError("not an SDP text (one 'v=0' line first, then only "
                                 "'x=value' lines)")
    try:
        body = sdp_text.pack_sdp_text(filter_candidates(sdp, hosts))
        fp = description_fingerprint(body)
    except (HailingError, UnicodeError, ValueError) as exc:
        raise LocalProtocolError(f"not a usable SDP: {exc}") from None
    return body, fp


def _is_sdp(sdp: str) -> bool:
    """RFC 8866's shape: ``<type>=<value>`` lines, one ``v=`` line (the first)."""
    lines = sdp.splitlines()
    return (all(_SDP_LINE.fullmatch(line) for line in lines if line)
            and sum(1 for line in lines if line.startswith("v=")) == 1)


def sdp_of_body(body: bytes, kind: Literal["offer", "answer"]) -> str:
    """The SDP text of an envelope body (compact form or text); SdpError if neither."""
    return decode_description(body, kind).sdp


def media_of(body: bytes) -> tuple[str | None, tuple[str, ...]]:
    """An offer body's SDP text and media kinds: (None, ()) for the compact form, which
    carries no media, or for a body that is not SDP."""
    if body[:1] not in (bytes([sdp_text.FORMAT]), b"v"):
        return None, ()
    try:
        sdp = sdp_of_body(body, "offer")
    except HailingError:
        return None, ()
    return sdp, media_kinds(sdp)


async def dial_external(dialer: Dialer, identity: Identity, peer: bytes, local_fp: bytes,
                        exchange: Callable[[Coupler, float], Awaitable[envelope.Opened]],
                        timeout: float, only: str | None) -> ExternalCall:
    """Run ``exchange`` (one offer through one coupler, :meth:`ConnectionManager.exchange
    <hailing.session.connections.ConnectionManager.exchange>`) rung by rung; the answer
    as an :class:`ExternalCall`."""
    t0 = time.perf_counter()
    answer, used = await dialer.dial(timeout, exchange, only=only)
    ref, reply = answer.body[:_REF], answer.body[_REF:]
    try:
        text = sdp_of_body(reply, "answer")
    except HailingError as exc:
        raise RemoteProtocolError(f"the callee's answer is not SDP: {exc}") from None
    remote_fp = description_fingerprint(reply)
    proof = transcript_proof(identity, local_fp, remote_fp, True)
    return ExternalCall(peer, text, local_fp, remote_fp, proof.hex(), used.name,
                        round((time.perf_counter() - t0) * 1000, 1), ref)


def _proof_bytes(proof: object) -> bytes:
    if isinstance(proof, bytes):
        return proof
    if not isinstance(proof, str) or len(proof) != 128:
        return b""
    try:
        return bytes.fromhex(proof)
    except ValueError:
        return b""


@dataclass(frozen=True)
class ExternalCall:
    """An answered call made for a page: ``sdp`` is the callee's answer (give it to the
    page's RTCPeerConnection), ``proof_hex`` the hello proof the page sends over its
    channel, :meth:`verify` checks the callee's."""

    peer: bytes
    sdp: str
    local_fp: bytes
    remote_fp: bytes
    proof_hex: str
    coupler: str
    signal_ms: float
    offer_ref: bytes

    def verify(self, proof: object) -> bool:
        """Whether ``proof`` (hex or bytes) is the callee's hello proof for this session."""
        return verify_transcript(self.peer, _proof_bytes(proof), self.local_fp,
                                 self.remote_fp, True)


Reply = Callable[[bytes], Awaitable[object]]


@dataclass(eq=False)
class IncomingCall:
    """A ringing call for a page (see the module docstring). Built by the
    :class:`~hailing.session.connections.ConnectionManager`; ``release`` gives its place
    in the call caps back."""

    sender: bytes
    sdp: str
    media: tuple[str, ...]
    expires: float
    coupler: str
    offer_ref: bytes
    remote_fp: bytes
    _identity: Identity = field(repr=False)
    _reply: Reply = field(repr=False)
    _release: Callable[[IncomingCall], None] = field(repr=False)
    _clock: Callable[[], float] = field(default=time.time, repr=False)
    state: IncomingState = "ringing"
    #: Why it stopped ringing or ended (``cancelled``, ``expired``, a failure ...).
    reason: str | None = None
    local_fp: bytes | None = None
    answered_at: float | None = None
    #: Called (with the call) after every change of :attr:`state`.
    on_state: Callable[[IncomingCall], None] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    #: Set when it gave its place in the call caps back (not answered, or ended).
    closed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _busy: bool = field(default=False, repr=False)

    @property
    def ringing(self) -> bool:
        return self.state == "ringing"

    async def answer(self, sdp: object) -> str:
        """Seal the page's answer ``sdp`` (host candidates filtered to the configured ICE
        hosts) to the caller, naming the offer, and send it back the way the offer
        came. Returns our hello proof (hex). DaemonError when the call no longer rings
        (answered, declined, cancelled, expired); LocalProtocolError for an SDP that is
        not one."""
        self._check_ringing()
        if self._clock() > self.expires:
            self._finish("expired", "expired")
            self._check_ringing()
        body, fp = pack_external_sdp(sdp, current_host_addresses())
        blob = envelope.seal(self._identity, self.sender, envelope.KIND_ANSWER,
                             self.offer_ref + body, now=self._clock())
        self._busy = True  # one answer at a time: a second accept waits for no one
        try:
            await self._reply(blob)
        except HailingError as exc:
            self._busy = False
            self._finish("failed", str(exc) or type(exc).__name__)
            raise
        except BaseException:
            self._busy = False
            raise
        self._busy = False
        if self.state != "ringing":  # cancelled while the answer was on its way
            self._check_ringing()
        self.local_fp = fp
        self.answered_at = self._clock()
        self._finish("answered", "answered", release=False)
        return transcript_proof(self._identity, fp, self.remote_fp, False).hex()

    def verify(self, proof: object) -> bool:
        """Whether ``proof`` (hex or bytes) is the caller's hello proof for this session
        (False before :meth:`answer`)."""
        if self.local_fp is None:
            return False
        return verify_transcript(self.sender, _proof_bytes(proof), self.local_fp,
                                 self.remote_fp, False)

    def decline(self) -> None:
        """Stop ringing; nothing is sent (the caller cannot tell it from absence)."""
        self._check_ringing()
        self._finish("declined", "declined")

    def cancel(self, reason: str = "cancelled") -> bool:
        """The caller gave up (its sealed CANCEL), or the offer expired (``expired``).
        False if it no longer rang."""
        if self.state != "ringing":
            return False
        self._finish("expired" if reason == "expired" else "cancelled", reason)
        return True

    def end(self, reason: str = "hung up") -> None:
        """An answered call is over: its place in the call caps is given back."""
        if self.state == "answered":
            self.state = "ended"
            self.reason = reason
            self._release(self)
            self.closed.set()
            self._notify()
        elif self.state == "ringing":
            self.decline()

    def _check_ringing(self) -> None:
        if self._busy:
            raise DaemonError("the call is being answered")
        if self.state != "ringing":
            raise DaemonError(f"the call no longer rings ({self.state})")

    def _finish(self, state: IncomingState, reason: str, *, release: bool = True) -> None:
        self.state = state
        self.reason = reason
        self.finished.set()
        if release:
            self._release(self)
            self.closed.set()
        self._notify()

    def _notify(self) -> None:
        if self.on_state is not None:
            try:
                self.on_state(self)
            except Exception:  # a bug in the listener: the call goes on, said once
                log.exception("a call's state listener failed")
