#!/usr/bin/env python3
"""Single-node DHT query throughput: hailing vs kademlia (bmuller) vs libtorrent.

Measures how many queries per second ONE server process, pinned to one CPU core,
answers under a closed-loop load with a fixed query mix (default 20% ping,
50% find_node, 30% get of a stored value).  The load generator is a separate
process pinned to another core; it is written against the wire protocols only
(its own bencode and msgpack code below), never against any server's internals.

Servers:
  hailing     `python -m hailing dht serve --bind 127.0.0.1:0` (KRPC, BEP5/BEP44)
  kademlia    bmuller's `kademlia` package, `Server().listen(0, "127.0.0.1")`
              (rpcudp + msgpack; get -> find_value, put -> store)
  libtorrent  a libtorrent session with only the DHT on 127.0.0.1, rate limits lifted

Output is a JSON document on stdout (and in --out FILE); progress and a short
human-readable summary go to stderr (suppressed with --json).

    python benchmarks/query_throughput.py --servers hailing,kademlia,libtorrent

See benchmarks/README.md for what is measured and how fairness is ensured.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import platform
import random
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

KINDS = ("ping", "find_node", "get")
DEFAULT_MIX = "ping=20,find_node=50,get=30"
ALL_SERVERS = ("hailing", "kademlia", "libtorrent")
LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RID_RING = 1 << 18  # distinct request ids in flight or recently timed out


# --------------------------------------------------------------------------- bencode
# Minimal, self-contained: the generator must not depend on any server's code.


def bencode(obj: Any) -> bytes:
    out: list[bytes] = []
    _benc(obj, out)
    return b"".join(out)


def _benc(obj: Any, out: list[bytes]) -> None:
    if isinstance(obj, bool):
        raise TypeError("bool is not bencodable")
    if isinstance(obj, int):
        out.append(b"i%de" % obj)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        b = bytes(obj)
        out.append(b"%d:" % len(b))
        out.append(b)
    elif isinstance(obj, str):
        _benc(obj.encode(), out)
    elif isinstance(obj, (list, tuple)):
        out.append(b"l")
        for x in obj:
            _benc(x, out)
        out.append(b"e")
    elif isinstance(obj, dict):
        out.append(b"d")
        items = [(k.encode() if isinstance(k, str) else bytes(k), v) for k, v in obj.items()]
        for k, v in sorted(items):
            _benc(k, out)
            _benc(v, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(obj).__name__}")


def bdecode(data: bytes) -> Any:
    val, pos = _bdec(data, 0)
    if pos != len(data):
        raise ValueError("trailing data after bencoded value")
    return val


def _bdec(data: bytes, i: int) -> tuple[Any, int]:
    c = data[i : i + 1]
    if c == b"i":
        j = data.index(b"e", i)
        return int(data[i + 1 : j]), j + 1
    if c == b"l":
        i += 1
        lst = []
        while data[i : i + 1] != b"e":
            if i >= len(data):
                raise ValueError("unterminated list")
            v, i = _bdec(data, i)
            lst.append(v)
        return lst, i + 1
    if c == b"d":
        i += 1
        d = {}
        while data[i : i + 1] != b"e":
            if i >= len(data):
                raise ValueError("unterminated dict")
            k, i = _bdec(data, i)
            if not isinstance(k, bytes):
                raise ValueError("dict key is not a string")
            v, i = _bdec(data, i)
            d[k] = v
        return d, i + 1
    if c.isdigit():
        j = data.index(b":", i)
        n = int(data[i:j])
        if n < 0 or j + 1 + n > len(data):
            raise ValueError("bad string length")
        return data[j + 1 : j + 1 + n], j + 1 + n
    raise ValueError(f"bad bencode at offset {i}")


# --------------------------------------------------------------------------- msgpack
# Just the subset rpcudp/kademlia use (umsgpack on the other side).


def mp_pack(obj: Any) -> bytes:
    if obj is None:
        return b"\xc0"
    if obj is True:
        return b"\xc3"
    if obj is False:
        return b"\xc2"
    if isinstance(obj, int):
        if 0 <= obj < 128:
            return bytes([obj])
        if 0 <= obj < 1 << 16:
            return b"\xcd" + struct.pack(">H", obj)
        if 0 <= obj < 1 << 32:
            return b"\xce" + struct.pack(">I", obj)
        raise ValueError("int out of supported range")
    if isinstance(obj, bytes):
        n = len(obj)
        if n < 256:
            return b"\xc4" + bytes([n]) + obj
        return b"\xc5" + struct.pack(">H", n) + obj
    if isinstance(obj, str):
        b = obj.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        return b"\xd9" + bytes([len(b)]) + b
    if isinstance(obj, (list, tuple)):
        n = len(obj)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(mp_pack(x) for x in obj)
    if isinstance(obj, dict):
        n = len(obj)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(mp_pack(k) + mp_pack(v) for k, v in obj.items())
    raise TypeError(f"cannot msgpack {type(obj).__name__}")


def mp_unpack(data: bytes) -> Any:
    val, pos = _mp(data, 0)
    if pos != len(data):
        raise ValueError("trailing data after msgpack value")
    return val


def _mp(d: bytes, i: int) -> tuple[Any, int]:
    b = d[i]
    i += 1
    if b < 0x80:
        return b, i
    if b >= 0xE0:
        return b - 0x100, i
    if 0x80 <= b <= 0x8F:
        return _mp_map(d, i, b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return _mp_arr(d, i, b & 0x0F)
    if 0xA0 <= b <= 0xBF:
        n = b & 0x1F
        return d[i : i + n].decode(), i + n
    if b == 0xC0:
        return None, i
    if b == 0xC2:
        return False, i
    if b == 0xC3:
        return True, i
    if b in (0xC4, 0xD9):
        n = d[i]
        s = d[i + 1 : i + 1 + n]
        return (s if b == 0xC4 else s.decode()), i + 1 + n
    if b in (0xC5, 0xDA):
        n = struct.unpack_from(">H", d, i)[0]
        s = d[i + 2 : i + 2 + n]
        return (s if b == 0xC5 else s.decode()), i + 2 + n
    if b == 0xCC:
        return d[i], i + 1
    if b == 0xCD:
        return struct.unpack_from(">H", d, i)[0], i + 2
    if b == 0xCE:
        return struct.unpack_from(">I", d, i)[0], i + 4
    if b == 0xCF:
        return struct.unpack_from(">Q", d, i)[0], i + 8
    if b == 0xDC:
        return _mp_arr(d, i + 2, struct.unpack_from(">H", d, i)[0])
    if b == 0xDE:
        return _mp_map(d, i + 2, struct.unpack_from(">H", d, i)[0])
    raise ValueError(f"unsupported msgpack type byte 0x{b:02x}")


def _mp_arr(d: bytes, i: int, n: int) -> tuple[list[Any], int]:
    out = []
    for _ in range(n):
        v, i = _mp(d, i)
        out.append(v)
    return out, i


def _mp_map(d: bytes, i: int, n: int) -> tuple[dict[Any, Any], int]:
    out = {}
    for _ in range(n):
        k, i = _mp(d, i)
        v, i = _mp(d, i)
        out[k] = v
    return out, i


# --------------------------------------------------------------------------- protocols
# A protocol object knows how to build a query with a given request id, how to
# find the request id in a response quickly, how to validate a decoded response,
# and how to answer queries the server sends to us (pings of routing-table
# candidates).  Request ids are drawn from a counter.

_LETTERS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PAIRS = [bytes([a, b]) for a in _LETTERS for b in _LETTERS]  # 2704 two-letter tids
_NPAIRS = len(_PAIRS)


class Krpc:
    """Mainline DHT KRPC (bencoded dicts over UDP). Used for hailing and libtorrent."""

    name = "krpc"
    # 4-letter tids: letters only, so b"1:t4:" can never occur inside or straddle
    # a tid, and the last occurrence of b"1:t4:" in a response (dict keys are
    # sorted: ..., r, t, v, y) is the real one.
    TID_MARK = b"1:t4:"

    def __init__(self, node_id: bytes) -> None:
        self.node_id = node_id
        self.contacts: list[tuple[bytes, int]] = []  # nodes to hand out when asked

    @staticmethod
    def rid(counter: int) -> bytes:
        return _PAIRS[(counter // _NPAIRS) % _NPAIRS] + _PAIRS[counter % _NPAIRS]

    def template(self, kind: str, target: bytes) -> tuple[bytes, bytes]:
        """(prefix, suffix) so that prefix + tid + suffix is the query."""
        mark = b"\x00\x01\x02\x03"
        a: dict[str, Any] = {"id": self.node_id}
        if kind == "ping":
            q = "ping"
        elif kind == "find_node":
            q, a["target"] = "find_node", target
        elif kind == "get":
            q, a["target"] = "get", target
        else:
            raise ValueError(kind)
        full = bencode({"t": mark, "y": "q", "q": q, "a": a})
        i = full.index(self.TID_MARK + mark) + len(self.TID_MARK)
        return full[:i], full[i + 4 :]

    def query(self, q: str, a: dict[str, Any], tid: bytes) -> bytes:
        return bencode({"t": tid, "y": "q", "q": q, "a": {"id": self.node_id, **a}})

    @staticmethod
    def extract(data: bytes) -> tuple[bytes | None, int]:
        """(request id, status) with status 1=response, 2=error, 0=query/other."""
        i = data.rfind(b"1:t4:")
        if i < 0:
            return None, 0
        if data.endswith(b"1:y1:re"):
            return data[i + 5 : i + 9], 1
        if data.endswith(b"1:y1:ee"):
            return data[i + 5 : i + 9], 2
        return data[i + 5 : i + 9], 0

    @staticmethod
    def validate(kind: str, data: bytes, values: dict[bytes, bytes], target: bytes) -> int:
        """Return number of nodes returned (>=0) if the response is well formed; raise otherwise."""
        msg = bdecode(data)
        r = msg[b"r"]
        if len(r[b"id"]) != 20:
            raise ValueError("bad id")
        if kind == "ping":
            return 0
        nodes = r.get(b"nodes", b"")
        if len(nodes) % 26:
            raise ValueError("nodes not a multiple of 26")
        if kind == "get":
            if not r.get(b"token"):
                raise ValueError("get response without token")
            if bencode_value_of(r.get(b"v")) != values.get(target):
                raise ValueError("get response without the stored value")
        return len(nodes) // 26

    def answer(self, data: bytes) -> bytes | None:
        """Reply to a query the server sent us (it pings nodes it heard from)."""
        try:
            msg = bdecode(data)
            if msg.get(b"y") != b"q":
                return None
            r: dict[str, Any] = {"id": self.node_id}
            q = msg.get(b"q")
            if q in (b"find_node", b"get", b"get_peers"):
                r["nodes"] = b"".join(
                    compact_node(i, p)
                    for i, p in random.sample(self.contacts, min(8, len(self.contacts)))
                )
            if q in (b"get", b"get_peers"):
                r["token"] = b"tok"
            return bencode({"t": msg[b"t"], "y": "r", "r": r})
        except Exception:
            return None


def bencode_value_of(v: Any) -> bytes | None:
    return None if v is None else bencode(v)


class RpcUdp:
    """rpcudp framing as used by bmuller's kademlia:
    request  = b"\\x00" + 20-byte msgid + msgpack([funcname, [args...]])
    response = b"\\x01" + msgid + msgpack(result)
    """

    name = "rpcudp"

    def __init__(self, node_id: bytes) -> None:
        self.node_id = node_id
        self.prefix = os.urandom(16)
        self.contacts: list[tuple[bytes, int]] = []

    def rid(self, counter: int) -> bytes:
        return self.prefix + struct.pack(">I", counter & 0xFFFFFFFF)

    def template(self, kind: str, target: bytes) -> tuple[bytes, bytes]:
        if kind == "ping":
            body = mp_pack(["ping", [self.node_id]])
        elif kind == "find_node":
            body = mp_pack(["find_node", [self.node_id, target]])
        elif kind == "get":
            body = mp_pack(["find_value", [self.node_id, target]])
        else:
            raise ValueError(kind)
        return b"\x00", body

    def query(self, func: str, args: list[Any], msgid: bytes) -> bytes:
        return b"\x00" + msgid + mp_pack([func, [self.node_id, *args]])

    @staticmethod
    def extract(data: bytes) -> tuple[bytes | None, int]:
        if data[:1] == b"\x01" and len(data) > 21:
            return data[1:21], 1
        return None, 0

    @staticmethod
    def validate(kind: str, data: bytes, values: dict[bytes, bytes], target: bytes) -> int:
        res = mp_unpack(data[21:])
        if kind == "ping":
            if not isinstance(res, bytes) or len(res) != 20:
                raise ValueError("bad ping result")
            return 0
        if kind == "get":
            if not isinstance(res, dict) or res.get("value") != values.get(target):
                raise ValueError("find_value did not return the stored value")
            return 0
        if not isinstance(res, list):
            raise ValueError("find_node result is not a list")
        return len(res)

    def answer(self, data: bytes) -> bytes | None:
        if data[:1] != b"\x00" or len(data) < 22:
            return None
        try:
            func, _args = mp_unpack(data[21:])
        except Exception:
            return None
        if func == "ping":
            res: Any = self.node_id
        elif func == "store":
            res = True
        elif func in ("find_node", "find_value"):
            res = [
                [i, LOOPBACK, p]
                for i, p in random.sample(self.contacts, min(20, len(self.contacts)))
            ]
        else:
            return None
        return b"\x01" + data[1:21] + mp_pack(res)


PROTOCOLS: dict[str, type[Krpc] | type[RpcUdp]] = {"krpc": Krpc, "rpcudp": RpcUdp}
SERVER_PROTO = {"hailing": "krpc", "libtorrent": "krpc", "kademlia": "rpcudp"}


# --------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    if not _QUIET:
        print(f"[qt {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


_QUIET = False
_INITIAL_AFFINITY = os.sched_getaffinity(0)


def parse_mix(spec: str) -> dict[str, int]:
    mix: dict[str, int] = {}
    for part in spec.split(","):
        k, _, v = part.partition("=")
        k = k.strip()
        if k not in KINDS:
            raise SystemExit(f"unknown query kind in --mix: {k!r} (known: {', '.join(KINDS)})")
        mix[k] = int(v)
    if sum(mix.values()) <= 0:
        raise SystemExit("--mix weights must sum to > 0")
    return mix


def mix_sequence(mix: dict[str, int], seed: int) -> list[str]:
    """Exact proportions, shuffled deterministically; cycled by the generator."""
    total = sum(mix.values())
    scale = max(1, 1000 // total)
    seq = [k for k, w in mix.items() for _ in range(w * scale)]
    random.Random(seed).shuffle(seq)
    return seq


def proc_cpu_seconds(pid: int) -> float:
    """utime+stime of a whole process (all threads) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_times(cores: tuple[int, ...]) -> dict[int, tuple[float, float]]:
    """Per core (busy, steal) seconds from /proc/stat; busy = user+nice+system."""
    out: dict[int, tuple[float, float]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            parts = line.split()
            n = int(parts[0][3:])
            if n in cores:
                v = [int(x) for x in parts[1:9]]
                out[n] = ((v[0] + v[1] + v[2]) / CLK_TCK, v[7] / CLK_TCK)
    return out


def wait_for_quiet(cores: tuple[int, ...], limit: float, max_wait: float) -> float:
    """Wait (up to max_wait s) until other processes use < limit of each core.
    Returns the foreign load seen last. Our own processes are idle/stopped here."""
    deadline = time.monotonic() + max_wait
    while True:
        a = core_times(cores)
        time.sleep(0.5)
        b = core_times(cores)
        load = max((b[c][0] - a[c][0]) / 0.5 for c in cores)
        if load < limit or time.monotonic() >= deadline:
            return load
        time.sleep(0.5)


def _child_setup(core: int) -> Callable[[], None]:
    def setup() -> None:
        os.sched_setaffinity(0, {core})
        # Die with the parent (even on SIGKILL) so no server outlives the benchmark.
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return setup


# --------------------------------------------------------------------------- generator
# Runs in its own process pinned to the generator core.  Closed loop: `window`
# queries are always outstanding; each answer (or timeout) immediately issues
# the next query.  Only answers received inside the measurement window count.


def generator_main(cfg: dict[str, Any]) -> dict[str, Any]:
    proto_cls = PROTOCOLS[cfg["proto"]]
    node_id = os.urandom(20)
    proto = proto_cls(node_id)
    server = (cfg["host"], cfg["port"])
    window = int(cfg["window"])
    timeout = float(cfg["timeout"])
    warmup = float(cfg["warmup"])
    duration = float(cfg["duration"])
    server_pid = int(cfg["server_pid"])
    server_core = int(cfg["server_core"])
    gen_core = int(cfg["generator_core"])
    both_cores = (server_core, gen_core)
    values = {bytes.fromhex(k): bytes.fromhex(v) for k, v in cfg["values"].items()}
    value_keys = sorted(values)
    validate_every = int(cfg.get("validate_every", 64))
    rng = random.Random(cfg["seed"])

    seq = mix_sequence(cfg["mix"], cfg["seed"])
    kind_idx = {k: i for i, k in enumerate(KINDS)}
    # Pre-built query templates: (prefix, suffix, kind index, target).
    templates: list[tuple[bytes, bytes, int, bytes]] = []
    for n, kind in enumerate(seq):
        if kind == "get":
            target = value_keys[n % len(value_keys)]
        elif kind == "find_node":
            target = rng.randbytes(20)
        else:
            target = b""
        pre, suf = proto.template(kind, target)
        templates.append((pre, suf, kind_idx[kind], target))
    ntpl = len(templates)
    rid_of = proto.rid
    extract = proto.extract

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((LOOPBACK, 0))
    sock.connect(server)
    # Blocking socket with a kernel receive timeout (SO_RCVTIMEO): one syscall per
    # datagram, sleeping in the kernel when nothing is queued, and still waking up
    # every 2 ms to re-issue timed-out queries.  (Python's own settimeout() would
    # add a poll() per recv.)
    sock.setblocking(True)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 2000))
    recv = sock.recv
    send = sock.send
    mono = time.monotonic
    idle_wakeups = 0

    outstanding: dict[bytes, tuple[int, float, int]] = {}  # rid -> (kind, t_sent, template no)
    ages: deque[tuple[float, bytes]] = deque()
    counter = rng.randrange(1 << 20)
    answered = [0, 0, 0]
    errors = [0, 0, 0]
    lost = [0, 0, 0]
    send_fail = 0
    unmatched = 0
    server_queries = 0
    validated = 0
    invalid = 0
    invalid_examples: list[str] = []
    nodes_sum = [0, 0, 0]  # nodes returned, per kind, over validated responses
    nodes_cnt = [0, 0, 0]
    resp_bytes = 0

    # Request ids come from a pre-computed ring (far longer than qps * timeout).
    ring = [rid_of(counter + i) for i in range(RID_RING)]
    counter = 0
    ages_append = ages.append

    def issue(now: float) -> None:
        nonlocal counter, send_fail
        c = counter
        counter = c + 1
        ti = c % ntpl
        pre, suf, k, _t = templates[ti]
        rid = ring[c % RID_RING]
        outstanding[rid] = (k, now, ti)
        ages_append((now, rid))
        try:
            send(pre + rid + suf)
        except OSError:
            send_fail += 1  # counted as lost when it times out

    start = mono()
    t0 = start + warmup
    t1 = t0 + duration
    measuring = False
    boundary = t0
    snap: dict[str, Any] = {}
    for _ in range(window):
        issue(start)
    since_check = 0
    now = start
    while True:
        try:
            data = recv(4096)  # DHT datagrams are < 1500 bytes
        except (BlockingIOError, InterruptedError):
            data = None  # SO_RCVTIMEO expired: nothing came back for 2 ms
            idle_wakeups += 1
        except ConnectionRefusedError:
            data = None  # ICMP unreachable from a previous run; the query will time out
        now = mono()
        if data is not None:
            rid, status = extract(data)
            ent = outstanding.pop(rid, None) if status else None
            if ent is None:
                reply = proto.answer(data)
                if reply is not None:
                    server_queries += 1
                    with contextlib.suppress(OSError):
                        send(reply)
                else:
                    unmatched += 1  # late answer to a query we already re-issued
            else:
                k = ent[0]
                if status == 1:
                    answered[k] += 1
                    resp_bytes += len(data)
                    if answered[k] % validate_every == 0:
                        validated += 1
                        try:
                            n = proto.validate(KINDS[k], data, values, templates[ent[2]][3])
                            nodes_sum[k] += n
                            nodes_cnt[k] += 1
                        except Exception as e:
                            invalid += 1
                            if len(invalid_examples) < 3:
                                invalid_examples.append(f"{KINDS[k]}: {e!r}: {data[:200]!r}")
                else:
                    errors[k] += 1
                    if len(invalid_examples) < 3:
                        invalid_examples.append(f"{KINDS[k]} error reply: {data[:200]!r}")
                # issue(now), inlined: this is the generator's hot path
                c = counter
                counter = c + 1
                ti = c % ntpl
                tpl = templates[ti]
                rid = ring[c % RID_RING]
                outstanding[rid] = (tpl[2], now, ti)
                ages_append((now, rid))
                try:
                    send(tpl[0] + rid + tpl[1])
                except OSError:
                    send_fail += 1
            since_check += 1
            if since_check < 256 and now < boundary:
                continue
        since_check = 0
        # Re-issue timed-out queries so the window never depletes.
        limit = now - timeout
        while ages and ages[0][0] <= limit:
            _t, rid = ages.popleft()
            ent = outstanding.get(rid)
            if ent is not None and ent[1] == _t:
                del outstanding[rid]
                lost[ent[0]] += 1
                issue(now)
        if not measuring and now >= t0:
            measuring = True
            boundary = t1
            snap = {
                "t": now,
                "answered": answered[:],
                "errors": errors[:],
                "lost": lost[:],
                "cpu_self": time.process_time(),
                "cpu_server": proc_cpu_seconds(server_pid),
                "cores": core_times(both_cores),
                "validated": validated,
                "invalid": invalid,
                "resp_bytes": resp_bytes,
                "send_fail": send_fail,
            }
        elif measuring and now >= t1:
            break

    end = {
        "t": now,
        "cpu_self": time.process_time(),
        "cpu_server": proc_cpu_seconds(server_pid),
        "cores": core_times(both_cores),
    }
    sock.close()
    wall = end["t"] - snap["t"]
    ans = [a - b for a, b in zip(answered, snap["answered"], strict=True)]
    errs = [a - b for a, b in zip(errors, snap["errors"], strict=True)]
    lst = [a - b for a, b in zip(lost, snap["lost"], strict=True)]
    total = sum(ans)
    gen_cpu = (end["cpu_self"] - snap["cpu_self"]) / wall
    srv_cpu = (end["cpu_server"] - snap["cpu_server"]) / wall
    c0, c1 = snap["cores"], end["cores"]
    core_busy = {c: (c1[c][0] - c0[c][0]) / wall for c in both_cores}
    steal = {c: (c1[c][1] - c0[c][1]) / wall for c in both_cores}
    return {
        "qps": total / wall,
        "answered": total,
        "answered_by_kind": dict(zip(KINDS, ans, strict=True)),
        "errors_by_kind": dict(zip(KINDS, errs, strict=True)),
        "lost_by_kind": dict(zip(KINDS, lst, strict=True)),
        "lost_total": sum(lst),
        "loss_ratio": sum(lst) / max(1, total + sum(lst) + sum(errs)),
        "send_failures": send_fail - snap["send_fail"],
        "late_or_unmatched": unmatched,
        "generator_idle_wakeups": idle_wakeups,
        "server_initiated_queries_answered": server_queries,
        "measured_seconds": wall,
        "server_cpu_util": srv_cpu,
        "generator_cpu_util": gen_cpu,
        "server_saturated": srv_cpu >= 0.9,
        "generator_bound": gen_cpu > 0.85 and srv_cpu < 0.9,
        # CPU used on each core by anything else (other processes on the machine;
        # on the generator core also the driver/fake peers, which are near idle).
        "server_core_foreign_util": max(0.0, core_busy[server_core] - srv_cpu),
        "generator_core_foreign_util": max(0.0, core_busy[gen_core] - gen_cpu),
        "steal_util": steal,
        "qps_per_server_cpu_second": total / (srv_cpu * wall) if srv_cpu > 0 else None,
        "avg_response_bytes": (resp_bytes - snap["resp_bytes"]) / max(1, total),
        "mean_latency_ms_littles_law": 1000.0 * window / (total / wall) if total else None,
        "validated_responses": validated,
        "invalid_responses": invalid,
        "invalid_examples": invalid_examples,
        "avg_nodes_returned": {
            KINDS[k]: round(nodes_sum[k] / nodes_cnt[k], 2) for k in (1, 2) if nodes_cnt[k]
        },
    }


