"""Warp wallets and daily-rotating Ethereum addresses (seed 000, section 4).

Theory of operation
-------------------

The WarpWallet derivation is keybase's (https://keybase.io/warp), unchanged::

    s1  = scrypt(key=passphrase||0x01, salt=salt||0x01, N=2^18, r=8, p=1, dkLen=32)
    s2  = PBKDF2-HMAC-SHA256(key=passphrase||0x02, salt=salt||0x02, c=2^16, dkLen=32)
    key = s1 XOR s2                    (passphrase and salt encoded as UTF-8)

and only the last step is adapted: the wallet is the Ethereum account of that secp256k1
private key, its address EIP-55 checksummed. The private key is the same as keybase's
Bitcoin wallet for the same inputs, which is how the tests check it against keybase's
published vectors.

A user's address of the day (seed 000): ``passphrase = prefix + "YYYY-MM-DD"`` (the prefix
verbatim, the UTC date appended with no separator) and ``salt = user_id``. Friends exchange
``(prefix, user_id)`` (a :class:`RotationSecret`) when they befriend, so each can compute
the other's address of any day while the chain sees unlinkable addresses.

scrypt at these parameters needs 256 MiB and about a second. :class:`RotatingWallets`
derives each (prefix, user id, day) once, in a worker thread (at most ``max_parallel`` at a
time, to bound memory), shares one derivation among concurrent callers and keeps the
results in a bounded LRU cache. :func:`watch_days` says which days a watcher follows: today
(UTC) and, within ``skew`` of midnight, the neighbouring day, so a peer whose clock is a
few minutes off still finds the address.

Bad arguments raise :class:`LocalProtocolError`; an unusable rotation file raises
:class:`StorageError` naming the file, which is never overwritten.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._secrets import private_dir, read_secret, write_secret
from ..errors import LocalProtocolError, StorageError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "DEFAULT_SKEW",
    "ROTATION_FILE",
    "RotatingWallets",
    "RotationSecret",
    "Wallet",
    "daily_passphrase",
    "daily_wallet",
    "load_or_create_rotation",
    "load_rotation",
    "new_prefix",
    "new_user_id",
    "utc_day",
    "warp_private_key",
    "warp_wallet",
    "watch_days",
]

# keybase WarpWallet parameters (https://keybase.io/warp, test/spec.json "params")
WARP_SCRYPT_N = 2**18
WARP_SCRYPT_R = 8
WARP_SCRYPT_P = 1
WARP_PBKDF2_ROUNDS = 2**16
WARP_DKLEN = 32
# OpenSSL needs 128*r*(N+2) + 128*r*p bytes (just over 256 MiB); leave 1 MiB of slack.
_SCRYPT_MAXMEM = 128 * WARP_SCRYPT_R * (WARP_SCRYPT_N + 2 + WARP_SCRYPT_P) + 2**20

#: The order of secp256k1's group (SEC 2, section 2.4.1): private keys are 1 .. N-1.
SECPK1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAX_SECRET_BYTES = 1024  # passphrase, salt (UTF-8)
MAX_PREFIX_CHARS = 256
MAX_USER_ID_CHARS = 256
DEFAULT_SKEW = timedelta(minutes=15)
MAX_SKEW = timedelta(hours=12)
ROTATION_FILE = "rotation.json"
_ROTATION_VERSION = 1
_MAX_ROTATION_FILE = 4096


@dataclass(frozen=True, slots=True)
class Wallet:
    """A secp256k1 wallet: ``private_key`` (64 lowercase hex, not shown by repr) and its
    EIP-55 ``address``."""

    private_key: str = field(repr=False)
    address: str

    @classmethod
    def from_private_key(cls, key: bytes) -> Wallet:
        if not isinstance(key, bytes) or len(key) != 32:
            raise LocalProtocolError("a secp256k1 private key is 32 bytes")
        if not 0 < int.from_bytes(key, "big") < SECPK1_N:
            raise LocalProtocolError("not a valid secp256k1 private key (zero or >= the group order)")
        from eth_keys.datatypes import PrivateKey  # eth-keys takes 0.2 s to import

        address = PrivateKey(key).public_key.to_checksum_address()
        return cls(private_key=key.hex(), address=str(address))

    @property
    def private_key_bytes(self) -> bytes:
        return bytes.fromhex(self.private_key)

    def account(self) -> LocalAccount:
        """The eth-account signer of this wallet (for transactions)."""
        from eth_account import Account

        account: LocalAccount = Account.from_key(self.private_key_bytes)
        return account


# -- the warp derivation -------------------------------------------------------------


def _utf8(value: object, what: str, *, allow_empty: bool) -> bytes:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{what} must be text, got {type(value).__name__}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{what} is not valid Unicode text") from None
    if not raw and not allow_empty:
        raise LocalProtocolError(f"{what} must not be empty")
    if len(raw) > MAX_SECRET_BYTES:
        raise LocalProtocolError(f"{what} is {len(raw)} bytes; at most {MAX_SECRET_BYTES}")
    return raw


def _warp_seeds(passphrase: bytes, salt: bytes) -> tuple[bytes, bytes]:
    s1 = hashlib.scrypt(passphrase + b"\x01", salt=salt + b"\x01", n=WARP_SCRYPT_N,
                        r=WARP_SCRYPT_R, p=WARP_SCRYPT_P, dklen=WARP_DKLEN, maxmem=_SCRYPT_MAXMEM)
    s2 = hashlib.pbkdf2_hmac("sha256", passphrase + b"\x02", salt + b"\x02",
                             WARP_PBKDF2_ROUNDS, WARP_DKLEN)
    return s1, s2


def warp_private_key(passphrase: str, salt: str) -> bytes:
    """keybase's WarpWallet private key (32 bytes) for ``passphrase`` and ``salt``.

    Blocks for about a second and uses 256 MiB: call it in a thread from async code
    (:class:`RotatingWallets` does).
    """
    p = _utf8(passphrase, "passphrase", allow_empty=False)
    s = _utf8(salt, "salt", allow_empty=True)
    s1, s2 = _warp_seeds(p, s)
    key = bytes(a ^ b for a, b in zip(s1, s2, strict=True))
    if not 0 < int.from_bytes(key, "big") < SECPK1_N:  # probability ~2^-128
        raise LocalProtocolError("this passphrase and salt give no valid key; change either")
    return key


def warp_wallet(passphrase: str, salt: str) -> Wallet:
    """The Ethereum wallet of :func:`warp_private_key` (blocking, about a second)."""
    return Wallet.from_private_key(warp_private_key(passphrase, salt))


# -- daily rotation ------------------------------------------------------------------


def _check_text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{what} must be text, got {type(value).__name__}")
    if not value:
        raise LocalProtocolError(f"{what} must not be empty")
    if len(value) > limit:
        raise LocalProtocolError(f"{what} is {len(value)} characters; at most {limit}")
    if not value.isprintable():
        raise LocalProtocolError(f"{what} contains control or unprintable characters")
    _utf8(value, what, allow_empty=False)
    return value


def check_prefix(prefix: object) -> str:
    """``prefix`` if it can be a passphrase prefix, else :class:`LocalProtocolError`."""
    return _check_text(prefix, "passphrase prefix", MAX_PREFIX_CHARS)


def check_user_id(user_id: object) -> str:
    """``user_id`` if it can be a user id (a warp salt), else :class:`LocalProtocolError`."""
    value = _check_text(user_id, "user id", MAX_USER_ID_CHARS)
    if any(c.isspace() for c in value):
        raise LocalProtocolError("user id must not contain spaces")
    return value


def _check_day(day: object) -> date:
    if not isinstance(day, date) or isinstance(day, datetime):
        raise LocalProtocolError(f"day must be a datetime.date, got {type(day).__name__}")
    return day


def _random_token() -> str:
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def new_user_id() -> str:
    """A fresh random user id: 128 bits, 26 lowercase base32 characters."""
    return _random_token()


def new_prefix() -> str:
    """A fresh random passphrase prefix: 128 bits, 26 lowercase base32 characters."""
    return _random_token()


def daily_passphrase(prefix: str, day: date) -> str:
    """The warp passphrase of ``day``: ``prefix`` followed by ``YYYY-MM-DD``."""
    return check_prefix(prefix) + _check_day(day).isoformat()


def daily_wallet(prefix: str, user_id: str, day: date) -> Wallet:
    """A user's wallet of ``day`` (UTC): ``warp(prefix + "YYYY-MM-DD", user_id)``. Blocking."""
    return warp_wallet(daily_passphrase(prefix, day), check_user_id(user_id))


