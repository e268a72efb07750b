"""The three KRPC message kinds (BEP5): query, response, error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Query:
    """``y`` = ``q``: ``method`` is the ``q`` value, ``args`` the ``a`` dictionary.

    ``ro`` is BEP43's read-only flag; ``version`` the optional ``v`` client field.
    """

    tid: bytes
    method: bytes
    args: dict[bytes, Any]
    version: bytes | None = None
    ro: bool = False

    @property
    def sender_id(self) -> bytes:
        """The querying node's id (validated to be 20 bytes by the codec)."""
        sid: bytes = self.args[b"id"]
        return sid


@dataclass(frozen=True, slots=True)
class Response:
    """``y`` = ``r``: ``values`` is the ``r`` dictionary; ``ip`` the BEP42 compact address."""

    tid: bytes
    values: dict[bytes, Any]
    version: bytes | None = None
    ip: bytes | None = None

    @property
    def sender_id(self) -> bytes:
        sid: bytes = self.values[b"id"]
        return sid


@dataclass(frozen=True, slots=True)
class Error:
    """``y`` = ``e``: a list of ``[code, message]``."""

    tid: bytes
    code: int
    message: str
    version: bytes | None = field(default=None)


Message = Query | Response | Error
