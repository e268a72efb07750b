"""The identity commands of the ``hailing`` CLI: ``id``, ``contact`` and ``status``.

Registered by :func:`add_identity_commands` from :mod:`hailing.cli`. Output contracts
(scripts rely on them): ``id new`` prints the contact id as its first line; ``id show``
prints it first, then ``name NAME`` when there is one; ``contact list`` prints
``<contact id> <state> <name>`` a line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import HailingError, LocalProtocolError, StorageError
from ..identity import (
    KEY_FILE,
    ContactCard,
    change_passphrase,
    contact_qr,
    format_contact_id,
    is_encrypted,
    load_identity,
    load_or_create_identity,
    make_card,
    parse_card,
    text_qr,
)
from ._recovery import with_recovery
from ._shared import (
    CONTACTS_DB,
    PASSPHRASE_ENV,
    _contact,
    _passphrase,
    add_contact_arg,
    add_data_dir,
)


async def cmd_id_new(args: argparse.Namespace) -> int:
    if (Path(args.data_dir) / KEY_FILE).exists():
        try:
            existing = load_identity(args.data_dir, _passphrase()).contact_id
        except HailingError as exc:  # encrypted (no or wrong passphrase) or damaged
            existing = f"cannot show it: {exc}"
        raise HailingError(f"{args.data_dir} already holds an identity: {existing}")
    ident = load_or_create_identity(args.data_dir, _passphrase())
    from ..services.contacts import ContactBook  # lazily: cheap startup
    with ContactBook(args.data_dir) as book:
        if args.name:
            book.set_name(args.name)
    print(ident.contact_id, flush=True)
    if sys.stderr.isatty():
        with contextlib.suppress(LocalProtocolError):
            print(contact_qr(ident.contact_id), file=sys.stderr)
    return 0


def _warn(text: str) -> None:
    print(f"hailing: warning: {text}", file=sys.stderr, flush=True)


def _display_name(data_dir: str) -> str | None:
    """This identity's display name; a contact book that cannot be read is a warning, not
    an error: the key is a file of its own, and showing it must not depend on the book."""
    if not (Path(data_dir) / CONTACTS_DB).exists():
        return None
    try:
        from ..services.contacts import ContactBook  # lazily: cheap startup
        with ContactBook(data_dir) as book:
            return book.name()
    except StorageError as exc:
        _warn(f"the display name is not shown: {with_recovery(exc)}")
        return None


async def cmd_id_show(args: argparse.Namespace) -> int:
    ident = load_identity(args.data_dir, _passphrase())
    name = _display_name(args.data_dir)
    print(ident.contact_id)
    if name:
        print(f"name {name}")
    if args.qr:
        print(contact_qr(ident.contact_id))
    return 0


NEW_PASSPHRASE_ENV = "HAILING_NEW_PASSPHRASE"


def _ask(prompt: str) -> str:
    import getpass

    return getpass.getpass(prompt)


def _new_passphrase() -> str:
    new = os.environ.get(NEW_PASSPHRASE_ENV)
    if new:
        return new
    if not sys.stdin.isatty():
        raise LocalProtocolError(f"no terminal to ask the new passphrase on: set "
                                 f"{NEW_PASSPHRASE_ENV} (or run it in a terminal)")
    new = _ask("new passphrase: ")
    if not new:
        raise LocalProtocolError("an empty passphrase: nothing changed (to store the key "
                                 "unencrypted, use --remove)")
    if _ask("new passphrase again: ") != new:
        raise LocalProtocolError("the two passphrases differ: nothing changed")
    return new


async def cmd_id_passphrase(args: argparse.Namespace) -> int:
    import asyncio

    path = Path(args.data_dir) / KEY_FILE
    encrypted = is_encrypted(args.data_dir)
    if args.remove and not encrypted:
        raise LocalProtocolError(f"{path} is not encrypted: there is no passphrase to remove")
    old = None
    if encrypted:
        old = _passphrase()
        if old is None:
            if not sys.stdin.isatty():
                raise LocalProtocolError(f"{path} is encrypted: set {PASSPHRASE_ENV} to its "
                                         "current passphrase")
            old = _ask("current passphrase: ")
    new = None if args.remove else _new_passphrase()
    if encrypted and new == old:
        raise LocalProtocolError("the new passphrase is the current one: nothing changed")
    await asyncio.to_thread(change_passphrase, args.data_dir, old, new)  # key derivation: ~1 s
    if new is None:
        print(f"{path} is now stored unencrypted; unset {PASSPHRASE_ENV}", flush=True)
    elif encrypted:
        print(f"{path} has a new passphrase; set {PASSPHRASE_ENV} to it", flush=True)
    else:
        print(f"{path} is now encrypted; set {PASSPHRASE_ENV} to its passphrase for "
              "hailing commands", flush=True)
    return 0


_MAX_CARD_FILE = 64 * 1024


def _card(text: str) -> ContactCard:
    """A card given as itself, as a file that holds it, or as ``-`` (read from stdin)."""
    if text == "-":
        text = sys.stdin.read(_MAX_CARD_FILE)
    elif "/" in text or os.path.isfile(text):  # a card has no '/': this names a file
        try:
            with open(text, encoding="utf-8", errors="replace") as f:
                text = f.read(_MAX_CARD_FILE)
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror}") from None
    try:
        return parse_card(text)
    except LocalProtocolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def cmd_id_card(args: argparse.Namespace) -> int:
    ident = load_identity(args.data_dir, _passphrase())
    name = _display_name(args.data_dir)
    rotation = None
    if not args.without_rotation:
        from ..chain.wallet import load_or_create_rotation

        secret = load_or_create_rotation(args.data_dir)
        rotation = (secret.prefix, secret.user_id)
    card = make_card(ident, name, rotation)
    print(card, flush=True)
    if args.qr:
        print(text_qr(card.upper()))
    return 0


async def cmd_contact_import(args: argparse.Namespace) -> int:
    card: ContactCard = args.card
    name = args.name or card.name
    if not name:
        raise LocalProtocolError("this card carries no name: give one with --name NAME")
    own = None
    with contextlib.suppress(HailingError):  # no identity yet, or encrypted without passphrase
        own = load_identity(args.data_dir, _passphrase()).public_key
    if own == card.public_key:
        raise LocalProtocolError("this is your own card: give it to your friends")
    from ..services.contacts import ContactBook  # lazily: cheap startup
    with ContactBook(args.data_dir) as book:
        clash = [c for c in book.list() if c.pubkey != card.public_key
                 and c.name.casefold() == name.strip().casefold()]
        if clash:
            raise LocalProtocolError(
                f"another contact is already named {clash[0].name!r} "
                f"({clash[0].contact_id[:12]}...): import with --name OTHER_NAME")
        c = book.add(card.public_key, name)
    if card.has_rotation:
        from ..signaling.store import SignalStore

        with SignalStore(args.data_dir) as store:
            store.set_rotation(card.public_key, card.rotation_prefix, card.rotation_user_id)
    print(f"{c.contact_id} {c.state} {c.name}", flush=True)
    note = ("rotation secret recorded: reachable over the DHT and the contract"
            if card.has_rotation else "the card has no rotation secret: reachable over the "
            "DHT (for the contract, ask for a card made without --without-rotation)")
    print(note, file=sys.stderr)
    return 0


async def cmd_contact(args: argparse.Namespace) -> int:
    from ..services.contacts import ContactBook  # lazily: cheap startup
    with ContactBook(args.data_dir) as book:
        action = args.contact_command
        if action == "add":
            c = book.add(args.contact, args.name)
        elif action == "block":
            c = book.block(args.contact)
        elif action == "allow":
            c = book.allow(args.contact)
        elif action == "rename":
            c = book.rename(args.contact, args.name)
        elif action == "friend":
            return _friend(book, args)
        elif action == "remove":
            if not book.remove(args.contact):
                raise HailingError("no such contact")
            print(f"removed {format_contact_id(args.contact)}")
            return 0
        else:
            for c in book.list():
                print(f"{c.contact_id} {c.state} {c.name}")
            return 0
        print(f"{c.contact_id} {c.state} {c.name}")
    return 0


def _friend(book: Any, args: argparse.Namespace) -> int:
    """``contact friend CONTACT [--off]``: mark (unmark) an allowed contact as a friend."""
    from ..services.friends import FriendBook

    c = book.get(args.contact)
    if c is None or c.blocked:
        raise HailingError("only an allowed contact can be a friend: 'hailing contact add' "
                           "(or 'allow') it first")
    with FriendBook(args.data_dir) as friends:
        friends.set_friend(c.pubkey, not args.off)
    print(f"{c.contact_id} {'not a friend' if args.off else 'friend'} {c.name}")
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    from ..services.contacts import ContactBook  # lazily: cheap startup
    with ContactBook(args.data_dir) as book:
        if args.status:
            book.set_status(args.status)
        if args.accept_any is not None:
            book.set_accept_any(args.accept_any == "on")
        print(f"status {book.status()}, accept-any {'on' if book.accept_any() else 'off'}")
    return 0


# -- parser --------------------------------------------------------------------------------


def add_identity_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    idp = sub.add_parser("id", help="create or show this node's identity")
    ids = idp.add_subparsers(dest="id_command", required=True, parser_class=parser_class, metavar="COMMAND")
    p = ids.add_parser("new", help="create an identity; prints its contact id first",
                       description="Create an identity in DIR. The first line of stdout is the "
                       f"contact id. The key is encrypted at rest if ${PASSPHRASE_ENV} is set.")
    add_data_dir(p)
    p.add_argument("--name", default=None, help="your display name")
    p.set_defaults(func=cmd_id_new)
    p = ids.add_parser("show", help="print the contact id (and name)")
    add_data_dir(p)
    p.add_argument("--qr", action="store_true", help="also print it as a QR code")
    p.set_defaults(func=cmd_id_show)
    p = ids.add_parser(
        "card", help="print your contact card: id, name and rotation secret in one string",
        description="Print one string (starting 'hlcard') that a friend imports with "
        "'hailing contact import CARD': your contact id, display name and rotation secret "
        "(what the contract path needs), signed by your key and checksummed so it cannot be "
        "mistyped. The rotation secret lets its holder link your daily addresses: give your "
        "card to friends only.")
    add_data_dir(p)
    p.add_argument("--qr", action="store_true", help="also print it as a QR code")
    p.add_argument("--without-rotation", action="store_true",
                   help="leave the rotation secret out (the DHT path needs only the id)")
    p.set_defaults(func=cmd_id_card)
    p = ids.add_parser(
        "passphrase", help="encrypt the key, change its passphrase, or (--remove) decrypt it",
        description="Encrypt the identity key with a passphrase, change it, or with --remove "
        f"store the key unencrypted. The current passphrase comes from ${PASSPHRASE_ENV} (or "
        f"a prompt), the new one from ${NEW_PASSPHRASE_ENV} (or a prompt, twice). The key "
        "file is replaced atomically (mode 600); the identity does not change. Commands "
        f"then need ${PASSPHRASE_ENV}; a running 'hailing up' keeps its key until restarted.")
    add_data_dir(p)
    p.add_argument("--remove", action="store_true",
                   help="store the key unencrypted (no passphrase)")
    p.set_defaults(func=cmd_id_passphrase)

    cp = sub.add_parser("contact", help="manage contacts (allow/block lists)")
    cs = cp.add_subparsers(dest="contact_command", required=True, parser_class=parser_class, metavar="COMMAND")
    p = cs.add_parser("add", help="add (and allow) a contact by contact id",
                      description="Add someone by contact id with a name of your choice (to "
                      "add a contact card, use 'hailing contact import').")
    p.add_argument("contact", type=_contact, metavar="CONTACT_ID")
    p.add_argument("--name", required=True)
    add_data_dir(p)
    p.set_defaults(func=cmd_contact)
    p = cs.add_parser("import", help="add a contact from their card (and record their "
                      "rotation secret)",
                      description="Add the contact a card (from 'hailing id card') names, "
                      "under the card's name or --name, and record the rotation secret it "
                      "carries: no 'rotation set' needed. Prints '<contact id> <state> "
                      "<name>'. A mistyped, truncated or altered card is refused.")
    p.add_argument("card", type=_card, metavar="CARD",
                   help="the card, a file that holds it, or - to read it from stdin")
    p.add_argument("--name", default=None, help="your name for them (default: the card's)")
    add_data_dir(p)
    p.set_defaults(func=cmd_contact_import)
    for name, help_ in (("block", "block a contact (known or not)"),
                        ("allow", "allow a contact (unblocks)"), ("remove", "forget a contact"),
                        ("rename", "give a contact another name")):
        p = cs.add_parser(name, help=help_)
        add_contact_arg(p)
        if name == "rename":
            p.add_argument("name", metavar="NEW_NAME")
        add_data_dir(p)
        p.set_defaults(func=cmd_contact)
    p = cs.add_parser(
        "friend", help="keep a link open to a contact from boot (--off: no more)",
        description="Mark an allowed contact as a friend: 'hailing up' opens (or waits for) a "
        "data-channel link to each online friend at start, re-opens a lost one, and signals "
        "later calls over it. Prints '<contact id> friend <name>' (or 'not a friend').")
    add_contact_arg(p)
    p.add_argument("--off", action="store_true", help="no longer a friend")
    add_data_dir(p)
    p.set_defaults(func=cmd_contact)
    p = cs.add_parser("list", help="list contacts: '<contact id> <state> <name>' a line")
    add_data_dir(p)
    p.set_defaults(func=cmd_contact)

    p = sub.add_parser("status", help="show or set presence (available/busy/dnd) and accept-any",
                       description="Without arguments, print the presence and accept-any. "
                       "Busy and dnd (do not disturb) callers get no answer, as if you were "
                       "offline; accept-any on takes calls from people not in your contacts "
                       "(blocked ones excepted).")
    p.add_argument("status", nargs="?", choices=("available", "busy", "dnd"),
                   help="the new presence (default: leave it as it is)")
    p.add_argument("--accept-any", choices=("on", "off"), default=None,
                   help="accept calls from people not in the contacts")
    add_data_dir(p)
    p.set_defaults(func=cmd_status)


__all__ = ["add_identity_commands"]
