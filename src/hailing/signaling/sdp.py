"""Compact binary form of a data-channel-only WebRTC offer or answer.

aiortc's text SDP for a data channel is about 900 bytes; the signaling paths (BEP44 values,
contract events, QR codes) reward small. This codec keeps only what rebuilds an SDP that
aiortc and browsers accept for one ``m=application ... UDP/DTLS/SCTP webrtc-datachannel``
section: ICE ufrag/pwd, the sha-256 DTLS fingerprint, the setup role, the mid, SCTP port
and max-message-size when not the usual ones, and the UDP candidates. Candidate
foundations are recomputed; priorities are kept only when they differ from RFC 8445's
recommended formula (local preference 65535, as aioice computes them).

Wire format, version 1 (integers big-endian)::

    u8   version = 1 (the DTLS fingerprint algorithm is sha-256)
    u8   flags: bit 0 type (0 offer, 1 answer); bits 1-2 setup (0 actpass, 1 active,
         2 passive); bit 3 end-of-candidates; bit 4 mid follows (else "0"); bit 5
         sctp-port follows (else 5000); bit 6 max-message-size follows (else 262144);
         bit 7 reserved (0)
    u8 len, ufrag (4-255 ice-chars); u8 len, pwd (22-255 ice-chars)
    32   sha-256 fingerprint
    [u8 len, mid (1-32 token chars)] [u16 sctp-port] [u32 max-message-size]
    u8   number of candidates (0-16), then per candidate:
         u8 flags: bits 0-1 type (host, srflx, prflx, relay); bits 2-3 address kind
            (0 IPv4, 1 IPv6, 2 mDNS name "<uuid>.local"); bits 4-5 related address
            (0 none, 1 IPv4, 2 IPv6); bit 6 component 2 (else 1); bit 7 priority follows
         address (4 or 16 bytes), u16 port (1-65535), [u32 priority],
         [related address (4 or 16 bytes), u16 related port]

The decoder is strict and canonical: it refuses reserved bits, explicit default values,
out-of-range fields and trailing bytes, so any blob it accepts re-encodes to itself. Every
problem in a blob raises ``SdpError`` (a ``RemoteProtocolError``); an SDP this codec
cannot represent raises ``LocalProtocolError`` from ``encode_sdp``. Non-UDP candidates
(browsers' TCP candidates, which aiortc cannot use) are left out on encoding.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from hailing.errors import LocalProtocolError, SdpError

if TYPE_CHECKING:
    from aiortc import RTCSessionDescription

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_SCTP_PORT",
    "MAX_CANDIDATES",
    "MAX_SIZE",
    "VERSION",
    "CandidateType",
    "CompactCandidate",
    "CompactSdp",
    "DescriptionType",
    "SdpError",
    "SetupRole",
    "decode_sdp",
    "default_priority",
    "encode_sdp",
    "fingerprint_of",
    "pack",
    "parse_sdp",
    "unpack",
]

VERSION = 1
DEFAULT_SCTP_PORT = 5000  # RFC 8841 / what aiortc and browsers use
DEFAULT_MAX_MESSAGE_SIZE = 262144  # what aiortc and Chrome announce
MAX_CANDIDATES = 16
#: Largest possible version-1 blob; anything longer is refused before parsing.
MAX_SIZE = 2 + 2 * 256 + 32 + 33 + 2 + 4 + 1 + MAX_CANDIDATES * (1 + 16 + 2 + 4 + 16 + 2)

DescriptionType = Literal["offer", "answer"]
SetupRole = Literal["actpass", "active", "passive"]
CandidateType = Literal["host", "srflx", "prflx", "relay"]

_TYPES: tuple[DescriptionType, ...] = ("offer", "answer")
_SETUPS: tuple[SetupRole, ...] = ("actpass", "active", "passive")
_CAND_TYPES: tuple[CandidateType, ...] = ("host", "srflx", "prflx", "relay")
_TYPE_PREFERENCE = {"host": 126, "prflx": 110, "srflx": 100, "relay": 0}  # RFC 8445 5.1.2.2
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")  # RFC 8839 ice-char
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]{1,32}")  # RFC 4566 token, bounded
_MDNS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.local")
_FP_TEXT = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}")


class _Description(Protocol):
    type: str
    sdp: str


def default_priority(candidate_type: str, component: int) -> int:
    """RFC 8445 section 5.1.2.1 with local preference 65535 (what aioice uses)."""
    return (_TYPE_PREFERENCE[candidate_type] << 24) + (65535 << 8) + (256 - component)


@dataclass(frozen=True, slots=True)
class CompactCandidate:
    """One UDP ICE candidate. ``address`` is an IP address or an mDNS ``<uuid>.local``."""

    type: CandidateType
    address: str
    port: int
    priority: int
    component: int = 1
    related_address: str | None = None
    related_port: int | None = None

    def to_sdp(self) -> str:
        """The ``candidate:`` attribute value (without ``a=``), foundation recomputed."""
        base = self.related_address if self.type != "host" and self.related_address else None
        key = f"{self.type}|udp|{base or self.address}".encode()
        foundation = str(int.from_bytes(hashlib.sha256(key).digest()[:4], "big"))
        line = (
            f"candidate:{foundation} {self.component} udp {self.priority} "
            f"{self.address} {self.port} typ {self.type}"
        )
        if self.related_address is not None:
            line += f" raddr {self.related_address} rport {self.related_port}"
        return line


@dataclass(frozen=True, slots=True)
class CompactSdp:
    """Everything the compact form carries; ``to_sdp()`` rebuilds the SDP text."""

    type: DescriptionType
    ice_ufrag: str
    ice_pwd: str
    fingerprint: bytes  # raw sha-256 of the DTLS certificate
    setup: SetupRole
    candidates: tuple[CompactCandidate, ...] = ()
    end_of_candidates: bool = True
    mid: str = "0"
    sctp_port: int = DEFAULT_SCTP_PORT
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    def to_sdp(self) -> str:
        """A complete SDP for one data-channel section, in the layout aiortc emits."""
        session_id = int.from_bytes(self.fingerprint[:8], "big") >> 1
        fp = ":".join(f"{b:02X}" for b in self.fingerprint)
        lines = [
            "v=0",
            f"o=- {session_id} 0 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            f"a=group:BUNDLE {self.mid}",
            "a=msid-semantic:WMS *",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "c=IN IP4 0.0.0.0",
            f"a=mid:{self.mid}",
            f"a=sctp-port:{self.sctp_port}",
            f"a=max-message-size:{self.max_message_size}",
            *(f"a={c.to_sdp()}" for c in self.candidates),
            *(["a=end-of-candidates"] if self.end_of_candidates else []),
            f"a=ice-ufrag:{self.ice_ufrag}",
            f"a=ice-pwd:{self.ice_pwd}",
            f"a=fingerprint:sha-256 {fp}",
            f"a=setup:{self.setup}",
        ]
        return "\r\n".join(lines) + "\r\n"


# -- validation shared by both directions (returns a problem, or None) -----------------


def _ip_problem(addr: str, what: str, *, related: bool = False) -> str | None:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return f"{what} is not an IP address: {addr!r}"
    if str(ip) != addr:
        return f"{what} is not in canonical form: {addr!r}"
    if not related and (ip.is_unspecified or ip.is_multicast):
        return f"{what} is not a usable candidate address: {addr!r}"
    return None


def _problem(d: CompactSdp) -> str | None:
    if d.type not in _TYPES or d.setup not in _SETUPS:
        return f"unsupported type/setup: {d.type!r}/{d.setup!r}"
    for name, value, low in (("ice-ufrag", d.ice_ufrag, 4), ("ice-pwd", d.ice_pwd, 22)):
        if not low <= len(value) <= 255 or not _ICE_CHARS.fullmatch(value):
            return f"{name} must be {low}-255 ICE characters, got {value!r}"
    if len(d.fingerprint) != 32:
        return f"the sha-256 fingerprint has {len(d.fingerprint)} bytes, not 32"
    if not _TOKEN.fullmatch(d.mid):
        return f"mid must be 1-32 token characters, got {d.mid!r}"
    if not 1 <= d.sctp_port <= 65535 or not 0 <= d.max_message_size < 1 << 32:
        return f"sctp-port {d.sctp_port} or max-message-size {d.max_message_size} out of range"
    if len(d.candidates) > MAX_CANDIDATES:
        return f"{len(d.candidates)} candidates, at most {MAX_CANDIDATES} fit"
    for c in d.candidates:
        if c.type not in _CAND_TYPES or c.component not in (1, 2):
            return f"unsupported candidate type/component: {c.type!r}/{c.component!r}"
        if not 1 <= c.port <= 65535 or not 1 <= c.priority < 1 << 31:
            return f"candidate port {c.port} or priority {c.priority} out of range"
        if not _MDNS.fullmatch(c.address) and (err := _ip_problem(c.address, "candidate")):
            return err
        if (c.related_address is None) != (c.related_port is None):
            return "a related address needs a related port and vice versa"
        if c.related_address is not None:
            if err := _ip_problem(c.related_address, "related address", related=True):
                return err
            if c.related_port is None or not 0 <= c.related_port <= 65535:
                return f"related port out of range: {c.related_port}"
    return None


# -- binary form ------------------------------------------------------------------------


def _addr_kind(addr: str) -> tuple[int, bytes]:
    if _MDNS.fullmatch(addr):
        return 2, bytes.fromhex(addr[:-6].replace("-", ""))
    ip = ipaddress.ip_address(addr)
    return (0 if ip.version == 4 else 1), ip.packed


def pack(d: CompactSdp) -> bytes:
    """The compact bytes of ``d``; ``LocalProtocolError`` if a field is out of range."""
    if err := _problem(d):
        raise LocalProtocolError(f"cannot encode SDP: {err}")
    flags = _TYPES.index(d.type) | _SETUPS.index(d.setup) << 1 | d.end_of_candidates << 3
    tail = b""
    if d.mid != "0":
        flags |= 0x10
        tail += bytes([len(d.mid)]) + d.mid.encode()
    if d.sctp_port != DEFAULT_SCTP_PORT:
        flags |= 0x20
        tail += d.sctp_port.to_bytes(2, "big")
    if d.max_message_size != DEFAULT_MAX_MESSAGE_SIZE:
        flags |= 0x40
        tail += d.max_message_size.to_bytes(4, "big")
    out = bytearray([VERSION, flags, len(d.ice_ufrag)])
    out += d.ice_ufrag.encode() + bytes([len(d.ice_pwd)]) + d.ice_pwd.encode()
    out += d.fingerprint + tail + bytes([len(d.candidates)])
    for c in d.candidates:
        kind, raw = _addr_kind(c.address)
        cflags = _CAND_TYPES.index(c.type) | kind << 2 | (c.component == 2) << 6
        body = raw + c.port.to_bytes(2, "big")
        if c.priority != default_priority(c.type, c.component):
            cflags |= 0x80
            body += c.priority.to_bytes(4, "big")
        if c.related_address is not None and c.related_port is not None:
            rkind, rraw = _addr_kind(c.related_address)
            cflags |= (rkind + 1) << 4
            body += rraw + c.related_port.to_bytes(2, "big")
        out += bytes([cflags]) + body
    return bytes(out)


class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob, self.pos = blob, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.blob):
            raise SdpError(f"compact SDP truncated at byte {len(self.blob)} (reading {what})")
        self.pos += n
        return self.blob[self.pos - n : self.pos]

    def num(self, n: int, what: str, default: int | None = None) -> int:
        value = int.from_bytes(self.take(n, what), "big")
        if value == default:
            raise SdpError(f"compact SDP: explicit default {what} (not canonical)")
        return value

    def text(self, what: str) -> str:
        raw = self.take(self.num(1, f"{what} length"), what)
        if not raw.isascii():
            raise SdpError(f"compact SDP: {what} is not ASCII")
        return raw.decode("ascii")

    def address(self, kind: int, what: str) -> str:
        if kind == 0:
            return str(ipaddress.IPv4Address(self.take(4, what)))
        if kind == 1:
            return str(ipaddress.IPv6Address(self.take(16, what)))
        h = self.take(16, what).hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}.local"


def unpack(blob: bytes | bytearray | memoryview) -> CompactSdp:
    """Parse compact bytes strictly; any problem raises ``SdpError``."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise SdpError(f"compact SDP must be bytes, not {type(blob).__name__}")
    if len(blob := bytes(blob)) > MAX_SIZE:
        raise SdpError(f"compact SDP of {len(blob)} bytes exceeds {MAX_SIZE}")
    r = _Reader(blob)
    if (version := r.num(1, "version")) != VERSION:
        raise SdpError(f"unsupported compact SDP version {version}")
    flags = r.num(1, "flags")
    if flags & 0x80 or (flags >> 1) & 3 == 3:
        raise SdpError(f"compact SDP: invalid flags {flags:#04x}")
    ufrag, pwd, fingerprint = r.text("ice-ufrag"), r.text("ice-pwd"), r.take(32, "fingerprint")
    mid = r.text("mid") if flags & 0x10 else "0"
    if flags & 0x10 and mid == "0":
        raise SdpError("compact SDP: explicit default mid (not canonical)")
    sctp = r.num(2, "sctp-port", DEFAULT_SCTP_PORT) if flags & 0x20 else DEFAULT_SCTP_PORT
    mms = DEFAULT_MAX_MESSAGE_SIZE
    if flags & 0x40:
        mms = r.num(4, "max-message-size", DEFAULT_MAX_MESSAGE_SIZE)
    if (count := r.num(1, "candidate count")) > MAX_CANDIDATES:
        raise SdpError(f"compact SDP: {count} candidates, at most {MAX_CANDIDATES}")
    candidates = []
    for i in range(count):
        cflags = r.num(1, f"candidate {i} flags")
        kind, rkind = (cflags >> 2) & 3, (cflags >> 4) & 3
        if kind == 3 or rkind == 3:
            raise SdpError(f"compact SDP: candidate {i} has invalid flags {cflags:#04x}")
        ctype, component = _CAND_TYPES[cflags & 3], 2 if cflags & 0x40 else 1
        address = r.address(kind, f"candidate {i} address")
        port = r.num(2, f"candidate {i} port")
        priority = default_priority(ctype, component)
        if cflags & 0x80:
            priority = r.num(4, f"candidate {i} priority", priority)
        raddr = r.address(rkind - 1, f"candidate {i} related address") if rkind else None
        rport = r.num(2, f"candidate {i} related port") if rkind else None
        candidates.append(CompactCandidate(ctype, address, port, priority, component, raddr, rport))
    if r.pos != len(blob):
        raise SdpError(f"compact SDP: {len(blob) - r.pos} trailing bytes")
    d = CompactSdp(
        _TYPES[flags & 1], ufrag, pwd, fingerprint, _SETUPS[(flags >> 1) & 3],
        tuple(candidates), bool(flags & 0x08), mid, sctp, mms,
    )  # fmt: skip
    if err := _problem(d):
        raise SdpError(f"compact SDP: {err}")
    return d


