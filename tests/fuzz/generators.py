"""Input generators shared by every fuzz target: random bytes, mutations of valid inputs
(bit flips, interesting bytes, inserts, deletes, duplicates, splices of two inputs) and
structure-aware bencode (well-formed values, wrong types and sizes where a decoder
expects others).

Everything draws from one ``random.Random`` so that a seed gives the same inputs.
"""

from __future__ import annotations

import random
from typing import Any

from hailing import bencode

#: Bytes that often sit on a parser's edges: bencode's markers, digits, sign, NUL, high.
INTERESTING_BYTES = b"0123456789:-deil\x00\xff\x7f\x80 \n{}[]\",."
#: Integers that often sit on a parser's edges.
INTERESTING_INTS = (0, 1, -1, 2, 6, 18, 20, 26, 38, 255, 256, 65535, 65536, 2**31 - 1,
                    2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63), 10**32 - 1)
#: Dictionary keys KRPC, BEP44 and hailing's extensions use: structure-aware values use
#: them so that decoders look deeper than "unknown key".
KRPC_KEYS = (b"t", b"y", b"q", b"a", b"r", b"e", b"v", b"ip", b"ro", b"id", b"target",
             b"info_hash", b"nodes", b"nodes6", b"values", b"token", b"port",
             b"implied_port", b"want", b"k", b"sig", b"seq", b"salt", b"cas", b"key",
             b"ttl", b"p", b"n", b"more", b"interval", b"samples", b"num")
KRPC_METHODS = (b"ping", b"find_node", b"get_peers", b"announce_peer", b"get", b"put",
                b"sample_infohashes", b"hailing_post", b"hailing_listen", b"hailing_push",
                b"vote", b"x" * 40)


class Mutator:
    """Makes inputs from a corpus of valid ones."""

    def __init__(self, rng: random.Random, corpus: list[bytes]) -> None:
        self.rng = rng
        self.corpus = [c for c in corpus if c] or [b"\x00"]

    def size(self) -> int:
        """Mostly small, sometimes large (up to 5,000 bytes)."""
        r = self.rng.random()
        if r < 0.7:
            return self.rng.randrange(0, 64)
        if r < 0.95:
            return self.rng.randrange(64, 600)
        return self.rng.randrange(600, 5000)

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.size())

    def pick(self) -> bytes:
        return self.rng.choice(self.corpus)

    def mutate(self, data: bytes | None = None) -> bytes:
        """1-4 mutations of ``data`` (default: a corpus item)."""
        rng = self.rng
        buf = bytearray(self.pick() if data is None else data)
        for _ in range(rng.randrange(1, 5)):
            op = rng.randrange(8)
            n = len(buf)
            if op == 0 and n:  # flip one bit
                i = rng.randrange(n)
                buf[i] ^= 1 << rng.randrange(8)
            elif op == 1 and n:  # an interesting byte
                buf[rng.randrange(n)] = rng.choice(INTERESTING_BYTES)
            elif op == 2:  # insert random bytes
                i = rng.randrange(n + 1)
                buf[i:i] = rng.randbytes(rng.randrange(1, 9))
            elif op == 3 and n:  # delete a range
                i = rng.randrange(n)
                del buf[i:i + rng.randrange(1, 17)]
            elif op == 4 and n:  # duplicate a range
                i = rng.randrange(n)
                buf[i:i] = buf[i:i + rng.randrange(1, 33)]
            elif op == 5:  # splice: a head of this one, a tail of another
                other = self.pick()
                buf = buf[:rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1):]
            elif op == 6 and n:  # truncate
                del buf[rng.randrange(n):]
            elif op == 7 and n:  # overwrite a run of bytes with one value
                i = rng.randrange(n)
                v = rng.choice(INTERESTING_BYTES)
                for j in range(i, min(n, i + rng.randrange(1, 9))):
                    buf[j] = v
        return bytes(buf)


# -- structure-aware bencode --------------------------------------------------------------


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random bencodable value: the types and sizes KRPC fields have, and others."""
    r = rng.random()
    if depth > 3:
        r *= 0.6  # no more containers
    if r < 0.2:
        return rng.choice(INTERESTING_INTS) * rng.choice((1, 1, -1))
    if r < 0.6:
        size = rng.choice((0, 1, 2, 4, 6, 18, 20, 26, 32, 38, 64, 100, 1000, rng.randrange(300)))
        if rng.random() < 0.3:
            return rng.choice(KRPC_KEYS + KRPC_METHODS)
        return rng.randbytes(size)
    if r < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rng.choice(KRPC_KEYS) if rng.random() < 0.8 else rng.randbytes(rng.randrange(4)):
            random_value(rng, depth + 1) for _ in range(rng.randrange(0, 6))}


def retype(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """``value`` (decoded bencode) with one part replaced by a random value, usually of
    another type or size: the structure a decoder expects, with one thing wrong."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        out = dict(value)
        key = rng.choice(list(out))
        r = rng.random()
        if r < 0.15:
            del out[key]
        elif r < 0.25:
            out[rng.choice(KRPC_KEYS)] = random_value(rng, depth + 1)
        else:
            out[key] = retype(rng, out[key], depth + 1)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        if rng.random() < 0.2:
            del out_list[i]
        else:
            out_list[i] = retype(rng, out_list[i], depth + 1)
        return out_list
    if isinstance(value, bytes) and value and rng.random() < 0.4:  # same type, new size
        return value[:rng.randrange(len(value))] if rng.random() < 0.5 else value + value
    return random_value(rng, depth)


def structured(rng: random.Random, corpus: list[Any]) -> bytes:
    """Valid bencode: a corpus value with one part wrong, or a random value."""
    value = retype(rng, rng.choice(corpus)) if corpus and rng.random() < 0.85 \
        else random_value(rng)
    return bencode.encode(value)
