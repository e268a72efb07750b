"""hailing: serverless WebRTC for decentralized social networks.

::

    import hailing

    async with hailing.Peer("alice", bootstrap=[("127.0.0.1", 6881)]) as alice:
        conn = await alice.connect(bob_contact_id)   # a hailing.Connection
        await conn.send_text("hello")

The names below are the public API. They are imported on first use, so ``import hailing``
stays fast and pulls in neither aiortc nor web3 nor PyNaCl: ``hailing.Peer`` loads the
WebRTC stack, ``hailing.DhtNode`` only the DHT.

- Peers and connections: :class:`Peer`, :class:`Connection`, and the events they produce
  (:class:`CallEvent`, :class:`TextMessage`, :class:`FileStarted`, :class:`FileReceived`,
  :class:`FileAborted`).
- Media for Python peers: :class:`Playback` (a file's tracks for ``connect(tracks=...)``)
  and :class:`CallMedia` (records or drops a connection's received ``conn.tracks``).
- Identity: :class:`Identity` (an ed25519 key and its contact id).
- The DHT: :class:`DhtNode` (asyncio UDP node), :class:`DhtProtocol` (the sans-IO core),
  :class:`DhtConfig`, :class:`NodeInfo`, BEP44 :class:`ImmutableItem` / :class:`MutableItem`.
- Errors: :class:`HailingError` and its tree (drawn in :mod:`hailing.errors`).
"""

from __future__ import annotations

from importlib import import_module

# Not ``from typing import TYPE_CHECKING``: typing alone costs more than the rest of this
# module. Type checkers treat any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .dht import DhtConfig, DhtProtocol, NodeInfo
    from .dht.bep44 import ImmutableItem, MutableItem
    from .errors import (
        AuthenticationError,
        BadRpcAnswer,
        BencodeError,
        CallCancelled,
        ChainError,
        ChainUnavailable,
        ConnectionClosed,
        CorruptStorageError,
        DaemonError,
        DaemonGone,
        EndpointError,
        EnvelopeError,
        ExpiredEnvelope,
        ForgedEnvelope,
        FutureEnvelope,
        HailingError,
        KrpcError,
        LocalProtocolError,
        MalformedEnvelope,
        MalformedLog,
        MalformedMessage,
        NotFoundError,
        PutRejected,
        QueryTimeout,
        RecipientOffline,
        RelayError,
        RemoteProtocolError,
        ReplayedEnvelope,
        SdpError,
        StorageError,
        TamperedEnvelope,
        TransactionFailed,
        UnknownEnvelopeVersion,
        UnopenableEnvelope,
        UsageError,
        WrongRecipient,
    )
    from .identity import Identity
    from .node import DhtNode
    from .peer import CallEvent, Peer
    from .rtc.connection import Connection, FileAborted, FileReceived, FileStarted, TextMessage
    from .rtc.media import CallMedia, Playback

__version__ = "0.1.0"

_ERRORS = (
    "AuthenticationError BadRpcAnswer BencodeError CallCancelled ChainError ChainUnavailable"
    " ConnectionClosed CorruptStorageError DaemonError DaemonGone EndpointError"
    " EnvelopeError ExpiredEnvelope ForgedEnvelope FutureEnvelope HailingError KrpcError"
    " LocalProtocolError MalformedEnvelope MalformedLog MalformedMessage NotFoundError"
    " PutRejected QueryTimeout RecipientOffline RelayError RemoteProtocolError"
    " ReplayedEnvelope SdpError StorageError TamperedEnvelope TransactionFailed"
    " UnknownEnvelopeVersion UnopenableEnvelope UsageError WrongRecipient"
)

#: Where each public name lives (module, relative to this package).
_WHERE: dict[str, str] = {
    "CallEvent": ".peer",
    "CallMedia": ".rtc.media",
    "Connection": ".rtc.connection",
    "DhtConfig": ".dht",
    "DhtNode": ".node",
    "DhtProtocol": ".dht",
    "FileAborted": ".rtc.connection",
    "FileReceived": ".rtc.connection",
    "FileStarted": ".rtc.connection",
    "Identity": ".identity",
    "ImmutableItem": ".dht.bep44",
    "MutableItem": ".dht.bep44",
    "NodeInfo": ".dht",
    "Peer": ".peer",
    "Playback": ".rtc.media",
    "TextMessage": ".rtc.connection",
    **dict.fromkeys(_ERRORS.split(), ".errors"),
}

__all__ = [
    "AuthenticationError",
    "BadRpcAnswer",
    "BencodeError",
    "CallCancelled",
    "CallEvent",
    "CallMedia",
    "ChainError",
    "ChainUnavailable",
    "Connection",
    "ConnectionClosed",
    "CorruptStorageError",
    "DaemonError",
    "DaemonGone",
    "DhtConfig",
    "DhtNode",
    "DhtProtocol",
    "EndpointError",
    "EnvelopeError",
    "ExpiredEnvelope",
    "FileAborted",
    "FileReceived",
    "FileStarted",
    "ForgedEnvelope",
    "FutureEnvelope",
    "HailingError",
    "Identity",
    "ImmutableItem",
    "KrpcError",
    "LocalProtocolError",
    "MalformedEnvelope",
    "MalformedLog",
    "MalformedMessage",
    "MutableItem",
    "NodeInfo",
    "NotFoundError",
    "Peer",
    "Playback",
    "PutRejected",
    "QueryTimeout",
    "RecipientOffline",
    "RelayError",
    "RemoteProtocolError",
    "ReplayedEnvelope",
    "SdpError",
    "StorageError",
    "TamperedEnvelope",
    "TextMessage",
    "TransactionFailed",
    "UnknownEnvelopeVersion",
    "UnopenableEnvelope",
    "UsageError",
    "WrongRecipient",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
