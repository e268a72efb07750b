"""Write tokens (BEP5): ``get_peers``/``get`` hand one out, ``announce_peer``/``put`` need it.

A token is a hash of the requester's IP and a secret that rotates every
:attr:`DhtConfig.token_rotation` seconds; the current and the previous secret are accepted,
so a token stays valid between one and two rotation periods (BEP5: up to 10 minutes).
"""

from __future__ import annotations

import hashlib

TOKEN_BYTES = 8


class TokenManager:
    """Issues and checks tokens. ``rotate(new_secret)`` is called by the protocol's timer."""

    __slots__ = ("_current", "_previous")

    def __init__(self, secret: bytes) -> None:
        self._current = secret
        self._previous = secret

    def rotate(self, new_secret: bytes) -> None:
        self._previous = self._current
        self._current = new_secret

    def issue(self, ip_key: bytes) -> bytes:
        return hashlib.sha1(self._current + ip_key).digest()[:TOKEN_BYTES]

    def check(self, token: object, ip_key: bytes) -> bool:
        if type(token) is not bytes or len(token) != TOKEN_BYTES:
            return False
        return token in (
            hashlib.sha1(self._current + ip_key).digest()[:TOKEN_BYTES],
            hashlib.sha1(self._previous + ip_key).digest()[:TOKEN_BYTES],
        )
