"""Fixtures for the libtorrent interop tests: loopback-only libtorrent DHT sessions.

Every session created here binds 127.0.0.1 only, has no DHT bootstrap routers (libtorrent's
default ``dht.libtorrent.org:25401`` is replaced by ""), and LSD, UPnP and NAT-PMP are off,
so nothing leaves the loopback interface.

libtorrent alert objects returned by ``session.pop_alerts()`` are *borrowed* pointers into
the session's alert buffer: they dangle after the next ``pop_alerts()`` call. So alerts are
never kept: :func:`drain` turns each one into a plain :class:`Alert` snapshot right away, and
:func:`wait_alert` keeps the snapshots it did not want in a per-session buffer.

DHT packets (``dht_pkt_alert``) are decoded and recorded per session too, so tests can check
what libtorrent actually sent to and received from a hailing node (e.g. KRPC error replies).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from lt_loopback import LOOPBACK, lt_settings

try:
    import libtorrent as lt
except ImportError:  # pragma: no cover - depends on the environment
    lt = None


# --------------------------------------------------------------------------- alerts


@dataclass
class Alert:
    """A plain snapshot of a libtorrent alert (safe to keep after the next pop_alerts)."""

    type: type
    name: str
    message: str
    fields: dict[str, Any]

    def __getattr__(self, item: str) -> Any:
        try:
            return self.__dict__["fields"][item]
        except KeyError:
            raise AttributeError(item) from None

    def __repr__(self) -> str:
        return f"<{self.name}: {self.message[:160]}>"


@dataclass
class Packet:
    """One DHT packet libtorrent sent (``outgoing``) or received, decoded."""

    outgoing: bool
    addr: tuple[str, int]
    msg: Any  # the decoded bencoded message (dict with bytes keys) or None

    def get(self, key: bytes) -> Any:
        return self.msg.get(key) if isinstance(self.msg, dict) else None


@dataclass
class SessionState:
    buffer: list[Alert] = field(default_factory=list)
    packets: list[Packet] = field(default_factory=list)
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=400))
    seen: collections.Counter[str] = field(default_factory=collections.Counter)


_STATES: dict[int, SessionState] = {}
_SKIP_ATTRS = {"category", "category_t", "what", "timestamp", "message"}
_PKT_RE = re.compile(r"^(==>|<==) \[(.+?)\]")


def _plain(value: Any) -> Any:
    """Convert libtorrent values (sha1_hash, lists of dicts of them) into plain Python."""
    if lt is not None and isinstance(value, lt.sha1_hash):
        return value.to_bytes()
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _snapshot(a: Any) -> Alert:
    fields: dict[str, Any] = {}
    for name in dir(a):
        if name.startswith("_") or name in _SKIP_ATTRS:
            continue
        try:
            value = getattr(a, name)
            if callable(value) and not isinstance(value, type):
                value = value()  # e.g. dht_get_peers_reply_alert.peers()
            fields[name] = _plain(value)
        except Exception:  # a property that does not apply to this alert
            continue
    try:
        message = a.message()
    except Exception:
        message = ""
    return Alert(type(a), type(a).__name__, message, fields)


def _parse_pkt(a: Any) -> Packet | None:
    message = a.message()
    m = _PKT_RE.match(message)
    if not m:
        return None
    host, _, port = m.group(2).rpartition(":")
    try:
        msg = lt.bdecode(a.pkt_buf)
    except Exception:
        msg = None
    return Packet(m.group(1) == "==>", (host.strip("[]"), int(port)), msg)


def state(ses: Any) -> SessionState:
    return _STATES.setdefault(id(ses), SessionState())


def drain(ses: Any) -> None:
    """Pop every pending alert of ``ses`` into its buffer (as snapshots). Never blocks."""
    st = state(ses)
    for a in ses.pop_alerts():
        st.seen[type(a).__name__] += 1
        if isinstance(a, lt.dht_pkt_alert):
            pkt = _parse_pkt(a)
            if pkt is not None:
                st.packets.append(pkt)
            continue
        if isinstance(a, lt.dht_log_alert):
            st.log.append(a.log_message())
            continue
        st.buffer.append(_snapshot(a))
    if len(st.buffer) > 20_000:  # nobody waits for these; keep memory bounded
        del st.buffer[:10_000]


def _take(
    st: SessionState, alert_type: type, predicate: Callable[[Alert], bool] | None
) -> Alert | None:
    for i, a in enumerate(st.buffer):
        if issubclass(a.type, alert_type) and (predicate is None or predicate(a)):
            del st.buffer[i]
            return a
    return None


async def poll_alert(
    ses: Any,
    alert_type: type,
    predicate: Callable[[Alert], bool] | None = None,
    timeout: float = 10.0,
) -> Alert | None:
    """Like :func:`wait_alert` but return None on timeout."""
    st = state(ses)
    deadline = time.monotonic() + timeout
    while True:
        drain(ses)
        found = _take(st, alert_type, predicate)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.05)


async def wait_alert(
    ses: Any,
    alert_type: type,
    predicate: Callable[[Alert], bool] | None = None,
    timeout: float = 10.0,
) -> Alert:
    """Wait (without blocking the event loop) for an alert of ``alert_type`` matching
    ``predicate``; return its :class:`Alert` snapshot. Unmatched alerts stay buffered in a
    per-session buffer for later calls. Raises AssertionError on timeout."""
    found = await poll_alert(ses, alert_type, predicate, timeout)
    if found is None:
        st = state(ses)
        recent = "\n  ".join(list(st.log)[-25:])
        raise AssertionError(
            f"no {alert_type.__name__} matching the predicate within {timeout}s; "
            f"alerts seen: {dict(st.seen)}; buffered: {st.buffer[-10:]!r}\n"
            f"last DHT log lines:\n  {recent}"
        )
    return found


async def wait_for(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll a synchronous ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- helpers


def lt_addr(ses: Any) -> tuple[str, int]:
    """The UDP address of the session's DHT (it shares the listen port)."""
    return (LOOPBACK, ses.listen_port())