# -- text SDP -------------------------------------------------------------------------

_SINGLE = ("ice-ufrag", "ice-pwd", "setup", "mid", "sctp-port", "max-message-size")
_REFUSED = {"ice-lite": "ICE lite", "sctpmap": "the legacy sctpmap format"}


def _bad(message: str) -> LocalProtocolError:
    return LocalProtocolError(f"cannot encode SDP: {message}")


def _int(text: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", text):
        raise _bad(f"{what} is not a number: {text!r}")
    return int(text)


def _address(text: str, what: str) -> str:
    if _MDNS.fullmatch(text.lower()):
        return text.lower()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _bad(f"{what} is neither an IP address nor an mDNS name: {text!r}") from None


def _candidate(value: str) -> CompactCandidate | None:
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ" or len(bits) % 2:
        raise _bad(f"malformed candidate: {value!r}")
    if bits[2].lower() != "udp":
        return None  # TCP candidates: aiortc cannot use them, leave them out
    if bits[7] not in _CAND_TYPES:
        raise _bad(f"unknown candidate type {bits[7]!r}")
    ext = dict(zip(bits[8::2], bits[9::2], strict=True))
    raddr, rport = ext.get("raddr"), ext.get("rport")
    if (raddr is None) != (rport is None):
        raise _bad(f"candidate with only one of raddr/rport: {value!r}")
    return CompactCandidate(
        type=bits[7],
        address=_address(bits[4], "candidate address"),
        port=_int(bits[5], "candidate port"),
        priority=_int(bits[3], "candidate priority"),
        component=_int(bits[1], "candidate component"),
        related_address=None if raddr is None else _address(raddr, "related address"),
        related_port=None if rport is None else _int(rport, "related port"),
    )


def parse_sdp(type_: str, sdp: str) -> CompactSdp:
    """Read what the compact form carries out of a data-channel-only SDP.

    Raises ``LocalProtocolError`` for anything the compact form cannot carry: another type
    than offer/answer, media sections other than exactly one data-channel section, no
    sha-256 fingerprint, ICE lite, out-of-range values.
    """
    if type_ not in _TYPES:
        raise _bad(f"only offers and answers are supported, not {type_!r}")
    if not isinstance(sdp, str):
        raise _bad(f"SDP must be text, not {type(sdp).__name__}")
    levels: list[dict[str, list[str]]] = [{}]  # session, then one per m= section
    m_lines: list[str] = []
    for line in sdp.splitlines():
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise _bad(f"not an SDP line: {line[:40]!r}")
        if line[0] == "m":
            m_lines.append(line[2:])
            levels.append({})
        elif line[0] == "a":
            name, _, value = line[2:].partition(":")
            levels[-1].setdefault(name, []).append(value)
    if len(m_lines) != 1:
        raise _bad(f"expected one data-channel m= section, found {len(m_lines)}")
    m = m_lines[0].split()
    if len(m) != 4 or m[0] != "application" or m[2:] != ["UDP/DTLS/SCTP", "webrtc-datachannel"]:
        raise _bad(f"unsupported media section: m={m_lines[0]}")
    if m[1] == "0":
        raise _bad("the data-channel section is rejected (port 0)")
    session, media = levels
    for attr, why in _REFUSED.items():
        if attr in session or attr in media:
            raise _bad(f"{why} is not supported")
    if "candidate" in session:
        raise _bad("candidates outside the media section")
    single: dict[str, str] = {}
    for name in _SINGLE:
        values = media.get(name) or session.get(name) or []
        if len(values) > 1:
            raise _bad(f"{len(values)} a={name} lines")
        if values:
            single[name] = values[0]
    fingerprint = _sha256(media.get("fingerprint") or session.get("fingerprint") or [])
    candidates = [c for v in media.get("candidate", []) if (c := _candidate(v)) is not None]
    missing = [n for n in ("ice-ufrag", "ice-pwd", "setup") if n not in single]
    if missing:
        raise _bad(f"missing a={', a='.join(missing)}")
    setup = single["setup"]
    if setup not in _SETUPS:
        raise _bad(f"unsupported setup role {setup!r}")
    sctp = _int(single.get("sctp-port", str(DEFAULT_SCTP_PORT)), "sctp-port")
    mms = _int(single.get("max-message-size", "65536"), "max-message-size")  # RFC 8841 6.1
    d = CompactSdp(
        type_, single["ice-ufrag"], single["ice-pwd"], fingerprint, setup, tuple(candidates),
        "end-of-candidates" in media, single.get("mid", "0"), sctp, mms,
    )  # fmt: skip
    if err := _problem(d):
        raise _bad(err)
    return d


def _sha256(values: list[str]) -> bytes:
    found: set[bytes] = set()
    algorithms = []
    for value in values:
        algorithm, _, text = value.strip().partition(" ")
        algorithms.append(algorithm)
        if algorithm.lower() == "sha-256":
            if not _FP_TEXT.fullmatch(text.strip()):
                raise _bad(f"malformed sha-256 fingerprint {text!r}")
            found.add(bytes.fromhex(text.strip().replace(":", "")))
    if len(found) != 1:
        raise _bad(f"need exactly one sha-256 fingerprint, found {len(found)} in {algorithms}")
    return found.pop()


# -- the API ----------------------------------------------------------------------------


def _fields(description: _Description | tuple[str, str]) -> CompactSdp:
    if isinstance(description, tuple) and len(description) == 2:
        return parse_sdp(*description)
    if isinstance(description, tuple) or not hasattr(description, "sdp"):
        raise _bad(f"not a session description or (type, sdp): {type(description).__name__}")
    return parse_sdp(getattr(description, "type", ""), description.sdp)


def encode_sdp(description: _Description | tuple[str, str]) -> bytes:
    """Compact bytes of an offer/answer (an ``RTCSessionDescription`` or ``(type, sdp)``).

    Use it on a description after ICE gathering completed (aiortc's
    ``localDescription``), so that the candidates are in it. Raises
    ``LocalProtocolError`` for an SDP the compact form cannot carry.
    """
    return pack(_fields(description))


def decode_sdp(blob: bytes | bytearray | memoryview) -> RTCSessionDescription:
    """The ``RTCSessionDescription`` rebuilt from compact bytes; ``SdpError`` if invalid."""
    from aiortc import RTCSessionDescription

    d = unpack(blob)
    return RTCSessionDescription(sdp=d.to_sdp(), type=d.type)


def fingerprint_of(
    description: _Description | tuple[str, str] | bytes | bytearray | memoryview,
) -> bytes:
    """The raw 32-byte sha-256 DTLS fingerprint of a description or of compact bytes.

    A description raises ``LocalProtocolError`` if unsupported; compact bytes raise
    ``SdpError`` if invalid.
    """
    if isinstance(description, bytes | bytearray | memoryview):
        return unpack(description).fingerprint
    return _fields(description).fingerprint
