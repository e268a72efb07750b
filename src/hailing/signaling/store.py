"""What the signaling backends keep on disk beside the contact book.

Three tables in the data directory's ``peer.sqlite3`` (the contact book's file; its own
tables and schema version are not touched), and one small JSON file:

- ``rotation``: each contact's rotation secret ``(prefix, user id)``, exchanged when two
  people befriend; with it a node computes the contact's daily Ethereum address
  (:mod:`hailing.chain.wallet`). The prefix is a secret: the file lives in the data
  directory (mode 0700).
- ``address_cache``: daily addresses already derived (scrypt costs a second each), keyed
  by a hash of (prefix, user id, day); addresses only, never keys. Older days are pruned.
- ``chain_cursor``: per chain, contract and scope, the next block a watcher reads. Saved
  after each poll, so offers sent while a node was down are read once after a restart:
  never lost, never twice.
- ``endpoint_records``: the latest verified connection-info record (SIP server, WireGuard
  peer) of each contact and kind, whichever backend brought it.
- ``chain.json`` (mode 0600): the node's chain configuration, the RPC URL and the contract
  address that ``hailing contract deploy --data-dir`` recorded.

A file that is not usable raises :class:`StorageError` naming it; nothing is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from .._secrets import read_secret, write_secret
from .._sqlite import SqliteFile
from .._sqlite import data_dir as _data_dir
from ..errors import LocalProtocolError, StorageError
from ..identity import format_contact_id, parse_contact_id
from .envelope import CLOCK_SKEW

if TYPE_CHECKING:  # the wallet module imports eth_keys: only when rotation is used
    from ..chain.wallet import RotationSecret

__all__ = ["CHAIN_CONFIG", "PEER_DB", "PEER_DB_VERSION", "ChainConfig", "SignalStore",
           "StoredEndpoint", "load_chain_config", "save_chain_config"]

#: The node's own database file, shared with the contact book
#: (:mod:`hailing.services.contacts`); one schema version for the whole file.
PEER_DB = "peer.sqlite3"
PEER_DB_VERSION = 1

CHAIN_CONFIG = "chain.json"
_CONFIG_VERSION = 1
_MAX_CONFIG = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS rotation (
    pubkey BLOB PRIMARY KEY CHECK (length(pubkey) = 32),
    prefix TEXT NOT NULL,
    user_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_cursor (
    scope TEXT PRIMARY KEY,
    next_block INTEGER NOT NULL CHECK (next_block >= 0)
);
CREATE TABLE IF NOT EXISTS address_cache (
    key BLOB PRIMARY KEY CHECK (length(key) = 32),
    day TEXT NOT NULL,
    address TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS handled_envelopes (
    nonce BLOB PRIMARY KEY,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoint_records (
    pubkey BLOB NOT NULL CHECK (length(pubkey) = 32),
    kind TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    extra TEXT NOT NULL,
    timestamp REAL NOT NULL,
    via TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (pubkey, kind)
);
"""


def _pubkey(contact: str | bytes) -> bytes:
    if isinstance(contact, bytes):
        if len(contact) != 32:
            raise LocalProtocolError("a contact's public key is 32 bytes")
        return contact
    return parse_contact_id(contact)


@dataclass(frozen=True, slots=True)
class StoredEndpoint:
    """A contact's latest endpoint record of one ``kind``; ``timestamp`` is the sealed
    envelope's, ``via`` the backend it came by."""

    pubkey: bytes
    kind: str
    endpoint: str
    extra: dict[str, str]
    timestamp: float
    via: str

    @property
    def contact_id(self) -> str:
        return format_contact_id(self.pubkey)