def lt_node_id(ses: Any) -> bytes:
    """The session's DHT node id (20 bytes)."""
    # session.dht_state() is deprecated and session_params.dht_state.nids is not
    # convertible to Python in 2.1; the bencoded session params carry "node-id" as a list
    # of 20-byte id + 4/16-byte local IP entries.
    params = lt.write_session_params(ses.session_state())
    ids = params[b"dht state"][b"node-id"]
    assert ids, "the libtorrent session has no DHT node (is the DHT running?)"
    return bytes(ids[0][:20])


async def lt_live_nodes(ses: Any, timeout: float = 5.0) -> list[tuple[bytes, tuple[str, int]]]:
    """The (id, (ip, port)) entries of the session's DHT routing table."""
    nid = lt_node_id(ses)
    ses.dht_live_nodes(lt.sha1_hash(nid))
    a = await wait_alert(ses, lt.dht_live_nodes_alert, lambda a: a.node_id == nid, timeout)
    return [(n["nid"], tuple(n["endpoint"])) for n in a.nodes]


def packets_with(ses: Any, addr: tuple[str, int]) -> list[Packet]:
    """Every DHT packet libtorrent exchanged with ``addr`` so far (drains alerts first)."""
    drain(ses)
    return [p for p in state(ses).packets if p.addr == tuple(addr)]


def packet_log_available(ses: Any) -> bool:
    drain(ses)
    return bool(state(ses).packets)


def krpc_errors(ses: Any, addr: tuple[str, int]) -> list[Packet]:
    """KRPC error messages exchanged between libtorrent and ``addr``, both directions."""
    return [p for p in packets_with(ses, addr) if p.get(b"y") == b"e"]


def replies_to(ses: Any, addr: tuple[str, int], query: bytes) -> list[Packet]:
    """``addr``'s replies (y=r) to libtorrent's ``query`` queries, matched by transaction id."""
    pkts = packets_with(ses, addr)
    tids = {p.get(b"t") for p in pkts if p.outgoing and p.get(b"q") == query}
    return [p for p in pkts if not p.outgoing and p.get(b"y") == b"r" and p.get(b"t") in tids]


def queries_from(
    ses: Any, addr: tuple[str, int], query: bytes, answered: bool = True
) -> list[Packet]:
    """``addr``'s ``query`` queries to libtorrent; with ``answered``, only those libtorrent
    answered with a reply (y=r), i.e. accepted."""
    pkts = packets_with(ses, addr)
    queries = [p for p in pkts if not p.outgoing and p.get(b"y") == b"q" and p.get(b"q") == query]
    if not answered:
        return queries
    ok = {p.get(b"t") for p in pkts if p.outgoing and p.get(b"y") == b"r"}
    return [p for p in queries if p.get(b"t") in ok]


def lt_secret_key(seed: bytes) -> bytes:
    """libtorrent's 64-byte ed25519 secret key (orlp/ref10 "expanded" form) for a 32-byte
    RFC 8032 seed: clamped SHA-512(seed). This is *not* NaCl's 64-byte seed||pk form."""
    h = bytearray(hashlib.sha512(seed).digest())
    h[0] &= 248
    h[31] &= 63
    h[31] |= 64
    return bytes(h)


def bep44_signed_bytes(salt: bytes, seq: int, v_bencoded: bytes) -> bytes:
    prefix = b"4:salt%d:%s" % (len(salt), salt) if salt else b""
    return prefix + b"3:seqi%de1:v" % seq + v_bencoded


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def lt_session() -> Iterator[Callable[..., Any]]:
    """Factory: ``lt_session(**setting_overrides)`` -> a loopback-only libtorrent session."""
    if lt is None:
        pytest.skip("libtorrent Python bindings are not installed (pip install libtorrent)")
    sessions: list[Any] = []

    def make(**overrides: Any) -> Any:
        ses = lt.session(lt_settings(**overrides))
        sessions.append(ses)
        _STATES[id(ses)] = SessionState()
        assert ses.is_dht_running(), "libtorrent DHT did not start"
        port = ses.listen_port()
        assert port > 0, "libtorrent did not get a listen port on 127.0.0.1"
        return ses

    yield make
    for ses in sessions:
        _STATES.pop(id(ses), None)
        ses.pause()
    sessions.clear()


@pytest.fixture
def ltkit() -> Any:
    """The helpers of this conftest as one namespace (test modules cannot import conftest)."""
    if lt is None:
        pytest.skip("libtorrent Python bindings are not installed (pip install libtorrent)")
    import types

    return types.SimpleNamespace(
        lt=lt,
        LOOPBACK=LOOPBACK,
        Alert=Alert,
        Packet=Packet,
        drain=drain,
        state=state,
        poll_alert=poll_alert,
        wait_alert=wait_alert,
        wait_for=wait_for,
        lt_addr=lt_addr,
        lt_node_id=lt_node_id,
        lt_live_nodes=lt_live_nodes,
        packets_with=packets_with,
        packet_log_available=packet_log_available,
        krpc_errors=krpc_errors,
        replies_to=replies_to,
        queries_from=queries_from,
        lt_secret_key=lt_secret_key,
        bep44_signed_bytes=bep44_signed_bytes,
    )
