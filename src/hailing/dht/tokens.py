"""Write tokens (BEP5): ``get_peers``/``get`` hand one out, ``announce_peer``/``put`` need it.

A token is a hash of the requester's IP and a secret that rotates every
:attr:`DhtConfig.token_rotation` seconds; the current and the previous secret are accepted,
so a token stays valid between one and two rotation periods (BEP5: up to 10 minutes).

Push tokens (hailing extension, docs/protocol.md "Inboxes") come from the same secrets
under another label: a listener hands the storing node a push token for the storing
node's IP in its ``hailing_listen``, and accepts a ``hailing_push`` only with it. They
are accepted for one generation longer (10 to 15 minutes), so that a listen renewed at
half its ttl (at most 5 minutes) always replaces its push token before it lapses.

Direct push tokens (docs/protocol.md, "Direct pushes") come from the push secrets under a
third label and are bound to an inbox key instead of an IP: a listener hands one, inside
a sealed envelope, to a single peer it expects a value from (a callee it calls), which
may then push that value to it straight from wherever its node runs. They are accepted
as long as push tokens are.
"""

from __future__ import annotations

import hashlib

TOKEN_BYTES = 8
#: Secret generations a write token is accepted from (current and previous: BEP5).
WRITE_GENERATIONS = 2
#: Secret generations a push token is accepted from.
PUSH_GENERATIONS = 3
_PUSH_LABEL = b"hailing push token"
_DIRECT_LABEL = b"hailing direct push"


class TokenManager:
    """Issues and checks tokens. ``rotate(new_secret)`` is called by the protocol's timer."""

    __slots__ = ("_push", "_secrets")

    def __init__(self, secret: bytes) -> None:
        self._secrets = [secret] * PUSH_GENERATIONS  # newest first
        self._push = [_push_secret(secret)] * PUSH_GENERATIONS

    def rotate(self, new_secret: bytes) -> None:
        self._secrets = [new_secret, *self._secrets[:-1]]
        self._push = [_push_secret(new_secret), *self._push[:-1]]

    def issue(self, ip_key: bytes) -> bytes:
        return _token(self._secrets[0], ip_key)

    def check(self, token: object, ip_key: bytes) -> bool:
        return _check(token, ip_key, self._secrets[:WRITE_GENERATIONS])

    def issue_push(self, ip_key: bytes) -> bytes:
        """A push token for the storing node at ``ip_key`` (sent in our listens)."""
        return _token(self._push[0], ip_key)

    def check_push(self, token: object, ip_key: bytes) -> bool:
        return _check(token, ip_key, self._push)

    def issue_direct(self, key: bytes) -> bytes:
        """A direct push token for the inbox ``key``, valid whoever pushes with it."""
        return _token(self._push[0], _DIRECT_LABEL + key)

    def check_direct(self, token: object, key: bytes) -> bool:
        return _check(token, _DIRECT_LABEL + key, self._push)


def _push_secret(secret: bytes) -> bytes:
    return hashlib.sha1(_PUSH_LABEL + secret).digest()


def _token(secret: bytes, ip_key: bytes) -> bytes:
    return hashlib.sha1(secret + ip_key).digest()[:TOKEN_BYTES]


def _check(token: object, ip_key: bytes, secrets: list[bytes]) -> bool:
    if type(token) is not bytes or len(token) != TOKEN_BYTES:
        return False
    return any(token == _token(s, ip_key) for s in secrets)
