"""The contact book: ``<data_dir>/peer.sqlite3`` (services layer).

Holds the people a node knows (public key, name, allowed or blocked), the node's own
presence (available, busy, do-not-disturb), whether it accepts calls from strangers, and
its display name. Every change is committed at once, so a restart loses nothing. A file
that is not a hailing database or is corrupt raises :class:`StorageError` with its path;
nothing is deleted.

A public key is either in the book, allowed or blocked, or not in it: unknown. The
call policy (:mod:`hailing.services.policy`: who may call) reads
:meth:`ContactBook.state`, :meth:`~ContactBook.status` and :meth:`~ContactBook.accept_any`.

Other processes may write the same file (``hailing contact add`` while ``hailing listen``
runs): :meth:`ContactBook.version` changes whenever anyone changed the book (triggers
count every change of ``contacts`` and ``meta`` in ``meta.changes``), so a running node
notices a new contact within a poll instead of a refresh interval. Checking is cheap:
SQLite's ``PRAGMA data_version`` (no table read) says whether another connection
committed anything at all, and only then is the counter read; writes to the file's other
tables (the signaling store's) do not count as changes of the book.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from .._sqlite import SqliteFile
from .._sqlite import data_dir as _data_dir
from ..errors import LocalProtocolError, StorageError
from ..identity import format_contact_id, parse_contact_id
from ..identity._keys import PUBLIC_KEY_SIZE
from ..signaling.store import PEER_DB, PEER_DB_VERSION

__all__ = ["DB_NAME", "Contact", "ContactBook", "ContactState", "Status", "check_name"]

DB_NAME = PEER_DB
SCHEMA_VERSION = PEER_DB_VERSION
MAX_NAME_LENGTH = 64

Status = Literal["available", "busy", "dnd"]
ContactState = Literal["allowed", "blocked"]
_STATUSES: tuple[Status, ...] = ("available", "busy", "dnd")
_STATES: tuple[ContactState, ...] = ("allowed", "blocked")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS contacts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pubkey BLOB NOT NULL UNIQUE CHECK (length(pubkey) = 32),
    name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('allowed', 'blocked'))
);
INSERT OR IGNORE INTO meta VALUES ('changes', 0);
CREATE TRIGGER IF NOT EXISTS contacts_inserted AFTER INSERT ON contacts BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'changes';
END;
CREATE TRIGGER IF NOT EXISTS contacts_updated AFTER UPDATE ON contacts BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'changes';
END;
CREATE TRIGGER IF NOT EXISTS contacts_deleted AFTER DELETE ON contacts BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'changes';
END;
CREATE TRIGGER IF NOT EXISTS meta_inserted AFTER INSERT ON meta
WHEN NEW.key NOT IN ('changes', 'schema') BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'changes';
END;
CREATE TRIGGER IF NOT EXISTS meta_deleted AFTER DELETE ON meta
WHEN OLD.key NOT IN ('changes', 'schema') BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'changes';
END;
"""


@dataclass(frozen=True, slots=True)
class Contact:
    """One entry of the book. ``name`` is empty for someone blocked without a name."""

    pubkey: bytes
    name: str
    state: ContactState

    @property
    def contact_id(self) -> str:
        return format_contact_id(self.pubkey)

    @property
    def blocked(self) -> bool:
        return self.state == "blocked"

    def __str__(self) -> str:
        return f"{self.name or '(no name)'} {self.contact_id} {self.state}"


ContactRef = Contact | str | bytes


def _pubkey(ref: ContactRef) -> bytes:
    if isinstance(ref, Contact):
        return ref.pubkey
    if isinstance(ref, bytes):
        if len(ref) != PUBLIC_KEY_SIZE:
            raise LocalProtocolError("a contact's public key is 32 bytes")
        return ref
    if isinstance(ref, str):
        return parse_contact_id(ref)
    raise LocalProtocolError(f"a contact is a Contact, a contact id or a public key, "
                             f"not {type(ref).__name__}")