# --------------------------------------------------------------------------- servers


def _serve_kademlia() -> None:
    import asyncio

    from kademlia.network import Server  # type: ignore[import-not-found]

    async def main() -> None:
        server = Server()
        await server.listen(0, interface=LOOPBACK)
        assert server.transport is not None
        port = server.transport.get_extra_info("sockname")[1]
        print(f"node {server.node.id.hex()} listening on {LOOPBACK}:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


LIBTORRENT_SETTINGS: dict[str, Any] = {
    "listen_interfaces": f"{LOOPBACK}:0",
    "outgoing_interfaces": LOOPBACK,
    "enable_dht": True,
    "dht_bootstrap_nodes": "",
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_ip_notifier": False,
    "enable_outgoing_tcp": False,
    "enable_outgoing_utp": False,
    "alert_mask": 0,
    # Lift the DHT rate limits (defaults: 8000 B/s upload, 5 queries/s per IP
    # before a 300 s block), or the per-IP limiter would throttle the benchmark.
    "dht_upload_rate_limit": 715_827_882,  # the maximum libtorrent accepts (INT_MAX / 3)
    "dht_block_ratelimit": 100_000_000,
    "dht_block_timeout": 1,
    # Every peer in this benchmark is 127.0.0.1 with a non-BEP42 id.
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "dht_enforce_node_id": False,
    "dht_prefer_verified_node_ids": False,
    "dht_max_fail_count": 100,
}


def _serve_libtorrent() -> None:
    import libtorrent as lt  # type: ignore[import-not-found]

    ses = lt.session(LIBTORRENT_SETTINGS)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (ses.listen_port() and ses.is_dht_running()):
        time.sleep(0.05)
    if not ses.is_dht_running():
        raise SystemExit("libtorrent DHT did not start")
    applied = ses.get_settings()
    bad = {k: applied.get(k) for k, v in LIBTORRENT_SETTINGS.items() if applied.get(k) != v}
    if bad:
        print(f"warning: libtorrent settings not applied as requested: {bad}", file=sys.stderr)
    print(f"node ? listening on {LOOPBACK}:{ses.listen_port()}", flush=True)
    while True:
        time.sleep(3600)


class ServerProc:
    """A server subprocess pinned to the server core, plus its stdout drain."""

    def __init__(self, name: str, cmd: list[str], core: int, env: dict[str, str] | None) -> None:
        self.name = name
        self.cmd = cmd
        self.tail: deque[str] = deque(maxlen=40)
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_child_setup(core),
            env=env,
        )
        self.port = self._read_port(timeout=30.0)
        threading.Thread(target=self._drain, daemon=True).start()
        self.stopped = False

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
                lines = buf.decode(errors="replace").splitlines()
                for n, line in enumerate(lines):
                    if " listening on " in line:
                        if n == len(lines) - 1 and not buf.endswith(b"\n"):
                            continue  # the line may be incomplete
                        self.tail.extend(lines)
                        return int(line.rsplit(":", 1)[1].split()[0])
            if self.proc.poll() is not None:
                break
        out = buf.decode(errors="replace")
        raise RuntimeError(
            f"{self.name}: no 'listening on HOST:PORT' line (cmd {' '.join(self.cmd)}); "
            f"exit code {self.proc.poll()}; output:\n{out[-1500:]}"
        )

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.tail.append(raw.decode(errors="replace").rstrip())

    def pause(self) -> None:
        if not self.stopped and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.stopped = True

    def resume(self) -> None:
        if self.stopped and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_server(name: str, args: argparse.Namespace) -> ServerProc:
    py = args.python or sys.executable
    env = dict(os.environ)
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    if name == "hailing":
        # Measure this checkout's code: put <repo>/src first on the path.
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
        if os.path.isdir(os.path.join(src, "hailing")):
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        cmd = [py, "-m", "hailing", "dht", "serve", "--bind", f"{LOOPBACK}:0"]
        if args.hailing_args:
            cmd += args.hailing_args.split()
    elif name == "kademlia":
        cmd = [py, os.path.abspath(__file__), "_serve", "kademlia"]
    elif name == "libtorrent":
        cmd = [py, os.path.abspath(__file__), "_serve", "libtorrent"]
    else:
        raise SystemExit(f"unknown server {name!r}")
    return ServerProc(name, cmd, args.server_core, env)