def utc_day(now: datetime) -> date:
    """The UTC date of ``now`` (a timezone-aware datetime): the day a sender uses."""
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise LocalProtocolError("now must be a timezone-aware datetime")
    return now.astimezone(UTC).date()


def watch_days(now: datetime, skew: timedelta = DEFAULT_SKEW) -> list[date]:
    """The UTC days whose addresses a watcher follows at ``now``, oldest first.

    Today, plus yesterday when less than ``skew`` after midnight UTC, or tomorrow when at
    most ``skew`` before it. ``skew`` is between zero and 12 hours.
    """
    today = utc_day(now)
    if not isinstance(skew, timedelta) or not timedelta(0) <= skew < MAX_SKEW:
        raise LocalProtocolError("skew must be a timedelta between 0 and 12 hours")
    utc_now = now.astimezone(UTC)
    midnight = datetime.combine(today, time(0), UTC)
    days = [today]
    with contextlib.suppress(OverflowError):
        if utc_now - midnight < skew:
            days.insert(0, today - timedelta(days=1))
        if midnight + timedelta(days=1) - utc_now <= skew:
            days.append(today + timedelta(days=1))
    return days


_Key = tuple[str, str, date]


class RotatingWallets:
    """Daily wallets derived once per (prefix, user id, day), off the event loop.

    ``await get(prefix, user_id, day)`` returns the cached wallet or starts one derivation
    (``derive``, by default :func:`daily_wallet`) in a worker thread; concurrent callers
    for the same key await the same derivation, and one caller being cancelled does not
    cancel it for the others. A failed derivation is not cached: the next call retries.
    At most ``max_parallel`` derivations run at once (each needs 256 MiB) and at most
    ``max_entries`` wallets are kept (least recently used dropped first).
    """

    def __init__(self, derive: Callable[[str, str, date], Wallet] = daily_wallet, *,
                 max_entries: int = 1024, max_parallel: int = 2) -> None:
        if max_entries < 1 or max_parallel < 1:
            raise LocalProtocolError("max_entries and max_parallel must be at least 1")
        self._derive = derive
        self._max_entries = max_entries
        self._max_parallel = max_parallel
        self._cache: OrderedDict[_Key, Wallet] = OrderedDict()
        self._pending: dict[_Key, asyncio.Task[Wallet]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_parallel)
        self.derivations = 0  # derivations started, for tests and stats

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, prefix: str, user_id: str, day: date) -> Wallet | None:
        """The wallet if it is already derived, without deriving it."""
        return self._cache.get((prefix, user_id, day))

    def prune_before(self, day: date) -> int:
        """Forget the wallets of days before ``day``; how many were dropped."""
        old = [k for k in self._cache if k[2] < _check_day(day)]
        for k in old:
            del self._cache[k]
        return len(old)

    async def get(self, prefix: str, user_id: str, day: date) -> Wallet:
        key = (check_prefix(prefix), check_user_id(user_id), _check_day(day))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # tasks and semaphores belong to one loop
            self._loop, self._pending = loop, {}
            self._slots = asyncio.Semaphore(self._max_parallel)
        task = self._pending.get(key)
        if task is None:
            task = loop.create_task(self._fill(key))
            task.add_done_callback(_consume_exception)
            self._pending[key] = task
        return await asyncio.shield(task)

    async def watched(self, prefix: str, user_id: str, now: datetime,
                      skew: timedelta = DEFAULT_SKEW) -> dict[date, Wallet]:
        """The wallets of :func:`watch_days` (``now``, ``skew``) for one user."""
        days = watch_days(now, skew)
        wallets = await asyncio.gather(*(self.get(prefix, user_id, d) for d in days))
        return dict(zip(days, wallets, strict=True))

    async def _fill(self, key: _Key) -> Wallet:
        try:
            async with self._slots:
                self.derivations += 1
                wallet = await asyncio.to_thread(self._derive, *key)
            self._cache[key] = wallet
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
            return wallet
        finally:
            self._pending.pop(key, None)


