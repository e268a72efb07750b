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
- ``replay_seen`` and ``replay_floor``: the envelopes already handled (offers and
  endpoint records), so that a restarted node acts on none of them again; bounded per
  contact and for all strangers together, like the replay cache in memory
  (:mod:`hailing.signaling.replay`): see :meth:`SignalStore.record_handling`.
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
import sqlite3
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from .._secrets import read_secret, write_secret
from .._sqlite import SqliteFile, storage_error
from .._sqlite import data_dir as _data_dir
from ..errors import LocalProtocolError, StorageError
from ..identity import format_contact_id, parse_contact_id
from .envelope import CLOCK_SKEW

if TYPE_CHECKING:  # the wallet module imports eth_keys: only when rotation is used
    from ..chain.wallet import RotationSecret

__all__ = ["CHAIN_CONFIG", "HANDLED_PER_CONTACT", "HANDLED_STRANGERS", "PEER_DB",
           "PEER_DB_VERSION", "ChainConfig", "SignalStore", "StoredEndpoint",
           "load_chain_config", "save_chain_config"]

#: The node's own database file, shared with the contact book
#: (:mod:`hailing.services.contacts`); one schema version for the whole file.
PEER_DB = "peer.sqlite3"
PEER_DB_VERSION = 1

#: Handled-envelope records kept per contact, and for all strangers together (see
#: :meth:`SignalStore.record_handling`): about 100 bytes each.
HANDLED_PER_CONTACT = 256
HANDLED_STRANGERS = 4096

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
CREATE TABLE IF NOT EXISTS replay_seen (
    nonce BLOB PRIMARY KEY,
    sender BLOB NOT NULL,
    stranger INTEGER NOT NULL CHECK (stranger IN (0, 1)),
    timestamp REAL NOT NULL CHECK (typeof(timestamp) = 'real'),
    expires REAL NOT NULL CHECK (typeof(expires) = 'real')
);
CREATE INDEX IF NOT EXISTS replay_seen_expires ON replay_seen (expires);
CREATE INDEX IF NOT EXISTS replay_seen_sender ON replay_seen (sender, stranger);
CREATE INDEX IF NOT EXISTS replay_seen_stranger ON replay_seen (stranger);
CREATE TABLE IF NOT EXISTS replay_floor (
    scope BLOB PRIMARY KEY,
    floor REAL NOT NULL CHECK (typeof(floor) = 'real'),
    until REAL NOT NULL CHECK (typeof(until) = 'real')
);
-- rows of the first version (nonce and expiry only): kept, as strangers' rows whose
-- timestamp is taken to be their expiry (the most cautious floor if one is evicted)
INSERT OR IGNORE INTO replay_seen
    SELECT nonce, x'', 1, expires, expires FROM handled_envelopes;
DELETE FROM handled_envelopes;
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

    def record_handling(self, nonce: bytes, expires: float, now: float, *,
                        sender: bytes = b"", timestamp: float | None = None,
                        contact: bool = False) -> str | None:
        """Record that the envelope with this nonce (from ``sender``, a contact or not,
        sealed at ``timestamp``) is being handled: None if it is the first time, in this
        run or an earlier one (the replay cache in memory forgets on a restart, and
        inboxes and chains hand the same envelope to a restarted node); else why it must
        not be handled: ``already_handled``, or ``below_replay_floor`` (older than a
        record that had to go, below).

        A record is kept as long as the envelope could still be opened: until its expiry
        plus the clock-skew allowance (:data:`~hailing.signaling.envelope.CLOCK_SKEW`),
        or a restart in that window would handle it again. Rows are bounded: at most
        :data:`HANDLED_PER_CONTACT` per contact and :data:`HANDLED_STRANGERS` for all
        strangers together. When a bound is passed the oldest rows go and the floor of
        their scope (that contact, or all strangers) rises to their newest timestamp:
        envelopes of that scope timestamped at or before it are refused until the
        evicted ones would have expired. Strangers therefore never push out a
        contact's records, and no eviction lets an envelope be handled twice."""
        ts = float(expires if timestamp is None else timestamp)
        scope = bytes(sender) if contact else b""
        try:
            with self._db as db:
                db.execute("DELETE FROM replay_seen WHERE expires < ?", (now - CLOCK_SKEW,))
                db.execute("DELETE FROM replay_floor WHERE until < ?", (now,))
                if db.execute("SELECT 1 FROM replay_seen WHERE nonce=?",
                              (bytes(nonce),)).fetchone():
                    return "already_handled"
                if db.execute("SELECT 1 FROM replay_floor WHERE scope=? AND floor >= ?",
                              (scope, ts)).fetchone():
                    return "below_replay_floor"
                db.execute("INSERT INTO replay_seen VALUES (?, ?, ?, ?, ?)",
                           (bytes(nonce), bytes(sender), int(not contact), ts, float(expires)))
                args: tuple[object, ...]
                if contact:
                    where, args, limit = ("sender=? AND stranger=0", (bytes(sender),),
                                          HANDLED_PER_CONTACT)
                else:
                    where, args, limit = "stranger=1", (), HANDLED_STRANGERS
                (count,) = db.execute(f"SELECT count(*) FROM replay_seen WHERE {where}",
                                      args).fetchone()
                if count > limit:
                    self._evict(db, scope, where, args, count - limit)
        except sqlite3.Error as exc:
            raise storage_error(f"cannot write {self.path}", exc) from None
        return None

    @staticmethod
    def _evict(db: sqlite3.Connection, scope: bytes, where: str, args: tuple[object, ...],
               excess: int) -> None:
        """Drop the ``excess`` oldest rows of a scope, raising its floor over them."""
        victims = db.execute(f"SELECT rowid, timestamp, expires FROM replay_seen WHERE "
                             f"{where} ORDER BY rowid LIMIT ?", (*args, excess)).fetchall()
        db.executemany("DELETE FROM replay_seen WHERE rowid=?", [(v[0],) for v in victims])
        floor = max(v[1] for v in victims)
        until = max(v[2] for v in victims) + CLOCK_SKEW
        db.execute("INSERT INTO replay_floor VALUES (?, ?, ?) ON CONFLICT (scope) DO UPDATE "
                   "SET floor=max(floor, excluded.floor), until=max(until, excluded.until)",
                   (scope, floor, until))

    def handled_rows(self) -> int:
        """How many handled-envelope records are kept (for stats and tests)."""
        return int(self._query("SELECT count(*) FROM replay_seen")[0][0])

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