# --------------------------------------------------------------------------- setup
# Identical for every server: N fake peers (each its own UDP socket and random
# id) ping the server so it has a real routing table, and keep answering the
# server's own queries (libtorrent only returns nodes it has verified by ping).
# Then the stored values are put, and everything is validated once.


def compact_node(node_id: bytes, port: int) -> bytes:
    return node_id + socket.inet_aton(LOOPBACK) + struct.pack(">H", port)


class Client:
    """Blocking request/response on one UDP socket, for setup and validation.
    Queries the server sends to this socket meanwhile are answered."""

    def __init__(self, proto: Krpc | RpcUdp, sock: socket.socket, server: tuple[str, int]) -> None:
        self.proto = proto
        self.sock = sock
        self.server = server
        self.n = random.randrange(1 << 20)

    def call(self, q: str, a: Any, timeout: float = 2.0, tries: int = 3) -> Any:
        for _ in range(tries):
            self.n += 1
            rid = self.proto.rid(self.n)
            self.sock.sendto(self.proto.query(q, a, rid), self.server)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    break
                try:
                    data, addr = self.sock.recvfrom(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                got, status = self.proto.extract(data)
                if status and got == rid:
                    if isinstance(self.proto, Krpc):
                        return bdecode(data)
                    return mp_unpack(data[21:])
                reply = self.proto.answer(data)
                if reply is not None:
                    self.sock.sendto(reply, addr)
        raise TimeoutError(f"no answer to {q} from {self.server}")


class FakePeers:
    """N fake DHT peers on 127.0.0.1, each with its own UDP socket and random id.

    Setup (identical for every server): each peer pings the server and stores one
    value through the normal protocol (BEP44 get-token + put, or kademlia store).
    Afterwards a thread keeps answering the server's queries to them (pings,
    lookups: answered with other fake peers as nodes), so they stay "good" nodes.
    The token-checked put matters for libtorrent: it only returns nodes it has
    verified (answered a ping, or presented a valid token) in find_node replies.
    """

    def __init__(self, proto_name: str, n: int) -> None:
        cls = PROTOCOLS[proto_name]
        self.proto_name = proto_name
        self.peers: list[tuple[socket.socket, Krpc | RpcUdp]] = []
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((LOOPBACK, 0))
            s.setblocking(False)
            self.peers.append((s, cls(os.urandom(20))))
        self.contacts = [(p.node_id, s.getsockname()[1]) for s, p in self.peers]
        for _s, p in self.peers:
            p.contacts = self.contacts
        self.by_fd = {s.fileno(): (s, p) for s, p in self.peers}
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def register(self, server: tuple[str, int], values: list[tuple[bytes, bytes]]) -> None:
        for (s, p), (target, v) in zip(self.peers, values, strict=True):
            c = Client(p, s, server)
            if isinstance(p, Krpc):
                c.call("ping", {})
                token = c.call("get", {"target": target})[b"r"][b"token"]
                r = c.call("put", {"token": token, "v": bdecode(v)})
                if r.get(b"y") != b"r":
                    raise RuntimeError(f"put failed: {r!r}")
            else:
                c.call("ping", [])
                if c.call("store", [target, v]) is not True:
                    raise RuntimeError("store failed")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        for s, _ in self.peers:
            poller.register(s, select.POLLIN)
        while not self._stop.is_set():
            for fd, _ev in poller.poll(100):
                s, p = self.by_fd[fd]
                try:
                    data, addr = s.recvfrom(65536)
                except OSError:
                    continue
                reply = p.answer(data)
                if reply is not None:
                    with contextlib.suppress(OSError):
                        s.sendto(reply, addr)
                    self.answered += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for s, _ in self.peers:
            s.close()


def make_values(n: int, size: int, seed: int) -> dict[bytes, bytes]:
    """target -> bencoded value. BEP44 immutable: target = sha1(bencode(v))."""
    rng = random.Random(seed)
    out = {}
    for _ in range(n):
        v = bencode(rng.randbytes(size))
        out[hashlib.sha1(v).digest()] = v
    return out


def setup_server(
    srv: ServerProc, values: dict[bytes, bytes], args: argparse.Namespace
) -> tuple[dict[str, Any], FakePeers]:
    proto = SERVER_PROTO[srv.name]
    addr = (LOOPBACK, srv.port)
    info: dict[str, Any] = {"port": srv.port, "pid": srv.proc.pid, "cmd": srv.cmd}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    cli = Client(PROTOCOLS[proto](os.urandom(20)), sock, addr)
    fakes = FakePeers(proto, args.fake_peers)
    try:
        t_start = time.monotonic()
        cli.call("ping", {} if proto == "krpc" else [], timeout=5.0, tries=4)
        fakes.register(addr, list(values.items()))
        fakes.start()
        # Wait until find_node returns a full answer.
        want = min(8, args.fake_peers)
        deadline = time.monotonic() + args.populate_timeout
        while True:
            tgt = os.urandom(20)
            if proto == "krpc":
                r = cli.call("find_node", {"target": tgt})
                nodes = len(r[b"r"].get(b"nodes", b"")) // 26
            else:
                nodes = len(cli.call("find_node", [tgt]))
            if nodes >= want or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        info["find_node_nodes_at_start"] = nodes
        info["setup_seconds"] = round(time.monotonic() - t_start, 2)
        if nodes < want:
            log(f"{srv.name}: WARNING find_node returns only {nodes} nodes after setup")
        # Validate every stored value is served.
        for target, v in values.items():
            if proto == "krpc":
                r = cli.call("get", {"target": target})[b"r"]
                ok = b"v" in r and bencode(r[b"v"]) == v
            else:
                r = cli.call("find_value", [target])
                ok = isinstance(r, dict) and r.get("value") == v
            if not ok:
                raise RuntimeError(f"{srv.name}: stored value not returned by get: {r!r}")
        info["fake_peers"] = args.fake_peers
        info["stored_values"] = len(values)
        return info, fakes
    except BaseException:
        fakes.close()
        raise
    finally:
        sock.close()


# --------------------------------------------------------------------------- driver


def run_generator(
    srv: ServerProc, window: int, values: dict[bytes, bytes], args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    cfg = {
        "proto": SERVER_PROTO[srv.name],
        "host": LOOPBACK,
        "port": srv.port,
        "window": window,
        "timeout": args.timeout,
        "warmup": args.warmup,
        "duration": args.duration,
        "server_pid": srv.proc.pid,
        "server_core": args.server_core,
        "generator_core": args.generator_core,
        "values": {k.hex(): v.hex() for k, v in values.items()},
        "mix": args.mix_dict,
        "seed": seed,
    }
    cmd = [args.python or sys.executable, os.path.abspath(__file__), "_generate"]
    p = subprocess.run(
        cmd,
        input=json.dumps(cfg).encode(),
        capture_output=True,
        preexec_fn=_child_setup(args.generator_core),
        timeout=args.warmup + args.duration + 60,
        check=False,
    )
    if p.returncode != 0:
        raise RuntimeError(
            f"generator failed ({p.returncode}): {p.stderr.decode(errors='replace')}"
        )
    return json.loads(p.stdout)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity_available": sorted(_INITIAL_AFFINITY),
    }
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    # hailing is measured from this checkout's src/: fingerprint exactly that code.
    src = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "hailing"
    )
    if os.path.isdir(src):
        h = hashlib.sha1()
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for fn in sorted(files):
                if fn.endswith(".py"):
                    path = os.path.join(root, fn)
                    h.update(os.path.relpath(path, src).encode() + b"\0")
                    with open(path, "rb") as f:
                        h.update(f.read())
        info["hailing_source_sha1"] = h.hexdigest()
        with contextlib.suppress(Exception):
            info["git_head"] = (
                subprocess.run(
                    ["git", "-C", src, "rev-parse", "HEAD"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.strip()
                or None
            )
            info["git_src_dirty"] = bool(
                subprocess.run(
                    ["git", "-C", src, "status", "--porcelain", "--", "."],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.strip()
            )
    for mod in ("kademlia", "rpcudp", "libtorrent", "hailing"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            info[f"{mod}_version"] = version(mod)
    return info


def summarize(results: dict[str, Any], servers: list[str], windows: list[int]) -> dict[str, Any]:
    best: dict[str, float] = {}
    for name in servers:
        r = results[name]
        if "windows" not in r:
            continue
        for w in windows:
            ws = r["windows"].get(str(w))
            if not ws or not ws["samples_qps"]:
                continue
            ws["median_qps"] = statistics.median(ws["samples_qps"])
            ws["min_qps"] = min(ws["samples_qps"])
            ws["max_qps"] = max(ws["samples_qps"])
            ws["median_server_cpu_util"] = statistics.median(
                s["server_cpu_util"] for s in ws["samples"]
            )
            ws["median_generator_cpu_util"] = statistics.median(
                s["generator_cpu_util"] for s in ws["samples"]
            )
            ws["median_loss_ratio"] = statistics.median(s["loss_ratio"] for s in ws["samples"])
            ws["any_generator_bound"] = any(s["generator_bound"] for s in ws["samples"])
            if ws["median_qps"] > best.get(name, -1):
                best[name] = ws["median_qps"]
                r["median_qps"] = ws["median_qps"]
                r["best_window"] = w
    ratios: dict[str, Any] = {}
    per_window: dict[str, dict[str, float]] = {}
    for other in ("kademlia", "libtorrent"):
        if "hailing" in best and other in best and best[other] > 0:
            ratios[f"hailing/{other}"] = best["hailing"] / best[other]
        for w in windows:
            try:
                h = results["hailing"]["windows"][str(w)]["median_qps"]
                o = results[other]["windows"][str(w)]["median_qps"]
            except KeyError:
                continue
            per_window.setdefault(str(w), {})[f"hailing/{other}"] = h / o if o else float("nan")
    return {"best_median_qps": best, "ratios": ratios, "ratios_per_window": per_window}


def main(argv: list[str] | None = None) -> int:
    global _QUIET
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help="comma list of: hailing, kademlia, libtorrent (default: all)",
    )
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per sample (5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per sample (1)")
    ap.add_argument("--repeats", type=int, default=5, help="samples per server and window (5)")
    ap.add_argument(
        "--window",
        default="128",
        help="outstanding queries; a comma list sweeps several (default 128)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=0.5,
        help="seconds before an unanswered query is counted lost and re-issued (0.5)",
    )
    ap.add_argument("--mix", default=DEFAULT_MIX, help=f"query mix weights ({DEFAULT_MIX})")
    ap.add_argument(
        "--fake-peers",
        type=int,
        default=50,
        help="fake peers that ping the server and each store one value before measuring (50)",
    )
    ap.add_argument("--value-size", type=int, default=64, help="bytes per stored value (64)")
    ap.add_argument(
        "--populate-timeout",
        type=float,
        default=30.0,
        help="max seconds to wait for find_node to return >= 8 nodes (30)",
    )
    ap.add_argument(
        "--interference",
        type=float,
        default=0.05,
        help="a sample is retried when other processes used more than this fraction of "
        "the server core (or the generator core, if the server was not saturated) during it (0.05)",
    )
    ap.add_argument("--max-retries", type=int, default=3, help="retries per sample (3)")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="max seconds to wait for the cores to be quiet before each sample (20)",
    )
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--generator-core", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--python", default=None, help="interpreter for servers/generator (this one)")
    ap.add_argument("--hailing-args", default="", help="extra args for `hailing dht serve`")
    ap.add_argument("--out", default=None, help="also write the JSON result to this file")
    ap.add_argument(
        "--json", action="store_true", help="JSON only: no progress log or summary on stderr"
    )
    args = ap.parse_args(argv)
    _QUIET = args.json
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in servers:
        if s not in ALL_SERVERS:
            ap.error(f"unknown server {s!r}")
    windows = [int(w) for w in str(args.window).split(",")]
    args.mix_dict = parse_mix(args.mix)
    cores = os.sched_getaffinity(0)
    if (
        args.server_core == args.generator_core
        or not {args.server_core, args.generator_core} <= cores
    ):
        ap.error(f"need two distinct available cores, have {sorted(cores)}")
    # The driver (and the fake peers' responder thread) share the generator's core,
    # never the server's.
    os.sched_setaffinity(0, {args.generator_core})

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    values = make_values(args.fake_peers, args.value_size, args.seed)
    results: dict[str, Any] = {name: {} for name in servers}
    procs: dict[str, ServerProc] = {}
    fakes: dict[str, FakePeers] = {}
    warnings: list[str] = []
    t_begin = time.time()
    try:
        for name in servers:
            log(f"starting {name}")
            try:
                srv = start_server(name, args)
                procs[name] = srv
                info, fakes[name] = setup_server(srv, values, args)
            except Exception as e:
                msg = f"{name}: setup failed: {e}"
                log(msg)
                warnings.append(msg)
                results[name] = {"error": str(e)}
                if name in procs:
                    procs.pop(name).close()
                continue
            results[name] = {"setup": info, "windows": {}}
            log(
                f"{name}: port {srv.port}, find_node returns {info['find_node_nodes_at_start']} nodes"
            )
            srv.pause()  # idle servers are SIGSTOPped so they cannot steal the server core
        active = [n for n in servers if n in procs]
        cores_used = (args.server_core, args.generator_core)
        for w in windows:
            for rep in range(args.repeats):
                # Rotate the order each round so no server always goes first/last.
                order = active[rep % max(1, len(active)) :] + active[: rep % max(1, len(active))]
                for name in order:
                    srv = procs[name]
                    if not srv.alive():
                        raise RuntimeError(f"{name} died:\n" + "\n".join(srv.tail))
                    rejected: list[dict[str, Any]] = []
                    while True:
                        pre_load = wait_for_quiet(cores_used, args.interference, args.quiet_wait)
                        srv.resume()
                        time.sleep(0.2)
                        try:
                            sample = run_generator(srv, w, values, args, seed=args.seed + rep)
                        finally:
                            srv.pause()
                        sample["foreign_load_before"] = round(pre_load, 3)
                        # The server core must be ours alone.  Foreign load on the
                        # generator core only matters if the server was not saturated
                        # (a delayed generator then starved the server of queries).
                        foreign = sample["server_core_foreign_util"]
                        if not sample["server_saturated"]:
                            # minus a little for the driver, which lives there
                            foreign = max(foreign, sample["generator_core_foreign_util"] - 0.02)
                        sample["contaminated"] = foreign > args.interference
                        if not sample["contaminated"] or len(rejected) >= args.max_retries:
                            break
                        log(
                            f"{name:10s} window {w:4d} rep {rep}: {sample['qps']:9.0f} q/s  "
                            f"REJECTED (other processes used {foreign:.2f} of a core), retrying"
                        )
                        rejected.append(sample)
                    sample["rejected_attempts"] = [
                        {
                            k: r[k]
                            for k in (
                                "qps",
                                "server_core_foreign_util",
                                "generator_core_foreign_util",
                            )
                        }
                        for r in rejected
                    ]
                    if sample["contaminated"]:
                        warnings.append(
                            f"{name} window {w} rep {rep}: other processes kept using the cores "
                            f"(server core {sample['server_core_foreign_util']:.2f}, generator core "
                            f"{sample['generator_core_foreign_util']:.2f}); sample kept anyway"
                        )
                    sample["repeat"] = rep
                    ws = results[name]["windows"].setdefault(
                        str(w), {"window": w, "samples_qps": [], "samples": []}
                    )
                    ws["samples_qps"].append(round(sample["qps"], 1))
                    ws["samples"].append(sample)
                    log(
                        f"{name:10s} window {w:4d} rep {rep}: {sample['qps']:9.0f} q/s  "
                        f"lost {sample['lost_total']:5d}  server cpu {sample['server_cpu_util']:.2f}  "
                        f"gen cpu {sample['generator_cpu_util']:.2f}"
                        + f"  foreign {sample['server_core_foreign_util']:.2f}/"
                        f"{sample['generator_core_foreign_util']:.2f}"
                        + ("  GENERATOR-BOUND" if sample["generator_bound"] else "")
                        + ("  CONTAMINATED" if sample["contaminated"] else "")
                    )
                    if sample["invalid_responses"] or sum(sample["errors_by_kind"].values()):
                        warnings.append(
                            f"{name} window {w} rep {rep}: {sample['invalid_responses']} invalid, "
                            f"errors {sample['errors_by_kind']}: {sample['invalid_examples']}"
                        )
    finally:
        for name, srv in procs.items():
            srv.close()
            if name in results and "setup" in results[name]:
                results[name]["setup"]["server_output_tail"] = list(srv.tail)[-10:]
        for f in fakes.values():
            f.close()

    summary = summarize(results, servers, windows)
    for name in servers:
        for ws in results[name].get("windows", {}).values():
            if ws.get("any_generator_bound"):
                warnings.append(
                    f"{name} window {ws['window']}: the generator, not the server, was saturated in "
                    "at least one sample; that number is a lower bound for the server"
                )
    doc = {
        "benchmark": "query_throughput",
        "description": "KRPC/RPC queries answered per second by one server process pinned to one core",
        "started_unix": t_begin,
        "elapsed_seconds": round(time.time() - t_begin, 1),
        "config": {
            "servers": servers,
            "mix_percent": {
                k: 100 * v / sum(args.mix_dict.values()) for k, v in args.mix_dict.items()
            },
            "mix_mapping": {
                "krpc (hailing, libtorrent)": {
                    "ping": "ping",
                    "find_node": "find_node",
                    "get": "get (BEP44, immutable item)",
                },
                "rpcudp (kademlia)": {
                    "ping": "ping",
                    "find_node": "find_node",
                    "get": "find_value",
                },
            },
            "windows": windows,
            "warmup_seconds": args.warmup,
            "duration_seconds": args.duration,
            "repeats": args.repeats,
            "loss_timeout_seconds": args.timeout,
            "fake_peers": args.fake_peers,
            "stored_values": args.fake_peers,
            "value_size": args.value_size,
            "cpu_pinning": {
                "server_core": args.server_core,
                "generator_core": args.generator_core,
                "driver_core": args.generator_core,
            },
            "libtorrent_settings": LIBTORRENT_SETTINGS if "libtorrent" in servers else None,
            "bind": LOOPBACK,
        },
        "environment": machine_info(),
        "servers": results,
        **summary,
        "warnings": warnings,
    }
    text = json.dumps(doc, indent=2, sort_keys=False)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    if not _QUIET:
        print("\nsummary (median answered queries/s, best window):", file=sys.stderr)
        for name in servers:
            r = results[name]
            if "median_qps" in r:
                w = r["best_window"]
                ws = r["windows"][str(w)]
                print(
                    f"  {name:10s} {r['median_qps']:9.0f} q/s  window {w}  samples {ws['samples_qps']}  "
                    f"server cpu {ws['median_server_cpu_util']:.2f} gen cpu {ws['median_generator_cpu_util']:.2f}",
                    file=sys.stderr,
                )
            else:
                print(f"  {name:10s} n/a ({r.get('error', 'no samples')})", file=sys.stderr)
        for k, v in summary["ratios"].items():
            print(f"  {k} = {v:.3f}", file=sys.stderr)
        for wmsg in warnings:
            print(f"  warning: {wmsg}", file=sys.stderr)
    return 0 if all("median_qps" in results[n] for n in servers) else 1


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_generate":
        print(json.dumps(generator_main(json.loads(sys.stdin.read()))))
    elif len(sys.argv) >= 3 and sys.argv[1] == "_serve":
        {"kademlia": _serve_kademlia, "libtorrent": _serve_libtorrent}[sys.argv[2]]()
    else:
        sys.exit(main())
