"""The services layer: the contact book's change detection and the call policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from hailing.identity import Identity
from hailing.services import CallPolicy, ContactBook

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))
CAROL = Identity.from_seed(bytes(range(2, 34)))


@pytest.mark.parametrize(
    ("state", "status", "accept_any", "verdict"),
    [
        ("allowed", "available", False, "accepted"),
        ("unknown", "available", False, "unknown caller"),
        ("unknown", "available", True, "accepted"),
        ("blocked", "available", True, "blocked"),
        ("allowed", "busy", False, "busy"),
        ("allowed", "dnd", False, "do-not-disturb"),
        ("blocked", "dnd", False, "blocked"),  # a block is told apart first (for logs)
        ("unknown", "dnd", True, "do-not-disturb"),
    ],
)
def test_policy_verdicts(tmp_path: Path, state: str, status: str, accept_any: bool,
                         verdict: str) -> None:
    with ContactBook(tmp_path) as book:
        if state == "allowed":
            book.add(BOB.public_key, "bob")
        elif state == "blocked":
            book.block(BOB.public_key)
        book.set_status(status)  # type: ignore[arg-type]
        book.set_accept_any(accept_any)
        assert CallPolicy(book).admit(BOB.public_key) == verdict
        # The override (hailing listen --accept-any) wins over the book's setting.
        assert CallPolicy(book, accept_any=not accept_any).accept_any() is (not accept_any)


def test_policy_allowed_lists_contacts_not_blocked(tmp_path: Path) -> None:
    with ContactBook(tmp_path) as book:
        book.add(BOB.public_key, "bob")
        book.block(CAROL.public_key)
        policy = CallPolicy(book)
        assert policy.allowed() == [BOB.public_key]
        assert policy.may_send_endpoint(BOB.public_key)
        assert not policy.may_send_endpoint(CAROL.public_key)
        assert not policy.may_send_endpoint(ALICE.public_key)


def test_book_version_changes_on_any_writer(tmp_path: Path) -> None:
    """Another connection (another process: ``hailing contact add`` while ``listen``
    runs) and the book's own writes both change its version; reading does not."""
    with ContactBook(tmp_path) as running, ContactBook(tmp_path) as other:
        v0 = running.version()
        running.list()
        assert running.version() == v0
        other.add(BOB.public_key, "bob")
        v1 = running.version()
        assert v1 != v0
        running.add(CAROL.public_key, "carol")
        assert running.version() != v1


def test_book_version_ignores_the_signaling_tables(tmp_path: Path) -> None:
    """The signaling store shares peer.sqlite3 and writes on every envelope handled: that
    must not look like a contact-book change (a refresh each time)."""
    from hailing.signaling.store import SignalStore

    with ContactBook(tmp_path) as book, SignalStore(tmp_path) as store:
        v0 = book.version()
        assert store.record_handling(b"n" * 32, 2000.0, 1000.0) is None
        store.set_cursor("x", 5)
        assert book.version() == v0
        book.set_status("busy")
        v1 = book.version()
        assert v1 != v0
        with ContactBook(tmp_path) as other:
            other.set_accept_any(True)
            other.set_name("bob")
            other.set_name(None)
            other.remove(BOB.public_key)  # not in the book: no change
        assert book.version() == v1 + 3
