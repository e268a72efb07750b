"""Contacts by name: what ``hailing send bob hi`` means by ``bob``.

:func:`resolve_contact` turns what a person typed into a public key:

1. a valid contact id is that key (whether or not it is in the book);
2. else the contact whose name is exactly the text, else the one whose name matches it
   ignoring case;
3. two or more such contacts: :class:`LocalProtocolError` naming each with the start of
   its contact id (use the id, or ``hailing contact rename``);
4. none: a text shaped like a contact id gets the contact id's own error (a typo: the
   checksum does not match), anything else a :class:`NotFoundError` that lists the
   likely candidates (names starting with, containing or close to the text) or, in a
   small book, every name.

Every message is one line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..errors import LocalProtocolError, NotFoundError
from ..identity import CONTACT_ID_LENGTH, parse_contact_id
from .contacts import Contact

__all__ = ["resolve_contact"]

#: A book this small is listed whole when a name is unknown.
LIST_ALL_UP_TO = 8
#: At most this many suggestions.
MAX_SUGGESTIONS = 5


def _label(c: Contact) -> str:
    return f"{c.name or '(no name)'} ({c.contact_id[:12]}...)"


def _looks_like_contact_id(text: str) -> bool:
    s = text.strip().lower()
    return s.startswith("hl") and len(s) == CONTACT_ID_LENGTH


def resolve_contact(ref: str, contacts: Iterable[Contact]) -> bytes:
    """The public key ``ref`` names: a contact id, or the name of exactly one contact."""
    if not isinstance(ref, str) or not ref.strip():
        raise LocalProtocolError("a contact is a contact id or a contact's name")
    try:
        return parse_contact_id(ref)
    except LocalProtocolError as exc:
        id_error = exc
    book = list(contacts)
    text = ref.strip()
    matches = [c for c in book if c.name == text]
    if not matches:
        folded = text.casefold()
        matches = [c for c in book if c.name.casefold() == folded]
    if len(matches) == 1:
        return matches[0].pubkey
    if matches:
        raise LocalProtocolError(
            f"{len(matches)} contacts are named {text!r}: "
            + ", ".join(_label(c) for c in matches)
            + "; give the contact id, or rename one with 'hailing contact rename'")
    if _looks_like_contact_id(text):
        raise id_error
    named = [c for c in book if c.name]
    if not named:
        raise NotFoundError(f"no contact named {text!r}: the contact book is empty (add "
                            "one: 'hailing contact import CARD' or 'hailing contact add "
                            "CONTACT_ID --name NAME')")
    folded = text.casefold()
    starts = [c for c in named if c.name.casefold().startswith(folded)]
    inside = [c for c in named if folded in c.name.casefold() and c not in starts]
    close_names = difflib.get_close_matches(folded, [c.name.casefold() for c in named],
                                            n=MAX_SUGGESTIONS, cutoff=0.6)
    close = [c for n in close_names for c in named
             if c.name.casefold() == n and c not in starts and c not in inside]
    suggestions = (starts + inside + close)[:MAX_SUGGESTIONS]
    if suggestions:
        hint = "did you mean " + ", ".join(_label(c) for c in suggestions) + "?"
    elif len(named) <= LIST_ALL_UP_TO:
        hint = "contacts: " + ", ".join(c.name for c in named)
    else:
        hint = "see 'hailing contact list'"
    raise NotFoundError(f"no contact named {text!r} (and it is not a contact id); {hint}")
