"""Node ids, the XOR metric and node records."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

ID_BITS = 160  # BEP5: 160-bit ids
ID_BYTES = 20


def id_to_int(node_id: bytes) -> int:
    return int.from_bytes(node_id, "big")


def int_to_id(value: int) -> bytes:
    return value.to_bytes(ID_BYTES, "big")


def distance(a: bytes, b: bytes) -> int:
    """The Kademlia XOR distance between two ids, as an integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as others see it: its id and its (opaque) address."""

    id: bytes
    addr: Hashable

    def __str__(self) -> str:
        return f"{self.id.hex()} {self.addr}"
