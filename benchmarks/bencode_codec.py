#!/usr/bin/env python3
"""Bencode codecs side by side: hailing.bencode vs maintained PyPI libraries.

Question: "Strict bencode ... or a maintained library if it is exactly this strict
and at least as fast; measure."  For each codec, in one run, this script measures

1. strictness: a fixed table of invalid inputs (leading zeros, negative zero, empty
   integers, unsorted / duplicate / non-string dict keys, truncation, trailing data,
   deep nesting, huge integers, what Python's int() lets through: "+1", " 1", "1_0").
   Raising any exception counts as rejection, returning a value as acceptance.  A small
   table of valid inputs checks nothing correct is refused.
2. speed: decode and encode of three realistic KRPC messages (ping query ~60 B,
   find_node response with 8 compact nodes ~250 B, BEP44 get response with a
   1000-byte value ~1.2 KB), microseconds per operation, median of --repeats timeit
   samples.  Every codec decodes the same bytes and encodes the same object (dicts
   with bytes keys built in *unsorted* insertion order, as protocol code builds them);
   decoded values are checked equal to hailing's and encoded output to the canonical
   bytes, so a fast-but-wrong codec shows up as such.

Codecs (optional ones are skipped, with the reason in the JSON, when not importable):
  hailing               hailing.bencode: bencode2's compiled decoder, kept only within
                        hailing's limits, else the pure-Python decoder; pure-Python encoder
  hailing[pure]         hailing.bencode.decode_pure: the pure-Python decoder alone
  bencode2              bencode2.bdecode/bencode (trim21; C++ extension, MIT)
  fastbencode           fastbencode.bdecode/bencode (Breezy; Rust extension)
  fastbencode[py]       fastbencode._bencode_py, its pure-Python fallback
  fastbencode+limits    not a library: fastbencode (Rust) plus an iterative walk of the
                        decoded value / the value to encode that enforces hailing's two
                        extra limits (nesting <= 32, integers < 10**32, no bool on
                        encode) -- what adopting fastbencode would really cost
  bencode.py            bencodepy.Bencode() from the bencode.py distribution, bytes mode
                        (bencode.bdecode itself decodes strings to str; not equivalent)
  bencodepy             eweast's bencodepy 0.9.x.  Its top-level module name clashes with
                        the `bencodepy` package that bencode.py 4.x ships, so the two
                        cannot be installed together: install it with
                        `pip install --no-deps --target DIR bencodepy` and pass
                        --bencodepy-path DIR (loaded in isolation).
  better-bencode        better_bencode (C extension `_fast`)
  better-bencode[py]    better_bencode._pure, its pure-Python fallback

Output is a JSON document on stdout (and in --out FILE); a human-readable summary goes
to stderr (suppressed with --json).

    python benchmarks/bencode_codec.py --repeats 7 --out bencode.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import random
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MESSAGES = ("ping_query", "find_node_response", "bep44_get_response")
SAMPLE_SECONDS = 0.05  # target wall time of one timeit sample


# --------------------------------------------------------------------------- inputs

# (id, description, bytes).  Every one is invalid strict canonical bencode.
INVALID: list[tuple[str, str, bytes]] = [
    ("int_leading_zero", "i03e", b"i03e"),
    ("int_negative_zero", "i-0e", b"i-0e"),
    ("int_empty", "ie", b"ie"),
    ("int_minus_only", "i-e", b"i-e"),
    ("int_plus_sign", "i+1e (int() accepts '+1')", b"i+1e"),
    ("int_space", "i 1e (int() accepts ' 1')", b"i 1e"),
    ("int_underscore", "i1_0e (int() accepts '1_0')", b"i1_0e"),
    ("int_1000_digits", "i<1000 digits>e", b"i" + b"1" * 1000 + b"e"),
    ("str_leading_zero", "03:abc", b"03:abc"),
    ("str_truncated", "5:abc", b"5:abc"),
    ("dict_unsorted", "d1:b0:1:a0:e", b"d1:b0:1:a0:e"),
    ("dict_duplicate", "d1:a0:1:a0:e", b"d1:a0:1:a0:e"),
    ("dict_int_key", "di1e0:e", b"di1e0:e"),
    ("list_truncated", "l", b"l"),
    ("dict_truncated", "d1:a0:", b"d1:a0:"),
    ("empty_input", "(empty)", b""),
    ("trailing_data", "i1ei2e", b"i1ei2e"),
    ("nesting_40", "l*40 e*40", b"l" * 40 + b"e" * 40),
]

# (id, bytes).  Valid canonical bencode that a strict codec must still accept.
VALID: list[tuple[str, bytes]] = [
    ("int_zero", b"i0e"),
    ("int_negative", b"i-1e"),
    ("int64_max", b"i9223372036854775807e"),
    ("empty_string", b"0:"),
    ("empty_list", b"le"),
    ("empty_dict", b"de"),
    ("non_utf8_string", b"2:\xff\xfe"),
    ("raw_byte_key_order", b"d1:\x7fi1e1:\x80i2ee"),
    ("nesting_32", b"l" * 32 + b"e" * 32),
]


def krpc_messages() -> dict[str, Any]:
    """The benchmark messages, dicts in the (unsorted) order protocol code builds them."""
    rnd = random.Random(44)
    node_id = rnd.randbytes(20)
    nodes = b"".join(rnd.randbytes(20) + bytes([10, 0, 0, i + 1]) + b"\x1a\xe1" for i in range(8))
    return {
        "ping_query": {
            b"t": b"aa",
            b"y": b"q",
            b"q": b"ping",
            b"a": {b"id": node_id},
            b"v": b"HL01",
        },
        "find_node_response": {
            b"t": b"\x12\x34",
            b"y": b"r",
            b"r": {b"id": node_id, b"nodes": nodes},
            b"v": b"HL01",
        },
        "bep44_get_response": {
            b"t": b"\x56\x78",
            b"y": b"r",
            b"r": {
                b"id": node_id,
                b"token": rnd.randbytes(20),
                b"v": rnd.randbytes(1000),
                b"seq": 1715000000,
                b"sig": rnd.randbytes(64),
                b"k": rnd.randbytes(32),
            },
            b"v": b"HL01",
        },
    }


def canonical(obj: Any) -> bytes:
    """Reference canonical encoding, independent of every codec under test."""
    if type(obj) is int:
        return b"i%de" % obj
    if type(obj) is bytes:
        return b"%d:%b" % (len(obj), obj)
    if type(obj) is list:
        return b"l" + b"".join(canonical(v) for v in obj) + b"e"
    if isinstance(obj, dict):
        return b"d" + b"".join(canonical(k) + canonical(obj[k]) for k in sorted(obj)) + b"e"
    raise TypeError(type(obj).__name__)


def normalize(obj: Any) -> Any:
    """Decoded value as plain dict/list/bytes/int, for comparing codecs' outputs."""
    if isinstance(obj, dict):  # OrderedDict too
        return {normalize(k): normalize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [normalize(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- codecs


@dataclass
class Codec:
    name: str
    distribution: str | None
    decode: Callable[[bytes], Any] | None = None
    encode: Callable[[Any], bytes] | None = None
    implementation: str = ""
    version: str | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


def _dist_version(dist: str, path: str | None = None) -> str | None:
    try:
        if path is None:
            return importlib.metadata.version(dist)
        for d in importlib.metadata.distributions(path=[path]):
            if (d.metadata["Name"] or "").lower() == dist.lower():
                return d.version
    except importlib.metadata.PackageNotFoundError:
        pass
    return None


def _owner_of(module: str) -> list[str]:
    return importlib.metadata.packages_distributions().get(module, [])


def _import_isolated(name: str, path: str) -> Any:
    """Import top-level package ``name`` from ``path`` without disturbing sys.modules."""
    mine = [k for k in sys.modules if k == name or k.startswith(name + ".")]
    saved = {k: sys.modules.pop(k) for k in mine}
    sys.path.insert(0, path)
    importlib.invalidate_caches()
    try:
        mod = importlib.import_module(name)
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[k]
    finally:
        sys.path.remove(path)
        sys.modules.update(saved)
    return mod


_MAX_DEPTH = 32  # same limits as hailing.bencode (MAX_DEPTH, integers of <= 32 digits)
_INT_LIMIT = 10**32


def _check_limits(value: Any) -> None:
    """Enforce hailing's nesting and integer limits on a decoded value (iteratively)."""
    stack = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        v, depth = pop()
        t = type(v)
        if t is dict:
            if depth >= _MAX_DEPTH:
                raise ValueError("nesting too deep")
            for x in v.values():
                if type(x) is not bytes:
                    push((x, depth + 1))
        elif t is list:
            if depth >= _MAX_DEPTH:
                raise ValueError("nesting too deep")
            for x in v:
                if type(x) is not bytes:
                    push((x, depth + 1))
        elif t is int:
            if not -_INT_LIMIT < v < _INT_LIMIT:
                raise ValueError("integer too large")
        elif t is not bytes:
            raise TypeError(f"cannot encode {t.__name__}")


def _smoke(codec: Codec) -> None:
    """Raise if the codec cannot round-trip a trivial KRPC-shaped value."""
    assert codec.decode is not None and codec.encode is not None
    obj = {b"a": {b"id": b"x" * 20}, b"t": b"aa", b"y": b"q"}
    data = canonical(obj)
    if normalize(codec.decode(data)) != obj:
        raise RuntimeError("decode smoke test returned a different value")
    if codec.encode(obj) != data:
        raise RuntimeError("encode smoke test returned different bytes")


def load_codecs(args: argparse.Namespace) -> list[Codec]:
    codecs: list[Codec] = []

    def attempt(codec: Codec, setup: Callable[[Codec], None]) -> None:
        try:
            setup(codec)
            _smoke(codec)
        except ImportError as e:
            codec.skipped = f"not installed ({e})"
            codec.decode = codec.encode = None
        except Exception as e:
            codec.skipped = f"unusable on this Python: {type(e).__name__}: {e}"
            codec.decode = codec.encode = None
        codecs.append(codec)

    def hailing(c: Codec) -> None:
        from hailing import bencode as hb

        c.decode, c.encode = hb.decode, hb.encode
        c.implementation = "pure Python"
        c.version = _dist_version("hailing")

    def hailing_pure(c: Codec) -> None:
        from hailing import bencode as hb

        c.decode, c.encode = hb.decode_pure, hb.encode
        c.implementation = "pure Python (hailing.bencode.decode_pure)"
        c.version = _dist_version("hailing")

    def bencode2_c(c: Codec) -> None:
        import bencode2 as b2

        if not getattr(b2, "COMPILED", False):
            raise ImportError("compiled extension not loaded")
        c.decode, c.encode = b2.bdecode, b2.bencode
        c.implementation = "C++ extension"
        c.version = _dist_version("bencode2")

    def fastbencode_rs(c: Codec) -> None:
        import fastbencode as fb

        c.version = _dist_version("fastbencode")
        mod = getattr(fb.bdecode, "__module__", "") or ""
        if "_bencode_py" in mod:
            raise ImportError("compiled extension not loaded; see fastbencode[py]")
        c.decode, c.encode = fb.bdecode, fb.bencode
        c.implementation = "Rust (PyO3) extension"

    def fastbencode_py(c: Codec) -> None:
        from fastbencode import _bencode_py as fp

        c.decode, c.encode = fp.bdecode, fp.bencode
        c.implementation = "pure-Python fallback"
        c.version = _dist_version("fastbencode")

    def fastbencode_limits(c: Codec) -> None:
        import fastbencode as fb

        mod = getattr(fb.bdecode, "__module__", "") or ""
        if "_bencode_py" in mod:
            raise ImportError("compiled extension not loaded")
        bdecode, bencode = fb.bdecode, fb.bencode

        def decode(data: bytes) -> Any:
            value = bdecode(data)
            _check_limits(value)
            return value

        def encode(obj: Any) -> bytes:
            _check_limits(obj)
            return bencode(obj)

        c.decode, c.encode = decode, encode
        c.implementation = "fastbencode Rust + Python limit walk"
        c.version = _dist_version("fastbencode")

    def bencode_py(c: Codec) -> None:
        owners = [o.lower() for o in _owner_of("bencodepy")]
        if "bencode.py" not in owners:
            raise ImportError(
                f"module 'bencodepy' is provided by {owners}"
                if owners
                else "No module named 'bencodepy' (bencode.py)"
            )
        import bencodepy as bp

        inst = bp.Bencode()  # bytes in, bytes out, plain dicts: same types as hailing
        c.decode, c.encode = inst.decode, inst.encode
        c.implementation = "pure Python (bencodepy.Bencode(), bytes mode)"
        c.version = _dist_version("bencode.py")
        c.notes.append("the default bencode.bdecode decodes strings to str (UTF-8, fallback bytes)")

    def bencodepy_eweast(c: Codec) -> None:
        if args.bencodepy_path:
            bp = _import_isolated("bencodepy", args.bencodepy_path)
            c.version = _dist_version("bencodepy", args.bencodepy_path)
            c.notes.append(f"loaded in isolation from {args.bencodepy_path}")
        else:
            owners = [o.lower() for o in _owner_of("bencodepy")]
            if "bencodepy" not in owners:
                raise ImportError(
                    "module 'bencodepy' is "
                    + (f"provided by {owners}" if owners else "not installed")
                    + "; install with `pip install --no-deps --target DIR bencodepy`"
                    " and pass --bencodepy-path DIR"
                )
            import bencodepy as bp

            c.version = _dist_version("bencodepy")
        c.decode, c.encode = bp.decode, bp.encode
        c.implementation = "pure Python"
        c.notes.append("decode returns OrderedDict; compared after conversion to dict")

    def better_fast(c: Codec) -> None:
        from better_bencode import _fast as bf

        c.version = _dist_version("better-bencode")
        c.decode, c.encode = bf.loads, bf.dumps
        c.implementation = "C extension"

    def better_pure(c: Codec) -> None:
        from better_bencode import _pure as bp

        c.decode, c.encode = bp.loads, bp.dumps
        c.implementation = "pure-Python fallback"
        c.version = _dist_version("better-bencode")

    attempt(Codec("hailing", "hailing"), hailing)
    attempt(Codec("hailing[pure]", "hailing"), hailing_pure)
    attempt(Codec("bencode2", "bencode2"), bencode2_c)
    attempt(Codec("fastbencode", "fastbencode"), fastbencode_rs)
    attempt(Codec("fastbencode+limits", "fastbencode"), fastbencode_limits)
    attempt(Codec("fastbencode[py]", "fastbencode"), fastbencode_py)
    attempt(Codec("bencode.py", "bencode.py"), bencode_py)
    attempt(Codec("bencodepy", "bencodepy"), bencodepy_eweast)
    attempt(Codec("better-bencode", "better-bencode"), better_fast)
    attempt(Codec("better-bencode[py]", "better-bencode"), better_pure)
    if args.only:
        wanted = set(args.only.split(","))
        codecs = [c for c in codecs if c.name in wanted]
    return codecs


# --------------------------------------------------------------------------- measure


def strictness(codec: Codec) -> dict[str, Any]:
    assert codec.decode is not None
    accepted: list[dict[str, str]] = []
    rejected: dict[str, str] = {}
    for ident, desc, data in INVALID:
        try:
            value = codec.decode(data)
        except Exception as e:  # any exception type is a rejection
            rejected[ident] = type(e).__name__
        else:
            r = repr(value)
            accepted.append(
                {"id": ident, "input": desc, "returned": r[:60] + ("..." if len(r) > 60 else "")}
            )
    valid_rejected: list[str] = []
    for ident, data in VALID:
        try:
            codec.decode(data)
        except Exception:
            valid_rejected.append(ident)
    return {
        "strict_rejected": len(rejected),
        "strict_total": len(INVALID),
        "accepted_invalid": accepted,
        "rejected_with": rejected,
        "valid_total": len(VALID),
        "valid_rejected": valid_rejected,
    }


def _calibrate(timer: timeit.Timer) -> int:
    """Calls per sample so that one sample takes about SAMPLE_SECONDS."""
    n = 1
    while True:
        t = timer.timeit(n)
        if t >= SAMPLE_SECONDS / 5:
            return max(1, int(n * SAMPLE_SECONDS / t))
        n *= 4


def correctness(codec: Codec, msgs: dict[str, Any], wire: dict[str, bytes]) -> dict[str, Any]:
    """Does the codec decode the benchmark messages right and encode them canonically?"""
    assert codec.decode is not None and codec.encode is not None
    out: dict[str, Any] = {"decode_equal": {}, "encode_canonical": {}}
    for name in MESSAGES:
        try:
            out["decode_equal"][name] = normalize(codec.decode(wire[name])) == normalize(msgs[name])
        except Exception as e:
            out["decode_equal"][name] = f"error: {type(e).__name__}: {e}"
        try:
            out["encode_canonical"][name] = codec.encode(msgs[name]) == wire[name]
        except Exception as e:
            out["encode_canonical"][name] = f"error: {type(e).__name__}: {e}"
    return out


def speed(
    codecs: list[Codec],
    results: dict[str, dict[str, Any]],
    msgs: dict[str, Any],
    wire: dict[str, bytes],
    repeats: int,
) -> None:
    """Fill results[codec][decode_us|encode_us][message]: median (and min) us per op.

    Samples are taken round-robin (every codec/op/message once per round, ``repeats``
    rounds), so a change in machine load hits all codecs alike instead of whichever
    happened to be measured at the time.  Ops whose output was wrong are not timed.
    """
    jobs: list[tuple[str, str, str, timeit.Timer]] = []
    for c in codecs:
        r = results[c.name]
        for op in ("decode", "encode"):
            r[f"{op}_us"] = {}
            r[f"{op}_us_min"] = {}
            for m in MESSAGES:
                ok = r["decode_equal"][m] if op == "decode" else r["encode_canonical"][m]
                if ok is True or (op == "encode" and ok is False):  # non-canonical: still timed
                    fn, arg = (c.decode, wire[m]) if op == "decode" else (c.encode, msgs[m])
                    jobs.append(
                        (c.name, op, m, timeit.Timer("fn(arg)", globals={"fn": fn, "arg": arg}))
                    )
                else:
                    r[f"{op}_us"][m] = r[f"{op}_us_min"][m] = None
    numbers = [_calibrate(t) for *_, t in jobs]
    samples: list[list[float]] = [[] for _ in jobs]
    for _ in range(repeats):
        for i, ((*_, timer), number) in enumerate(zip(jobs, numbers, strict=True)):
            samples[i].append(timer.timeit(number) / number * 1e6)
    for (name, op, m, _), s in zip(jobs, samples, strict=True):
        results[name][f"{op}_us"][m] = round(statistics.median(s), 3)
        results[name][f"{op}_us_min"][m] = round(min(s), 3)


# --------------------------------------------------------------------------- report


def summary(doc: dict[str, Any]) -> str:
    libs = doc["libraries"]
    lines = []
    lines.append(
        f"bencode codecs: Python {doc['python']}, {doc['machine']}, median of "
        f"{doc['repeats']} samples; message sizes "
        + ", ".join(f"{k}={v} B" for k, v in doc["message_bytes"].items())
    )
    short = {"ping_query": "ping", "find_node_response": "fnode", "bep44_get_response": "get44"}
    head = (
        f"{'codec':19s} {'version':9s} {'strict':>7s}  "
        + " ".join(f"{'dec ' + short[m]:>10s}" for m in MESSAGES)
        + "  "
        + " ".join(f"{'enc ' + short[m]:>10s}" for m in MESSAGES)
        + "  canon"
    )
    lines += ["", head + "   (us/op)", "-" * len(head)]
    hb = libs.get("hailing", {})
    for name, r in libs.items():
        if r.get("skipped"):
            lines.append(f"{name:19s} {r.get('version') or '-'!s:9s} skipped: {r['skipped']}")
            continue

        def cell(op: str, m: str, r: dict[str, Any] = r) -> str:
            v = r[op][m]
            return f"{v:10.2f}" if v is not None else f"{'wrong':>10s}"

        canon = all(v is True for v in r["encode_canonical"].values())
        lines.append(
            f"{name:19s} {r['version'] or '-':9s} {r['strict_rejected']:>3d}/{r['strict_total']:<3d}  "
            + " ".join(cell("decode_us", m) for m in MESSAGES)
            + "  "
            + " ".join(cell("encode_us", m) for m in MESSAGES)
            + f"  {'yes' if canon else 'NO'}"
        )
    lines.append("")
    lines.append("speed relative to hailing (geometric mean over the 3 messages; >1 = faster):")
    for name, r in libs.items():
        if r.get("skipped") or name == "hailing" or not hb:
            continue
        rel = []
        for op in ("decode_us", "encode_us"):
            ratios = [hb[op][m] / r[op][m] for m in MESSAGES if r[op][m] and hb[op][m]]
            rel.append(f"{statistics.geometric_mean(ratios):.2f}x" if ratios else "n/a")
        lines.append(f"  {name:19s} decode {rel[0]:>7s}   encode {rel[1]:>7s}")
    lines.append("")
    lines.append("invalid inputs accepted (returned a value instead of raising):")
    for name, r in libs.items():
        if r.get("skipped"):
            continue
        acc = ", ".join(a["input"] for a in r["accepted_invalid"]) or "none"
        lines.append(f"  {name:19s} {acc}")
        if r["valid_rejected"]:
            lines.append(f"  {'':19s} and REJECTED valid: {', '.join(r['valid_rejected'])}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=7, help="timeit samples per op (7)")
    ap.add_argument("--out", default=None, help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="JSON only: no summary on stderr")
    ap.add_argument("--only", default=None, help="comma-separated codec names to run")
    ap.add_argument(
        "--bencodepy-path",
        default=os.environ.get("BENCODEPY_PATH"),
        help="directory holding eweast's bencodepy (pip install --target DIR bencodepy)",
    )
    args = ap.parse_args()

    msgs = krpc_messages()
    wire = {name: canonical(msgs[name]) for name in MESSAGES}
    codecs = load_codecs(args)

    libs: dict[str, Any] = {}
    t0 = time.perf_counter()
    for c in codecs:
        r: dict[str, Any] = {
            "distribution": c.distribution,
            "version": c.version,
            "implementation": c.implementation,
            "available": c.skipped is None,
        }
        if c.skipped:
            r["skipped"] = c.skipped
            if not args.json:
                print(f"[bencode] {c.name}: skipped ({c.skipped})", file=sys.stderr)
        else:
            r.update(strictness(c))
            r.update(correctness(c, msgs, wire))
        if c.notes:
            r["notes"] = c.notes
        libs[c.name] = r
    usable = [c for c in codecs if c.skipped is None]
    if not args.json:
        print(
            f"[bencode] timing {len(usable)} codecs round-robin, {args.repeats} rounds ...",
            file=sys.stderr,
            flush=True,
        )
    speed(usable, libs, msgs, wire, args.repeats)

    doc = {
        "benchmark": "bencode_codec",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "repeats": args.repeats,
        "sample_seconds": SAMPLE_SECONDS,
        "message_bytes": {name: len(wire[name]) for name in MESSAGES},
        "invalid_inputs": [{"id": i, "input": d} for i, d, _ in INVALID],
        "valid_inputs": [i for i, _ in VALID],
        "libraries": libs,
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if not args.json:
        print(summary(doc), file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
