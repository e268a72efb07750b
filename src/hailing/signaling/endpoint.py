"""Connection-info records for SIP servers and VPN peers (seed 000, section 2.2).

A record says "reach me (my SIP server, my WireGuard peer) at HOST:PORT", with a few
``extra`` key/values (a WireGuard ``pubkey`` and ``allowed`` IPs, a SIP ``user``). It
travels like an offer: sealed in an envelope of kind :data:`KIND_ENDPOINT` to one contact,
through the contract (an ``Endpoint`` event) or the contact's DHT inbox, so observers see
opaque bytes only. The body is compact JSON::

    {"e":"203.0.113.7:51820","k":"wireguard","x":{"allowed":"10.0.0.2/32","pubkey":"..."}}

:func:`encode_record` checks a record before sealing it (a bad one raises
:class:`LocalProtocolError`); :func:`decode_record` reads a received body and raises
:class:`EndpointError` (a :class:`RemoteProtocolError`) for anything else.
:func:`format_wireguard` prints a WireGuard ``[Peer]`` section.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import EndpointError, LocalProtocolError

__all__ = ["ENDPOINT_KINDS", "KIND_ENDPOINT", "MAX_RECORD", "EndpointError", "EndpointRecord",
           "decode_record", "encode_record", "format_wireguard", "parse_endpoint"]

KIND_ENDPOINT = 3  # envelope kind (KIND_OFFER = 1, KIND_ANSWER = 2)
ENDPOINT_KINDS = ("sip", "wireguard")
# The contract takes 512-byte payloads; the envelope adds 105 bytes.
MAX_RECORD = 400
MAX_EXTRA = 8
_KEY = re.compile(r"[a-z][a-z0-9_-]{0,31}", re.ASCII)
_HOST = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", re.ASCII)
_MAX_VALUE = 200


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    kind: str
    endpoint: str
    extra: dict[str, str] = field(default_factory=dict)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); LocalProtocolError if not."""
    if not isinstance(text, str):
        raise LocalProtocolError("an endpoint is text HOST:PORT")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text)
    if not m:
        raise LocalProtocolError(f"an endpoint is HOST:PORT (or [IPv6]:PORT), not {text!r}")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if m.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise LocalProtocolError(f"not an IPv6 address: {host!r}") from None
    elif not _HOST.fullmatch(host):
        raise LocalProtocolError(f"not a host name or IPv4 address: {host!r}")
    if not 1 <= int(port) <= 65535:
        raise LocalProtocolError(f"a port is 1-65535, not {port}")
    return host, int(port)


def _check_wireguard(extra: dict[str, str]) -> None:
    key = extra.get("pubkey")
    if key is not None:
        try:
            raw = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise LocalProtocolError("pubkey is a WireGuard public key (44 base64 characters)")
    allowed = extra.get("allowed")
    if allowed is not None:
        for net in allowed.split(","):
            try:
                ipaddress.ip_network(net.strip(), strict=False)
            except ValueError:
                raise LocalProtocolError(f"allowed is a comma-separated list of networks, "
                                         f"not {allowed!r}") from None


def check_record(record: EndpointRecord) -> EndpointRecord:
    """``record`` if valid, else :class:`LocalProtocolError` saying why."""
    if record.kind not in ENDPOINT_KINDS:
        raise LocalProtocolError(f"an endpoint kind is one of {', '.join(ENDPOINT_KINDS)}")
    parse_endpoint(record.endpoint)
    if not isinstance(record.extra, dict) or len(record.extra) > MAX_EXTRA:
        raise LocalProtocolError(f"at most {MAX_EXTRA} extra values")
    for k, v in record.extra.items():
        if not isinstance(k, str) or not _KEY.fullmatch(k):
            raise LocalProtocolError(f"an extra key is lowercase letters, digits, - or _: {k!r}")
        if not isinstance(v, str) or len(v) > _MAX_VALUE or not v.isprintable():
            raise LocalProtocolError(f"the extra value of {k} is printable text of at most "
                                     f"{_MAX_VALUE} characters")
    if record.kind == "wireguard":
        _check_wireguard(record.extra)
    return record


def encode_record(record: EndpointRecord) -> bytes:
    """The compact JSON body of ``record`` (checked); at most :data:`MAX_RECORD` bytes."""
    check_record(record)
    body = json.dumps({"e": record.endpoint, "k": record.kind, "x": record.extra},
                      separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    if len(body) > MAX_RECORD:
        raise LocalProtocolError(f"the record is {len(body)} bytes; at most {MAX_RECORD}")
    return body


def decode_record(body: bytes) -> EndpointRecord:
    """Read a received record body; :class:`EndpointError` for anything invalid."""
    if not isinstance(body, bytes) or len(body) > MAX_RECORD:
        raise EndpointError("an endpoint record is at most 400 bytes")
    try:
        obj: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise EndpointError("an endpoint record is not JSON") from None
    if not isinstance(obj, dict) or set(obj) != {"e", "k", "x"}:
        raise EndpointError("an endpoint record has exactly the fields e, k and x")
    kind, endpoint, extra = obj["k"], obj["e"], obj["x"]
    if not isinstance(kind, str) or not isinstance(endpoint, str) or not isinstance(extra, dict):
        raise EndpointError("an endpoint record has the wrong field types")
    try:
        return check_record(EndpointRecord(kind, endpoint, extra))
    except LocalProtocolError as exc:
        raise EndpointError(f"invalid endpoint record: {exc}") from None


def format_wireguard(endpoint: str, extra: dict[str, str], comment: str = "") -> str:
    """A WireGuard ``[Peer]`` section: PublicKey (extra ``pubkey``), Endpoint, AllowedIPs
    (extra ``allowed``), PersistentKeepalive (extra ``keepalive``) when given."""
    lines = ["[Peer]"]
    if comment:
        lines.append("# " + " ".join(comment.split()))
    if "pubkey" in extra:
        lines.append(f"PublicKey = {extra['pubkey']}")
    lines.append(f"Endpoint = {endpoint}")
    if "allowed" in extra:
        lines.append("AllowedIPs = " + ", ".join(n.strip() for n in extra["allowed"].split(",")))
    if extra.get("keepalive", "").isdigit():
        lines.append(f"PersistentKeepalive = {extra['keepalive']}")
    return "\n".join(lines) + "\n"