class SignalStore(SqliteFile):
    """The signaling tables of one data directory. A context manager, or call :meth:`close`.

    Not thread-safe (SQLite connection of the creating thread): use it from the event loop.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        # The file's schema version (in ``meta``) is the one the contact book checks too.
        super().__init__(_data_dir(data_dir) / PEER_DB, _SCHEMA, PEER_DB_VERSION)

    # -- contacts' rotation secrets ----------------------------------------------------

    def set_rotation(self, contact: str | bytes, prefix: str, user_id: str) -> RotationSecret:
        """Remember ``contact``'s rotation secret (replacing an older one)."""
        from ..chain.wallet import RotationSecret, check_prefix, check_user_id

        secret = RotationSecret(prefix=check_prefix(prefix), user_id=check_user_id(user_id))
        self._write("INSERT OR REPLACE INTO rotation VALUES (?, ?, ?)",
                    (_pubkey(contact), secret.prefix, secret.user_id))
        return secret

    def rotation(self, contact: str | bytes) -> RotationSecret | None:
        """``contact``'s rotation secret, or None if it was never exchanged."""
        from ..chain.wallet import RotationSecret

        rows = self._query("SELECT prefix, user_id FROM rotation WHERE pubkey=?",
                           (_pubkey(contact),))
        if not rows:
            return None
        prefix, user_id = rows[0]
        try:
            return RotationSecret(prefix=prefix, user_id=user_id)
        except LocalProtocolError:
            raise StorageError(f"{self.path}: a rotation secret row is corrupt") from None

    def forget_rotation(self, contact: str | bytes) -> bool:
        return self._write("DELETE FROM rotation WHERE pubkey=?", (_pubkey(contact),)) > 0

    # -- derived addresses -----------------------------------------------------------------

    @staticmethod
    def _address_key(secret: RotationSecret, day: date) -> bytes:
        material = "\0".join((secret.prefix, secret.user_id, day.isoformat())).encode()
        return hashlib.sha256(b"hailing address cache\0" + material).digest()

    def cached_address(self, secret: RotationSecret, day: date) -> str | None:
        rows = self._query("SELECT address FROM address_cache WHERE key=?",
                           (self._address_key(secret, day),))
        if not rows:
            return None
        address = rows[0][0]
        if not isinstance(address, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", address):
            raise StorageError(f"{self.path}: a cached address is corrupt")
        return address

    def cache_address(self, secret: RotationSecret, day: date, address: str) -> None:
        self._write("INSERT OR REPLACE INTO address_cache VALUES (?, ?, ?)",
                    (self._address_key(secret, day), day.isoformat(), address))
        self._write("DELETE FROM address_cache WHERE day < ?",
                    ((day - timedelta(days=2)).isoformat(),))

    # -- watcher cursors -----------------------------------------------------------------

    def cursor(self, scope: str) -> int | None:
        """The next block to read for ``scope``, or None if it never polled."""
        rows = self._query("SELECT next_block FROM chain_cursor WHERE scope=?", (scope,))
        if not rows:
            return None
        value = rows[0][0]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**48:
            raise StorageError(f"{self.path}: the chain cursor of {scope!r} is corrupt")
        return value

    def set_cursor(self, scope: str, next_block: int) -> None:
        if isinstance(next_block, bool) or not isinstance(next_block, int) or next_block < 0:
            raise LocalProtocolError("a block number is a non-negative integer")
        self._write("INSERT OR REPLACE INTO chain_cursor VALUES (?, ?)", (scope, next_block))

    # -- envelopes already handled -------------------------------------------------------

    def first_handling(self, nonce: bytes, expires: float, now: float) -> bool:
        """Record that the envelope with this nonce is being handled; False if it already
        was, in this run or an earlier one (the in-memory replay cache forgets on a
        restart, and inboxes and chains hand the same envelope to a restarted node).

        A record is kept as long as the envelope could still be opened: until its expiry
        plus the clock-skew allowance (:data:`~hailing.signaling.envelope.CLOCK_SKEW`),
        or a restart in that window would handle it again."""
        _, inserted = self._write_all([
            ("DELETE FROM handled_envelopes WHERE expires < ?", (now - CLOCK_SKEW,)),
            ("INSERT OR IGNORE INTO handled_envelopes VALUES (?, ?)",
             (bytes(nonce), float(expires))),
        ])
        return inserted == 1

    # -- endpoint records ------------------------------------------------------------------

    def put_endpoint(self, contact: bytes, kind: str, endpoint: str, extra: dict[str, str],
                     timestamp: float, via: str) -> bool:
        """Keep this record unless a newer one of the same contact and kind is stored;
        True if it was kept."""
        return self._write(
            "INSERT INTO endpoint_records VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (pubkey, kind) DO UPDATE SET endpoint=excluded.endpoint, "
            "extra=excluded.extra, timestamp=excluded.timestamp, via=excluded.via, "
            "received=excluded.received WHERE excluded.timestamp > endpoint_records.timestamp",
            (_pubkey(contact), kind, endpoint, json.dumps(extra, sort_keys=True), timestamp,
             via, time.time()),
        ) > 0

    def endpoints(self, contact: str | bytes | None = None) -> list[StoredEndpoint]:
        """The stored records (of ``contact`` only, if given), oldest contact first."""
        sql = "SELECT pubkey, kind, endpoint, extra, timestamp, via FROM endpoint_records"
        args: tuple[object, ...] = ()
        if contact is not None:
            sql += " WHERE pubkey=?"
            args = (_pubkey(contact),)
        out = []
        for pubkey, kind, endpoint, extra, timestamp, via in self._query(sql + " ORDER BY rowid",
                                                                          args):
            try:
                parsed = json.loads(extra)
                ok = isinstance(parsed, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())
            except ValueError:
                ok = False
            if not ok or not isinstance(kind, str) or not isinstance(endpoint, str):
                raise StorageError(f"{self.path}: an endpoint record is corrupt")
            out.append(StoredEndpoint(pubkey, kind, endpoint, parsed, float(timestamp), via))
        return out


# -- the chain configuration file -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainConfig:
    """``rpc``: a JSON-RPC URL or ``embedded``; ``contract``: the EIP-55 address."""

    rpc: str | None = None
    contract: str | None = None


def load_chain_config(data_dir: str | os.PathLike[str]) -> ChainConfig:
    """The recorded configuration; empty if there is none, :class:`StorageError` if the
    file is unusable."""
    path = Path(data_dir) / CHAIN_CONFIG
    data = read_secret(path, limit=_MAX_CONFIG, missing_ok=True)
    if data is None:
        return ChainConfig()
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        obj = None
    if not isinstance(obj, dict) or obj.get("version") != _CONFIG_VERSION:
        raise StorageError(f"{path} is corrupt (not a version {_CONFIG_VERSION} chain config)")
    rpc, contract = obj.get("rpc"), obj.get("contract")
    if not all(v is None or (isinstance(v, str) and 0 < len(v) <= 1024) for v in (rpc, contract)):
        raise StorageError(f"{path} is corrupt (rpc and contract must be strings)")
    return ChainConfig(rpc=rpc, contract=contract)


def save_chain_config(data_dir: str | os.PathLike[str], config: ChainConfig) -> Path:
    """Write the configuration atomically (mode 0600); returns the file's path."""
    path = Path(data_dir) / CHAIN_CONFIG
    body = json.dumps({"version": _CONFIG_VERSION, "rpc": config.rpc,
                       "contract": config.contract}, indent=1) + "\n"
    write_secret(path, body.encode("utf-8"))
    return path
