"""Identities, contact ids and the keystore.

::

    ident = load_or_create_identity("node1", passphrase=None)
    ident.contact_id                      # 'hl...' (60 characters) to share
    print(contact_qr(ident.contact_id))   # the same as a terminal QR code
    card = make_card(ident, "alice", (prefix, user_id))   # id + name + rotation, signed
    parse_card(card).contact_id           # checked (checksum) and verified (signature)

The contact book (names, allow/block lists, presence) is a service above this layer:
:mod:`hailing.services.contacts`.

An :class:`Identity` is an ed25519 key; its X25519 key for encryption is derived from it.
The envelope (:mod:`hailing.signaling.envelope`) seals messages between identities.
"""

from ._card import CARD_PREFIX, ContactCard, make_card, parse_card
from ._keys import (
    CONTACT_ID_LENGTH,
    Identity,
    contact_qr,
    format_contact_id,
    parse_contact_id,
    qr_matrix,
    text_qr,
    verify_signature,
    x25519_public_key,
)
from ._keystore import (
    KEY_FILE,
    PASSPHRASE_ENV,
    change_passphrase,
    is_encrypted,
    load_identity,
    load_or_create_identity,
)

__all__ = [
    "CARD_PREFIX",
    "CONTACT_ID_LENGTH",
    "KEY_FILE",
    "PASSPHRASE_ENV",
    "ContactCard",
    "Identity",
    "change_passphrase",
    "contact_qr",
    "format_contact_id",
    "is_encrypted",
    "load_identity",
    "load_or_create_identity",
    "make_card",
    "parse_card",
    "parse_contact_id",
    "qr_matrix",
    "text_qr",
    "verify_signature",
    "x25519_public_key",
]