def check_name(name: str) -> str:
    """``name`` stripped; :class:`LocalProtocolError` if it cannot be a display name."""
    if not isinstance(name, str):
        raise LocalProtocolError(f"a name is text, not {type(name).__name__}")
    name = name.strip()
    if not name:
        raise LocalProtocolError("a name cannot be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise LocalProtocolError(f"a name is at most {MAX_NAME_LENGTH} characters")
    if any(not ch.isprintable() for ch in name):
        raise LocalProtocolError("a name cannot contain control characters")
    return name


class ContactBook(SqliteFile):
    """The contact book of one data directory. A context manager, or call :meth:`close`."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = _data_dir(data_dir)
        super().__init__(self.dir / DB_NAME, _SCHEMA, SCHEMA_VERSION)
        self._data_version = -1  # PRAGMA data_version when the counter was last read
        self._changes = 0

    def _write(self, sql: str, args: tuple[object, ...] = ()) -> int:
        changed = super()._write(sql, args)
        self._data_version = -1  # our own commit does not move data_version: read again
        return changed

    def version(self) -> int:
        """A number that changes whenever anyone (this object, another connection,
        another process) changed a contact, the status, accept-any or the name."""
        rows = self._query("PRAGMA data_version")
        data_version = int(rows[0][0]) if rows else -1
        if data_version != self._data_version or data_version == -1:
            value = self._meta("changes")
            self._changes = value if isinstance(value, int) else 0
            self._data_version = data_version
        return self._changes

    def _contact(self, row: tuple[object, ...]) -> Contact:
        pubkey, name, state = row
        if not (isinstance(pubkey, bytes) and len(pubkey) == PUBLIC_KEY_SIZE
                and isinstance(name, str) and state in _STATES):
            raise StorageError(f"{self.path}: a contact row is corrupt")
        return Contact(pubkey, name, state)

    def _meta(self, key: str) -> object:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def _set_meta(self, key: str, value: object) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- contacts ----------------------------------------------------------------------

    def add(self, contact_id: str | bytes, name: str) -> Contact:
        """Add someone as allowed. Adding someone already in the book only renames them
        (a blocked contact stays blocked)."""
        pubkey = _pubkey(contact_id)
        name = check_name(name)
        self._write(
            "INSERT INTO contacts (pubkey, name, state) VALUES (?, ?, 'allowed') "
            "ON CONFLICT (pubkey) DO UPDATE SET name = excluded.name",
            (pubkey, name),
        )
        return self._require(pubkey)

    def get(self, pubkey_or_contact_id: ContactRef) -> Contact | None:
        """The entry for a public key or contact id, or None when unknown."""
        rows = self._query("SELECT pubkey, name, state FROM contacts WHERE pubkey=?",
                           (_pubkey(pubkey_or_contact_id),))
        return self._contact(rows[0]) if rows else None

    def _require(self, pubkey: bytes) -> Contact:
        contact = self.get(pubkey)
        if contact is None:
            raise LocalProtocolError(f"{format_contact_id(pubkey)} is not in the contact book")
        return contact

    def list(self) -> list[Contact]:
        """Everyone in the book, in the order they were added."""
        return [self._contact(r)
                for r in self._query("SELECT pubkey, name, state FROM contacts ORDER BY seq")]

    def state(self, pubkey_or_contact_id: ContactRef) -> ContactState | Literal["unknown"]:
        """``allowed``, ``blocked``, or ``unknown`` (not in the book)."""
        contact = self.get(pubkey_or_contact_id)
        return "unknown" if contact is None else contact.state

    def remove(self, contact: ContactRef) -> bool:
        """Forget someone (they become unknown); True if they were in the book."""
        return self._write("DELETE FROM contacts WHERE pubkey=?", (_pubkey(contact),)) > 0

    def rename(self, contact: ContactRef, name: str) -> Contact:
        pubkey = _pubkey(contact)
        name = check_name(name)
        self._require(pubkey)
        self._write("UPDATE contacts SET name=? WHERE pubkey=?", (name, pubkey))
        return self._require(pubkey)

    def _set_state(self, contact: ContactRef, state: ContactState, name: str | None) -> Contact:
        pubkey = _pubkey(contact)
        checked = "" if name is None else check_name(name)
        self._write(
            "INSERT INTO contacts (pubkey, name, state) VALUES (?, ?, ?) "
            "ON CONFLICT (pubkey) DO UPDATE SET state = excluded.state"
            + ("" if name is None else ", name = excluded.name"),
            (pubkey, checked, state),
        )
        return self._require(pubkey)

    def block(self, contact: ContactRef, name: str | None = None) -> Contact:
        """Block someone, known or not (a stranger is added as blocked)."""
        return self._set_state(contact, "blocked", name)

    def allow(self, contact: ContactRef, name: str | None = None) -> Contact:
        """Allow someone, known or not (unblocks a blocked contact)."""
        return self._set_state(contact, "allowed", name)

    # -- this node ---------------------------------------------------------------------

    def status(self) -> Status:
        """This node's presence: ``available`` (the default), ``busy`` or ``dnd``."""
        value = self._meta("status")
        if value is None:
            return "available"
        if value not in _STATUSES:
            raise StorageError(f"{self.path}: stored status {value!r} is corrupt")
        return value

    def set_status(self, status: Status) -> None:
        if status not in _STATUSES:
            raise LocalProtocolError(
                f"status is one of {', '.join(_STATUSES)}, not {status!r}"
            )
        self._set_meta("status", status)

    def accept_any(self) -> bool:
        """Whether calls from people not in the book are accepted (default: no)."""
        value = self._meta("accept_any")
        if value not in (None, 0, 1):
            raise StorageError(f"{self.path}: stored accept_any flag is corrupt")
        return value == 1

    def set_accept_any(self, accept: bool) -> None:
        if not isinstance(accept, bool):
            raise LocalProtocolError("accept_any is True or False")
        self._set_meta("accept_any", int(accept))

    def name(self) -> str | None:
        """This identity's display name, or None if it has none."""
        value = self._meta("name")
        if value is not None and not isinstance(value, str):
            raise StorageError(f"{self.path}: stored name is corrupt")
        return value

    def set_name(self, name: str | None) -> None:
        if name is None:
            self._write("DELETE FROM meta WHERE key='name'")
        else:
            self._set_meta("name", check_name(name))