def _consume_exception(task: asyncio.Task[Wallet]) -> None:
    # Waiters get the exception through shield(); this only marks it retrieved so that a
    # derivation whose waiters were all cancelled does not log "never retrieved".
    if not task.cancelled():
        task.exception()


# -- the user's own rotation secret on disk ------------------------------------------


@dataclass(frozen=True, slots=True)
class RotationSecret:
    """What a user shares with friends: the passphrase ``prefix`` (hidden from repr) and
    the random ``user_id``."""

    prefix: str = field(repr=False)
    user_id: str

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        check_user_id(self.user_id)

    @classmethod
    def new(cls) -> RotationSecret:
        return cls(prefix=new_prefix(), user_id=new_user_id())

    def wallet_for(self, day: date) -> Wallet:
        """This user's wallet of ``day`` (blocking, about a second)."""
        return daily_wallet(self.prefix, self.user_id, day)


def _rotation_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / ROTATION_FILE


def _parse_rotation(path: Path, data: bytes) -> RotationSecret:
    def corrupt(why: str) -> StorageError:
        return StorageError(f"{path} is corrupt ({why}); it was left untouched")

    try:
        obj: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise corrupt("not JSON") from None
    if not isinstance(obj, dict):
        raise corrupt("not a JSON object")
    if obj.get("version") != _ROTATION_VERSION:
        raise corrupt(f"unknown version {obj.get('version')!r}")
    prefix, user_id = obj.get("prefix"), obj.get("user_id")
    if not isinstance(prefix, str) or not isinstance(user_id, str):
        raise corrupt("prefix and user_id must be strings")
    try:
        return RotationSecret(prefix=prefix, user_id=user_id)
    except LocalProtocolError as exc:
        raise corrupt(str(exc)) from None


def load_rotation(data_dir: str | os.PathLike[str]) -> RotationSecret:
    """The rotation secret of ``data_dir``; :class:`StorageError` if missing or unusable."""
    path = _rotation_path(data_dir)
    data = read_secret(path, limit=_MAX_ROTATION_FILE, missing_ok=True)  # mode 0600 or refused
    if data is None:
        raise StorageError(f"no rotation secret in {path.parent}: {path} does not exist")
    return _parse_rotation(path, data)


def load_or_create_rotation(data_dir: str | os.PathLike[str]) -> RotationSecret:
    """This user's rotation secret, created in ``data_dir`` (file mode 0600) if missing.

    An existing file is never overwritten: a corrupt one is a :class:`StorageError`.
    """
    directory = private_dir(data_dir)
    path = _rotation_path(directory)
    if not os.path.lexists(path):
        secret = RotationSecret.new()
        body = {"version": _ROTATION_VERSION, "prefix": secret.prefix, "user_id": secret.user_id}
        if write_secret(path, (json.dumps(body, indent=1) + "\n").encode("utf-8"),
                        overwrite=False):
            return secret
    return load_rotation(directory)  # it existed, or another process just created it
