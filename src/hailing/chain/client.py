"""Client of the signaling contract over any web3 provider (embedded chain or JSON-RPC).

Theory of operation: a sender calls :meth:`SignalingContract.offer` (or ``answer``,
``endpoint``) with the recipient's address and a sealed payload; the transaction is signed
here with a local eth-account key, sent raw, and its receipt awaited. The contract emits
``Offer(to, sender, payload)`` (``Answer``, ``Endpoint``) with ``to`` and ``sender`` as
indexed topics. A recipient polls :meth:`SignalingContract.events_since` with the block
after the last one it processed and its addresses: one ``eth_getLogs`` per block range,
filtered by contract address, event topics and recipient topics. Remember
:meth:`SignalingContract.head` before asking and pass it as ``to_block`` so the next poll
starts right after it: nothing is missed and nothing is seen twice.

Logs are remote input. :func:`parse_log` reads one strictly (address, topics, ABI layout of
the payload, its padding, bounds); a log that fails is skipped and counted in
:attr:`SignalingContract.stats` by reason, never raised. Every failure of the endpoint
itself raises a :class:`ChainError`: :class:`ChainUnavailable` when it cannot be reached,
:class:`BadRpcAnswer` when it answers garbage, :class:`TransactionFailed` when a
transaction reverts or gets no receipt. Their messages are one line.

Nonces: one gas wallet may pay for several processes on a machine (a listener and a
``send``, say). Reading the pending nonce and handing the signed transaction over happen
under an exclusive lock file named after the address (in the temporary directory), so two
processes never take the same nonce; a nonce the endpoint still refuses (another machine
with the same key) is read again and the transaction re-signed, a few times. A nonce is
never knowingly reused: that could replace another sender's pending transaction.

All calls block; from asyncio use ``asyncio.to_thread``.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from eth_abi.abi import encode as abi_encode
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from ..errors import (
    BadRpcAnswer,
    ChainError,
    ChainUnavailable,
    HailingError,
    LocalProtocolError,
    MalformedLog,
    TransactionFailed,
)
from .contract import MAX_PAYLOAD, CompiledContract, signaling_contract

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "BadRpcAnswer",
    "ChainError",
    "ChainUnavailable",
    "MalformedLog",
    "Sent",
    "SignalEvent",
    "SignalKind",
    "SignalingContract",
    "TransactionFailed",
    "http_web3",
    "parse_log",
]


class SignalKind(StrEnum):
    OFFER = "offer"
    ANSWER = "answer"
    ENDPOINT = "endpoint"


EVENT_SIGNATURES = {
    SignalKind.OFFER: "Offer(address,address,bytes)",
    SignalKind.ANSWER: "Answer(address,address,bytes)",
    SignalKind.ENDPOINT: "Endpoint(address,address,bytes)",
}
_TOPIC_KIND = {bytes(Web3.keccak(text=sig)): kind for kind, sig in EVENT_SIGNATURES.items()}
_SELECTORS = {kind: bytes(Web3.keccak(text=f"{kind}(address,bytes)"))[:4] for kind in SignalKind}
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*")


@dataclass(frozen=True, slots=True)
class SignalEvent:
    """One signaling event: ``to`` and ``sender`` are EIP-55 addresses (``sender`` is the
    transaction's ``msg.sender``), ``tx_hash`` is 32 bytes."""

    kind: SignalKind
    to: str
    sender: str
    payload: bytes
    block: int
    log_index: int
    tx_hash: bytes


@dataclass(frozen=True, slots=True)
class Sent:
    """A mined transaction: its hash, the gas it used and its block."""

    tx_hash: bytes
    gas_used: int
    block: int


def http_web3(url: str, *, timeout: float = 10.0) -> Web3:
    """A :class:`Web3` on the JSON-RPC endpoint ``url`` (http or https), no silent retries."""
    if not url.startswith(("http://", "https://")):
        raise LocalProtocolError(f"a JSON-RPC URL starts with http:// or https://: {url!r}")
    provider = HTTPProvider(
        url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
    )
    return Web3(provider)


def _bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and _HEX.fullmatch(value):
        return bytes.fromhex(value[2:])
    raise MalformedLog(f"{what} is not bytes")


def _uint(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedLog(f"{what} is not an integer")
    if isinstance(value, str):
        if not re.fullmatch(r"0x[0-9a-fA-F]{1,16}", value):
            raise MalformedLog(f"{what} is not an integer")
        value = int(value, 16)
    if not 0 <= value < 2**63:
        raise MalformedLog(f"{what} is out of range")
    return value


def _topic_address(topic: object, what: str) -> str:
    raw = _bytes(topic, what)
    if len(raw) != 32 or any(raw[:12]):
        raise MalformedLog(f"{what} is not an address topic")
    return Web3.to_checksum_address(raw[12:])


def parse_log(log: Mapping[str, Any], contract: str) -> SignalEvent:
    """Read one ``eth_getLogs`` entry as a :class:`SignalEvent` of ``contract``.

    Raises :class:`MalformedLog` (and nothing else) for anything else: a log of another
    contract, a removed (reorged) log, unknown or missing topics, a payload whose ABI
    layout, length or padding is wrong.
    """
    if not isinstance(log, Mapping):
        raise MalformedLog("not an object")
    try:
        address = _bytes(log.get("address"), "address")
        if address != bytes.fromhex(contract[2:]):
            raise MalformedLog("foreign contract")
        if log.get("removed", False) is not False:
            raise MalformedLog("removed")
        topics = log.get("topics")
        if not isinstance(topics, list | tuple) or len(topics) != 3:
            raise MalformedLog("topic count")
        kind = _TOPIC_KIND.get(_bytes(topics[0], "event topic"))
        if kind is None:
            raise MalformedLog("unknown event")
        to = _topic_address(topics[1], "recipient")
        sender = _topic_address(topics[2], "sender")
        data = _bytes(log.get("data"), "data")
        if len(data) < 64:
            raise MalformedLog("truncated data")
        if int.from_bytes(data[:32], "big") != 32:
            raise MalformedLog("bad offset")
        length = int.from_bytes(data[32:64], "big")
        if length > MAX_PAYLOAD:
            raise MalformedLog("oversized payload")
        if len(data) != 64 + -(-length // 32) * 32:
            raise MalformedLog("data length")
        if any(data[64 + length :]):
            raise MalformedLog("nonzero padding")
        tx_hash = _bytes(log.get("transactionHash"), "transaction hash")
        if len(tx_hash) != 32:
            raise MalformedLog("transaction hash length")
        return SignalEvent(
            kind=kind,
            to=to,
            sender=sender,
            payload=data[64 : 64 + length],
            block=_uint(log.get("blockNumber"), "block number"),
            log_index=_uint(log.get("logIndex"), "log index"),
            tx_hash=tx_hash,
        )
    except MalformedLog:
        raise
    except Exception as exc:  # a hostile mapping (odd __eq__, __getitem__...): still a log
        raise MalformedLog(f"unreadable ({type(exc).__name__})") from None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, Web3RPCError):  # the message of the JSON-RPC error object
        error = (exc.rpc_response or {}).get("error")
        if isinstance(error, dict) and error.get("message"):
            exc = Exception(error["message"])
    text = " ".join(str(exc).split()) or type(exc).__name__
    for pattern, short in (
        (r"Connection refused", "connection refused"),
        (r"Name or service not known|nodename nor servname", "unknown host"),
        (r"timed out|Timeout", "timed out"),
    ):
        if re.search(pattern, text):
            return short
    return text if len(text) <= 160 else text[:157] + "..."


def _endpoint(web3: Web3) -> str:
    uri = getattr(web3.provider, "endpoint_uri", None)
    return str(uri) if uri else type(web3.provider).__name__


@contextmanager
def _rpc(web3: Web3, what: str) -> Iterator[None]:
    """Turn every failure of the endpoint into a one-line :class:`ChainError`.

    This is the boundary to a remote process: web3 and its formatters raise a wide set of
    exceptions (requests', OSError, ValueError, KeyError, its own Web3Exception tree) on
    unreachable endpoints and garbage answers; all become ChainError subclasses.
    """
    try:
        yield
    except HailingError:
        raise
    except OSError as exc:  # requests' ConnectionError/Timeout/HTTPError are OSErrors too
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(status, int):
            raise BadRpcAnswer(f"{what} failed: {_endpoint(web3)} answered HTTP {status}") from None
        raise ChainUnavailable(
            f"cannot reach the JSON-RPC endpoint {_endpoint(web3)}: {_one_line(exc)}"
        ) from None
    except Exception as exc:
        raise BadRpcAnswer(f"{what} failed at {_endpoint(web3)}: {_one_line(exc)}") from None


def _checked_address(value: str, what: str) -> ChecksumAddress:
    if not isinstance(value, str) or not Web3.is_address(value):
        raise LocalProtocolError(f"{what} is not an Ethereum address: {value!r}")
    return Web3.to_checksum_address(value)


def _transact(web3: Web3, account: LocalAccount, to: str | None, data: bytes,
              timeout: float) -> tuple[Sent, Mapping[str, Any]]:
    """Sign ``data`` (a call of ``to``, or a deployment) with ``account``, send, await."""
    eth = web3.eth
    with _rpc(web3, "sending a transaction"):
        tx: dict[str, Any] = {
            "from": account.address,
            "data": data,
            "value": 0,
            "chainId": int(eth.chain_id),
        }
        if to is not None:
            tx["to"] = to
        base_fee = eth.get_block("latest").get("baseFeePerGas")
        if base_fee is None:
            tx["gasPrice"] = int(eth.gas_price)
        else:
            tx["maxPriorityFeePerGas"] = 10**9
            tx["maxFeePerGas"] = 2 * int(base_fee) + 10**9
        try:
            gas = int(eth.estimate_gas(tx))  # type: ignore[arg-type]
        except Exception as exc:  # a revert, or e.g. a sender without the funds for the gas
            if isinstance(exc, OSError):
                raise
            # eth-tester raises its own TransactionFailed("execution reverted: ...")
            reverts = isinstance(exc, ContractLogicError) or "execution reverted" in str(exc)
            raise TransactionFailed(
                f"the transaction would {'revert' if reverts else 'fail'}: {_one_line(exc)}"
            ) from None
        tx["gas"] = gas + gas // 10
        tx_hash = _send_with_fresh_nonce(web3, account, tx)
        try:
            receipt = eth.wait_for_transaction_receipt(HexBytes(tx_hash), timeout=timeout,
                                                       poll_latency=0.05)
        except Exception as exc:
            if isinstance(exc, OSError):
                raise
            raise TransactionFailed(
                f"no receipt for 0x{tx_hash.hex()} within {timeout:g} s: {_one_line(exc)}"
            ) from None
        status, gas_used, block = receipt["status"], receipt["gasUsed"], receipt["blockNumber"]
        if not all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (status, gas_used, block)):
            raise BadRpcAnswer(f"a malformed receipt from {_endpoint(web3)}")
    if status != 1:
        raise TransactionFailed(f"transaction 0x{tx_hash.hex()} reverted")
    return Sent(tx_hash, gas_used, block), receipt


#: How many times a transaction is re-signed with a fresh nonce when the endpoint refuses it.
NONCE_ATTEMPTS = 4
_NONCE_CONFLICT = re.compile(r"nonce too low|already known|underpriced|nonce.*(used|low)", re.I)
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextmanager
def nonce_lock(address: str) -> Iterator[None]:
    """Hold the nonce of ``address`` exclusively: against other threads of this process
    and, through a lock file, against other processes of this machine."""
    with _thread_locks_guard:
        lock = _thread_locks.setdefault(address, threading.Lock())
    path = os.path.join(tempfile.gettempdir(), f"hailing-nonce-{address.lower()}.lock")
    with lock:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # e.g. another user's lock file: this process's lock still holds
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def _send_with_fresh_nonce(web3: Web3, account: LocalAccount, tx: dict[str, Any]) -> bytes:
    """Read the pending nonce, sign and hand over ``tx``, under :func:`nonce_lock`;
    re-read and re-sign when the endpoint says the nonce is taken."""
    eth = web3.eth
    for attempt in range(NONCE_ATTEMPTS):
        with nonce_lock(account.address):
            tx["nonce"] = int(eth.get_transaction_count(account.address, "pending"))
            signed = account.sign_transaction(tx)
            try:
                return bytes(eth.send_raw_transaction(signed.raw_transaction))
            except Exception as exc:
                if attempt + 1 == NONCE_ATTEMPTS or not _NONCE_CONFLICT.search(_one_line(exc)):
                    raise
    raise AssertionError("unreachable")  # pragma: no cover


class SignalingContract:
    """The signaling contract deployed at ``address`` on ``web3``'s chain.

    ``receipt_timeout`` bounds the wait for a transaction's receipt; ``max_block_range``
    the blocks one ``eth_getLogs`` spans (public endpoints refuse large ranges).
    """

    def __init__(self, web3: Web3, address: str, *, receipt_timeout: float = 120.0,
                 max_block_range: int = 2_000) -> None:
        if max_block_range < 1:
            raise LocalProtocolError("max_block_range is at least 1")
        self.web3 = web3
        self.address = _checked_address(address, "the contract address")
        self.receipt_timeout = receipt_timeout
        self.max_block_range = max_block_range
        self.stats: Counter[str] = Counter()  # logs skipped, by MalformedLog reason

    @classmethod
    def deploy(cls, web3: Web3, account: LocalAccount, *,
               compiled: CompiledContract | None = None, timeout: float = 120.0) -> str:
        """Deploy the contract (``compiled``, by default :func:`signaling_contract`) from
        ``account`` and return its EIP-55 address."""
        code = (compiled or signaling_contract()).bytecode
        _sent, receipt = _transact(web3, account, None, code, timeout)
        address = receipt.get("contractAddress")
        if not isinstance(address, str) or not Web3.is_address(address):
            raise BadRpcAnswer(f"a deployment receipt without an address from {_endpoint(web3)}")
        return Web3.to_checksum_address(address)

    @property
    def skipped_logs(self) -> int:
        """How many logs this client skipped as malformed or not asked for."""
        return sum(self.stats.values())

    def check_code(self) -> None:
        """Raise :class:`ChainError` unless the address holds this contract's code."""
        with _rpc(self.web3, "reading the contract code"):
            code = bytes(self.web3.eth.get_code(self.address))
        if code != signaling_contract().runtime:
            raise ChainError(f"no hailing signaling contract at {self.address}")

    def head(self) -> int:
        """The number of the chain's latest block."""
        with _rpc(self.web3, "reading the block number"):
            number = self.web3.eth.block_number
        # 2**48 blocks is millions of years of any chain: more is garbage, and would make
        # events_since walk an endless range
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 2**48:
            raise BadRpcAnswer(f"a malformed block number from {_endpoint(self.web3)}")
        return number

    def send(self, kind: SignalKind, to: str, payload: bytes, from_account: LocalAccount) -> Sent:
        """Send one ``kind`` message to ``to``, signed by ``from_account``; wait until mined."""
        recipient = _checked_address(to, "the recipient")
        if not isinstance(payload, bytes) or not 0 < len(payload) <= MAX_PAYLOAD:
            raise LocalProtocolError(f"a payload is 1 to {MAX_PAYLOAD} bytes")
        data = _SELECTORS[SignalKind(kind)] + abi_encode(["address", "bytes"],
                                                         [recipient, payload])
        sent, _receipt = _transact(self.web3, from_account, self.address, data,
                                   self.receipt_timeout)
        return sent

    def offer(self, to: str, payload: bytes, from_account: LocalAccount) -> Sent:
        return self.send(SignalKind.OFFER, to, payload, from_account)

    def answer(self, to: str, payload: bytes, from_account: LocalAccount) -> Sent:
        return self.send(SignalKind.ANSWER, to, payload, from_account)

    def endpoint(self, to: str, payload: bytes, from_account: LocalAccount) -> Sent:
        return self.send(SignalKind.ENDPOINT, to, payload, from_account)

    def events_since(self, block: int, to_addresses: Iterable[str], *,
                     to_block: int | None = None) -> list[SignalEvent]:
        """The events for ``to_addresses`` in blocks ``block`` .. ``to_block`` (default:
        the head), oldest first. Malformed or unasked-for logs are skipped and counted."""
        wanted = {_checked_address(a, "a recipient") for a in to_addresses}
        if block < 0:
            raise LocalProtocolError("block numbers are not negative")
        last = self.head() if to_block is None else to_block
        if not wanted or block > last:
            return []
        topics: list[Any] = [
            ["0x" + t.hex() for t in _TOPIC_KIND],
            ["0x" + bytes.fromhex(a[2:]).rjust(32, b"\0").hex() for a in sorted(wanted)],
        ]
        events: dict[tuple[int, int], SignalEvent] = {}
        for start in range(block, last + 1, self.max_block_range):
            end = min(start + self.max_block_range - 1, last)
            with _rpc(self.web3, "fetching logs"):
                logs: Any = self.web3.eth.get_logs({"address": self.address, "fromBlock": start,
                                                    "toBlock": end, "topics": topics})
            if not isinstance(logs, list | tuple):
                raise BadRpcAnswer(f"eth_getLogs answered a non-list at {_endpoint(self.web3)}")
            for log in logs:
                try:
                    event = parse_log(log, self.address)
                    if event.to not in wanted:
                        raise MalformedLog("unasked recipient")
                    if not start <= event.block <= end:
                        raise MalformedLog("block out of range")
                except MalformedLog as exc:
                    self.stats[exc.reason] += 1
                    continue
                events[(event.block, event.log_index)] = event
        return [events[key] for key in sorted(events)]
