"""Friends: the contacts a daemon keeps a link open to from boot (services layer).

A *friend* is a contact (allowed, in the :class:`~hailing.services.contacts.ContactBook`)
that its owner marked with ``hailing contact friend CONTACT`` (``--off`` to unmark):
``hailing up`` opens, or waits for, a data-channel link to each online friend once at
start, re-opens a lost one with backoff, and signals later calls (media, further links)
over it (docs/overlay.md, "Links to friends and the ladder"). Blocking or removing a
contact makes it no friend, whatever the mark says (the daemon asks the book).

Beside the mark, the book keeps each contact's **DHT node id** as it announced it over an
open link (sealed and signed, kind 5: :mod:`hailing.session.node_ids`): the ``network``
coupler (:mod:`hailing.session.network_coupler`) forwards a later offer toward that node
through the data-channel overlay.

Both live in ``peer.sqlite3``, in their own table beside the contacts (a table that does
not exist is created: no schema version changes). Marking a friend bumps the book's
change counter (:meth:`~hailing.services.contacts.ContactBook.version`), so a running
daemon notices at once; learning a node id does not.
"""

from __future__ import annotations

import os
import time

from .._sqlite import SqliteFile
from .._sqlite import data_dir as _data_dir
from ..errors import LocalProtocolError
from ..identity._keys import PUBLIC_KEY_SIZE
from .contacts import DB_NAME

__all__ = ["NODE_ID_SIZE", "FriendBook"]

#: A DHT node id (BEP5: 160 bits).
NODE_ID_SIZE = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
INSERT OR IGNORE INTO meta VALUES ('changes', 0);
CREATE TABLE IF NOT EXISTS friends (
    pubkey BLOB PRIMARY KEY CHECK (length(pubkey) = 32),
    friend INTEGER NOT NULL DEFAULT 0 CHECK (friend IN (0, 1)),
    node_id BLOB CHECK (node_id IS NULL OR length(node_id) = 20),
    node_seen REAL
);
CREATE TRIGGER IF NOT EXISTS friends_marked AFTER UPDATE OF friend ON friends
WHEN NEW.friend != OLD.friend BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'changes';
END;
CREATE TRIGGER IF NOT EXISTS friends_inserted AFTER INSERT ON friends
WHEN NEW.friend = 1 BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'changes';
END;
"""


def _key(pubkey: bytes) -> bytes:
    if not isinstance(pubkey, bytes) or len(pubkey) != PUBLIC_KEY_SIZE:
        raise LocalProtocolError("a contact's public key is 32 bytes")
    return pubkey


class FriendBook(SqliteFile):
    """Friend marks and node ids of one data directory (see the module docstring)."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = _data_dir(data_dir)
        super().__init__(self.dir / DB_NAME, _SCHEMA)

    def set_friend(self, pubkey: bytes, friend: bool = True) -> None:
        """Mark (or unmark) ``pubkey`` as a friend."""
        self._write("INSERT INTO friends (pubkey, friend) VALUES (?, ?) ON CONFLICT(pubkey) "
                    "DO UPDATE SET friend = excluded.friend", (_key(pubkey), int(friend)))

    def is_friend(self, pubkey: bytes) -> bool:
        rows = self._query("SELECT friend FROM friends WHERE pubkey = ?", (_key(pubkey),))
        return bool(rows and rows[0][0])

    def marked(self) -> list[bytes]:
        """Every public key marked as a friend (the caller checks it is an allowed
        contact)."""
        return [bytes(r[0]) for r in self._query(
            "SELECT pubkey FROM friends WHERE friend = 1 ORDER BY pubkey")]

    def node_id(self, pubkey: bytes) -> bytes | None:
        """The DHT node id ``pubkey`` last announced over a link, or None."""
        rows = self._query("SELECT node_id FROM friends WHERE pubkey = ?", (_key(pubkey),))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def set_node_id(self, pubkey: bytes, node_id: bytes, when: float | None = None) -> bool:
        """Record ``pubkey``'s node id; True when it changed."""
        if not isinstance(node_id, bytes) or len(node_id) != NODE_ID_SIZE:
            raise LocalProtocolError(f"a node id is {NODE_ID_SIZE} bytes")
        if self.node_id(pubkey) == node_id:
            return False
        self._write("INSERT INTO friends (pubkey, node_id, node_seen) VALUES (?, ?, ?) "
                    "ON CONFLICT(pubkey) DO UPDATE SET node_id = excluded.node_id, "
                    "node_seen = excluded.node_seen",
                    (_key(pubkey), node_id, time.time() if when is None else when))
        return True
