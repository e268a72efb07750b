"""The contract rendezvous backend: offers, answers and endpoint records as contract events.

Theory of operation
-------------------
Every user has a rotation secret ``(prefix, user id)`` (:mod:`hailing.chain.wallet`) and
gives it to friends when they befriend (:meth:`SignalStore.set_rotation`). A friend's
address of the day is ``warp(prefix + "YYYY-MM-DD", user id)``: only friends can compute
it, and an observer cannot link two days' addresses.

:meth:`ContractRendezvous.send` derives the recipient's address of today (UTC) once per
day (scrypt, in a worker thread, cached by :class:`RotatingWallets`) and calls
``offer``/``answer``/``endpoint`` on the contract with the sealed envelope as payload; a
funded gas wallet pays (``gas_key``). The envelope, not ``msg.sender``, says who sent it.

The watcher (:meth:`ContractRendezvous.watch`, run by the session's supervisor through
:class:`hailing.session.coupler.ContractCoupler`, or by :meth:`~ContractRendezvous.start`
for direct use) polls ``eth_getLogs`` for this
user's own addresses (today's, and the neighbouring day's within ``skew`` of midnight)
every ``poll_interval`` seconds, from the block after the last one it processed up to the
head; it puts each payload into the sink (the session's router opens, checks and
de-duplicates the envelopes) and, once the consumer has handled them all (``task_done``), saves the next
block in the data directory (:class:`SignalStore`), so offers sent while the node was down
are read after a restart, once. When the chain
endpoint fails the watcher counts it (``stats["rpc_errors"]``), keeps the error as one
line in :attr:`ContractRendezvous.last_error`, posts a :class:`ChainStatus` to
:attr:`~ContractRendezvous.status_events`, backs off (doubling up to ``max_backoff``) and
resumes where it stopped when the endpoint answers again.

Chain calls block (web3); they run in worker threads. The embedded chain (py-evm) is not
thread-safe: every call to it holds one lock (:func:`open_chain`). Nonces of one gas
wallet never collide, in this process or across processes: the client takes them under
:func:`hailing.chain.client.nonce_lock`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ..chain.client import Sent, SignalingContract, SignalKind, _rpc, http_web3
from ..chain.wallet import (
    DEFAULT_SKEW,
    RotatingWallets,
    RotationSecret,
    load_or_create_rotation,
    utc_day,
    watch_days,
)
from ..errors import HailingError, LocalProtocolError
from ..identity import Identity, format_contact_id
from .store import SignalStore

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from ..chain.embedded import EmbeddedChain

__all__ = ["EMBEDDED", "ChainLink", "ChainStatus", "ContractRendezvous", "embedded_contract",
           "gas_account", "open_chain"]

log = logging.getLogger("hailing.contract")
T = TypeVar("T")

EMBEDDED = "embedded"  # rpc_url for the in-process chain shared by this process
DEFAULT_POLL = 1.0
DEFAULT_MAX_BACKOFF = 8.0
#: How long a poll waits for the sink's consumer to handle what it was given before the
#: cursor is saved (otherwise it is saved at a later poll).
HANDOFF_TIMEOUT = 5.0
#: When the chain's head falls below the saved cursor (a restarted or reset chain), the
#: watcher reads again from this many blocks before the new head.
REWIND_BLOCKS = 1024
#: ``gas_key`` value meaning: pay from this node's own wallet of the day (its msg.sender
#: then proves the sender to friends, who can compute that address).
ROTATING = "rotating"
#: msg.sender of recently fed payloads, kept to check the payer's wallet (paid_by).
SENDERS_MEMORY = 4096
#: On the embedded chain, a node's wallet of the day is topped up to this (wei).
EMBEDDED_TOP_UP = 10**18


@dataclass(frozen=True)
class ChainLink:
    """A chain endpoint: its web3, the lock its calls need (embedded only) and the
    accounts this process may pay gas from without a key (embedded only)."""

    web3: Web3
    url: str
    lock: threading.Lock | None = None
    funded: tuple[LocalAccount, ...] = ()


_shared: dict[str, Any] = {}
_shared_lock = threading.Lock()


def _embedded() -> tuple[EmbeddedChain, threading.Lock]:
    with _shared_lock:
        if "chain" not in _shared:
            from ..chain.embedded import EmbeddedChain

            _shared["chain"] = EmbeddedChain(accounts=8)
            _shared["lock"] = threading.Lock()
        return _shared["chain"], _shared["lock"]


def open_chain(rpc_url: str, *, timeout: float = 10.0) -> ChainLink:
    """``embedded`` (this process's shared in-process EVM) or an http(s) JSON-RPC URL.

    Blocking (creating the embedded chain takes a second): call it in a thread."""
    if rpc_url == EMBEDDED:
        chain, lock = _embedded()
        return ChainLink(chain.web3, EMBEDDED, lock, chain.accounts)
    return ChainLink(http_web3(rpc_url, timeout=timeout), rpc_url)


def _embedded_top_up(address: str) -> None:
    """Fund ``address`` on the shared embedded chain when it runs low (a dev chain's
    faucet; on a real chain the user funds the wallet of the day)."""
    chain, _lock = _embedded()  # the caller holds the lock (ContractRendezvous._call)
    if int(chain.web3.eth.get_balance(address)) < EMBEDDED_TOP_UP // 10:  # type: ignore[arg-type]
        chain.fund(address, EMBEDDED_TOP_UP)


def embedded_contract() -> str:
    """The signaling contract on the shared embedded chain, deployed on first use."""
    chain, lock = _embedded()
    with lock:
        if "contract" not in _shared:
            _shared["contract"] = SignalingContract.deploy(chain.web3, chain.accounts[0])
        address: str = _shared["contract"]
        return address


def gas_account(gas_key: str | bytes | None, link: ChainLink) -> LocalAccount | None:
    """The wallet that pays for transactions: ``gas_key`` (32 bytes or 64 hex digits),
    else the link's first funded account (embedded chain), else LocalProtocolError.
    ``"rotating"`` gives None: the node pays from its own wallet of the day."""
    from eth_account import Account

    if gas_key == ROTATING:
        return None

    if gas_key is None:
        if link.funded:
            return link.funded[0]
        raise LocalProtocolError("sending on this chain needs a funded wallet: give --gas-key "
                                 "HEX (or HAILING_GAS_KEY)")
    raw = gas_key
    if isinstance(raw, str):
        try:
            raw = bytes.fromhex(raw.removeprefix("0x"))
        except ValueError:
            raw = b""
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise LocalProtocolError("a gas key is a secp256k1 private key: 64 hex digits")
    try:
        account: LocalAccount = Account.from_key(raw)
    except Exception:  # eth-keys' ValidationError: zero or >= the group order
        raise LocalProtocolError("the gas key is not a valid secp256k1 private key") from None
    return account


@dataclass(frozen=True)
class ChainStatus:
    """The chain endpoint went down (``up`` False, ``error`` one line) or came back."""

    up: bool
    error: str | None
    at: float = field(default_factory=time.time)


class ContractRendezvous:
    """A rendezvous backend over the signaling contract (see the module docstring).

    :meth:`prepare` then :meth:`watch` (or :meth:`start`, both at once, the watcher in a
    task of its own), :meth:`expect_from`, :meth:`refresh`, :meth:`send`,
    :meth:`aclose`. Build one with :meth:`open`.
    """

    def __init__(self, contract: SignalingContract, identity: Identity, store: SignalStore,
                 rotation: RotationSecret, gas: LocalAccount | None, *,
                 lock: threading.Lock | None = None, wallets: RotatingWallets | None = None,
                 clock: Callable[[], float] = time.time, poll_interval: float = DEFAULT_POLL,
                 max_backoff: float = DEFAULT_MAX_BACKOFF, skew: timedelta = DEFAULT_SKEW,
                 scope: str = "watch", require_wallet: bool = False,
                 top_up: Callable[[str], None] | None = None) -> None:
        if not 0 < poll_interval <= max_backoff:
            raise LocalProtocolError("0 < poll_interval <= max_backoff")
        self.contract = contract
        self.identity = identity
        self.store = store
        self.rotation = rotation
        self.gas = gas  # None: our own wallet of the day pays
        #: Refuse contract-borne envelopes whose transaction was not paid by the sender's
        #: own wallet of the day (the seed's authentication by wallet); see paid_by.
        self.require_wallet = require_wallet
        self._top_up = top_up
        self._senders: OrderedDict[bytes, str] = OrderedDict()
        self.wallets = wallets if wallets is not None else RotatingWallets()
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.skew = skew
        self.scope = scope
        self.stats: Counter[str] = Counter()
        self.sent: list[Sent] = []  # this node's transactions, oldest first
        self.last_error: str | None = None
        self.status_events: asyncio.Queue[ChainStatus] = asyncio.Queue(maxsize=100)
        self._lock = lock
        self._clock = clock
        self._addresses: list[str] = []
        self._days: list[date] = []
        self._cursor_key = ""
        self._cursor = 0
        self._saved = -1  # the cursor on disk
        self._sink: asyncio.Queue[bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, data_dir: str | os.PathLike[str], identity: Identity,
                   store: SignalStore, *, rpc_url: str, contract_address: str | None = None,
                   gas_key: str | bytes | None = None, **options: Any) -> ContractRendezvous:
        """Connect to ``rpc_url`` (``embedded`` or http(s)); the contract at
        ``contract_address`` (on the embedded chain: deployed if None); gas paid by
        ``gas_key``. The rotation secret is ``data_dir``'s (created if missing)."""
        link = await asyncio.to_thread(open_chain, rpc_url)
        if contract_address is None:
            if link.url != EMBEDDED:
                raise LocalProtocolError("give the contract address (--contract ADDR, or record "
                                         "it with 'hailing contract deploy --data-dir DIR')")
            contract_address = await asyncio.to_thread(embedded_contract)
        contract = SignalingContract(link.web3, contract_address, receipt_timeout=60.0)
        if link.url == EMBEDDED and gas_key == ROTATING:
            options.setdefault("top_up", _embedded_top_up)
        return cls(contract, identity, store, load_or_create_rotation(data_dir),
                   gas_account(gas_key, link), lock=link.lock, **options)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, sink: asyncio.Queue[bytes]) -> None:
        """:meth:`prepare`, then run :meth:`watch` in a task this object owns (cancelled
        by :meth:`aclose`)."""
        await self.prepare(sink)
        self._task = asyncio.ensure_future(self.watch())

    async def prepare(self, sink: asyncio.Queue[bytes]) -> None:
        """Check the contract, load the cursor, derive today's addresses; payloads will
        go to ``sink``. Raises :class:`ChainError` (one line) if the endpoint or
        contract is unusable."""
        self._sink = sink
        await self._call(self.contract.check_code)
        chain_id = await self._call(self._chain_id)
        self._cursor_key = f"{chain_id}:{self.contract.address}:{self.scope}"
        stored = self.store.cursor(self._cursor_key)
        if stored is None:  # first start: from the current head on
            stored = await self._call(self.contract.head)
            self.store.set_cursor(self._cursor_key, stored)
        self._cursor = self._saved = stored
        await self.refresh()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # gather, not suppress(BaseException): a cancellation of aclose's caller
            # (a stop given up) must reach it
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @property
    def next_block(self) -> int:
        """The first block the next poll reads."""
        return self._cursor

    @property
    def addresses(self) -> list[str]:
        """The addresses watched (this user's, today and near midnight the neighbour)."""
        return list(self._addresses)

    # -- the backend interface ---------------------------------------------------------------

    async def refresh(self) -> int:
        """Recompute the watched addresses (a new day); returns how many."""
        now = self._now()
        days = watch_days(now, self.skew)
        self._addresses = list(await asyncio.gather(
            *(self._derive(self.rotation, d) for d in days)))
        self._days = days
        self.wallets.prune_before(utc_day(now) - timedelta(days=1))
        return len(self._addresses)

    async def expect_from(self, peer_pub: bytes) -> None:
        """Derive (and cache) the address of ``peer_pub`` before calling it; raises
        :class:`LocalProtocolError` when its rotation secret is unknown."""
        await self._address_of(peer_pub)

    async def send(self, peer_pub: bytes, blob: bytes, *, public: bool = False,
                   kind: str = "offer") -> int:
        """Send ``blob`` to ``peer_pub``'s address of today as an ``offer``, ``answer`` or
        ``endpoint`` event; returns 1 once mined. ``public`` is ignored: strangers have
        no address to write to."""
        try:
            signal = SignalKind(kind)
        except ValueError:
            raise LocalProtocolError(f"a contract message is offer, answer or endpoint, "
                                     f"not {kind!r}") from None
        to = await self._address_of(peer_pub)
        payer = await self.payer()
        sent = await self._call(self._transact, payer, signal, to, blob)
        self.stats["tx_" + signal.value] += 1
        self.sent.append(sent)
        return 1

    # -- watching ------------------------------------------------------------------------------

    async def poll_once(self) -> int:
        """Read the blocks since the last poll; returns how many payloads went to the sink."""
        if self._sink is None:
            raise LocalProtocolError("the contract rendezvous is not started")
        if watch_days(self._now(), self.skew) != self._days:  # a new day, or near midnight
            await self.refresh()
        head = await self._call(self.contract.head)
        if head + 1 < self._cursor:
            # The chain is lower than where we stopped reading: it was restarted or reset
            # (same contract address, new history). Waiting for it to grow past the old
            # cursor would skip everything sent meanwhile: read it again from near its
            # start (the record of handled envelopes keeps anything from ringing twice).
            rewound = max(0, head + 1 - REWIND_BLOCKS)
            log.warning("the chain is at block %d, below the saved cursor %d (restarted?): "
                        "watching again from block %d", head, self._cursor, rewound)
            self.stats["chain_rewound"] += 1
            self._cursor = self._saved = rewound
            self.store.set_cursor(self._cursor_key, rewound)
        if head < self._cursor:
            self.stats["polls"] += 1
            await self._save_cursor()
            return 0
        start, addresses = self._cursor, list(self._addresses)
        events = await self._call(lambda: self.contract.events_since(start, addresses,
                                                                     to_block=head))
        fed = 0
        for ev in events:
            self.stats["events_" + ev.kind.value] += 1
            self._senders[hashlib.sha256(ev.payload).digest()] = ev.sender
            while len(self._senders) > SENDERS_MEMORY:
                self._senders.popitem(last=False)
            await self._sink.put(ev.payload)  # a full sink slows the watcher, drops nothing
            fed += 1
        self._cursor = head + 1
        self.stats["polls"] += 1
        await self._save_cursor()
        return fed

    async def _save_cursor(self) -> None:
        """The cursor on disk moves only once the sink's consumer has handled everything
        it was given (``task_done``): a crash in between reads those blocks again after
        the restart, and the record of handled envelopes keeps anything from being
        handled twice. If the consumer is slow, a later poll saves it."""
        assert self._sink is not None
        if self._saved == self._cursor:
            return
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
            # cancellation that arrives as the join ends, and the watcher, cancelled by
            # the session's aclose, would then poll forever (a Peer.stop that never ends)
            async with asyncio.timeout(HANDOFF_TIMEOUT):
                await self._sink.join()
        except TimeoutError:
            self.stats["cursor_deferred"] += 1
            return
        self.store.set_cursor(self._cursor_key, self._cursor)
        self._saved = self._cursor

    async def watch(self) -> None:
        """Poll forever (see the module docstring); errors are counted, reported and
        retried, never raised."""
        delay = self.poll_interval
        while True:
            try:
                await self.poll_once()
            except HailingError as exc:
                self._down(str(exc))
                delay = min(delay * 2, self.max_backoff)
            except Exception as exc:  # a bug: keep watching, but say so
                log.exception("contract watcher failed")
                self._down(f"{type(exc).__name__}: {exc}")
                delay = min(delay * 2, self.max_backoff)
            else:
                if self.last_error is not None:
                    self.stats["rpc_recoveries"] += 1
                    log.warning("chain endpoint back: watching from block %d", self._cursor)
                    self.last_error = None
                    self._post(ChainStatus(True, None))
                delay = self.poll_interval
            await asyncio.sleep(delay)

    def _down(self, error: str) -> None:
        self.stats["rpc_errors"] += 1
        if self.last_error is None:
            log.warning("chain endpoint lost: %s (retrying)", error)
            self._post(ChainStatus(False, error))
        self.last_error = error

    def _post(self, status: ChainStatus) -> None:
        if self.status_events.full():
            self.status_events.get_nowait()
        self.status_events.put_nowait(status)

    # -- helpers ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _address_of(self, peer_pub: bytes) -> str:
        secret = self.store.rotation(peer_pub)
        if secret is None:
            raise LocalProtocolError(
                f"no rotation secret for {format_contact_id(peer_pub)}: exchange (user id, "
                "prefix) and record it ('hailing rotation set')")
        return await self._derive(secret, utc_day(self._now()))

    async def _derive(self, secret: RotationSecret, day: date) -> str:
        """The address of ``secret`` on ``day``: from the store's cache, else derived
        (scrypt, in a thread) and cached."""
        cached = self.store.cached_address(secret, day)
        if cached is not None:
            return cached
        wallet = await self.wallets.get(secret.prefix, secret.user_id, day)
        self.store.cache_address(secret, day, wallet.address)
        self.stats["derivations"] += 1
        return wallet.address

    def _chain_id(self) -> int:
        with _rpc(self.contract.web3, "reading the chain id"):
            return int(self.contract.web3.eth.chain_id)

    def _transact(self, payer: LocalAccount, kind: SignalKind, to: str, blob: bytes) -> Sent:
        return self.contract.send(kind, to, blob, payer)  # nonces: client.nonce_lock

    async def payer(self) -> LocalAccount:
        """The account paying for our transactions: the gas wallet, or our own wallet of
        today (derived once a day; on the embedded chain topped up when low)."""
        if self.gas is not None:
            return self.gas
        wallet = await self.wallets.get(self.rotation.prefix, self.rotation.user_id,
                                        utc_day(self._now()))
        if self._top_up is not None:
            await self._call(self._top_up, wallet.address)
        return wallet.account()

    async def paid_by(self, sender_pub: bytes, payload: bytes) -> bool | None:
        """Whether the transaction that carried ``payload`` was paid (``msg.sender``) by
        ``sender_pub``'s own wallet of the day (or of the neighbouring day near midnight).
        None when the payload did not come from this watcher; False when the sender's
        rotation secret is unknown or another wallet paid."""
        msg_sender = self._senders.get(hashlib.sha256(payload).digest())
        if msg_sender is None:
            return None
        secret = self.store.rotation(sender_pub)
        if secret is None:
            return False
        for day in watch_days(self._now(), self.skew):
            if await self._derive(secret, day) == msg_sender:
                return True
        return False

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        lock = self._lock

        def run() -> T:
            if lock is None:
                return fn(*args)
            with lock:
                return fn(*args)

        return await asyncio.to_thread(run)
