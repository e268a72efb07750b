"""The one error tree of hailing: every error class hailing raises is defined here.

::

    HailingError
     +-- LocalProtocolError          the caller misused an API (bad argument, wrong state)
     |    +-- UsageError             a command line that lacks or misnames something (the
     |                               CLI exits 2, as for an argparse error)
     +-- RemoteProtocolError         a peer sent something invalid (carries a KRPC error code)
     |    +-- BencodeError           bytes that are not strict canonical bencode
     |    +-- MalformedMessage       a datagram that is not a KRPC message (krpc)
     |    +-- KrpcError              a KRPC error reply received from a peer
     |    +-- PutRejected            a BEP44 put a storing node refuses (dht.bep44)
     |    +-- EnvelopeError          a sealed envelope refused (signaling.envelope)
     |    |    +-- MalformedEnvelope        truncated, garbage or unparsable fields
     |    |    +-- UnknownEnvelopeVersion   a version byte this node does not speak
     |    |    +-- TamperedEnvelope         changed on the way (the outer MAC fails)
     |    |    |    +-- UnopenableEnvelope  tampered or for another key: the two look
     |    |    |                            the same (also a WrongRecipient)
     |    |    +-- WrongRecipient           sealed to another key (the outer MAC fails)
     |    |    +-- ForgedEnvelope           its sender's key did not make it
     |    |    +-- ExpiredEnvelope          past its expiry plus the clock skew
     |    |    |    +-- FutureEnvelope      timestamped too far ahead
     |    |    +-- ReplayedEnvelope         the same (sender, nonce) seen before
     |    +-- SdpError               a compact SDP blob that does not decode (signaling.sdp)
     |    +-- EndpointError          an endpoint record that is not valid (signaling.endpoint)
     |    +-- MalformedLog           a contract event log that is not a signaling event
     +-- QueryTimeout                a request got no answer in time
     |    +-- CallCancelled          the caller gave up (a sealed CANCEL) before the
     |                               call was answered (session.connections)
     +-- NotFoundError               a lookup finished without finding the value
     +-- StorageError                the data directory or a file in it is unusable or corrupt
     |    +-- CorruptStorageError    a damaged file, or not the database expected there
     +-- RelayError                  the WebSocket relay refused or lost us (signaling.ws_relay)
     |    +-- RecipientOffline       the relay has no connection for the recipient
     +-- ChainError                  the chain endpoint failed us (chain.client)
     |    +-- ChainUnavailable       the JSON-RPC endpoint cannot be reached
     |    +-- BadRpcAnswer           an answer that is not a valid JSON-RPC result
     |    +-- TransactionFailed      a transaction reverted or got no receipt in time
     +-- AuthenticationError         a peer failed its identity proof (rtc.connection)
     +-- ConnectionClosed            the connection to a peer is closed: hung up, lost, or
                                     silent past the keepalive timeout (rtc.connection)
     +-- DaemonError                 a daemon already runs for the data directory, or its
     |                               local API refused a request (hailing.daemon)
     |    +-- DaemonGone             its API cannot be reached (stopped, or never there)

The modules that raise these also export them under the same names (``from
hailing.signaling.envelope import ReplayedEnvelope`` keeps working); this module is where
they live, and ``tests/test_public_api.py`` checks that the tree above matches the classes.

Garbage from the network never escapes the receiving function: the protocol core turns it
into a KRPC error reply or drops and counts it. Local misuse raises. The CLI prints
``str(error)`` as one line, never a traceback.

This module imports nothing from hailing: every layer may import it.
"""

from __future__ import annotations

__all__ = [
    "GENERIC_ERROR",
    "METHOD_UNKNOWN",
    "PROTOCOL_ERROR",
    "SERVER_ERROR",
    "AuthenticationError",
    "BadRpcAnswer",
    "BencodeError",
    "CallCancelled",
    "ChainError",
    "ChainUnavailable",
    "ConnectionClosed",
    "CorruptStorageError",
    "DaemonError",
    "DaemonGone",
    "EndpointError",
    "EnvelopeError",
    "ExpiredEnvelope",
    "ForgedEnvelope",
    "FutureEnvelope",
    "HailingError",
    "KrpcError",
    "LocalProtocolError",
    "MalformedEnvelope",
    "MalformedLog",
    "MalformedMessage",
    "NotFoundError",
    "PutRejected",
    "QueryTimeout",
    "RecipientOffline",
    "RelayError",
    "RemoteProtocolError",
    "ReplayedEnvelope",
    "SdpError",
    "StorageError",
    "TamperedEnvelope",
    "TransactionFailed",
    "UnknownEnvelopeVersion",
    "UnopenableEnvelope",
    "UsageError",
    "WrongRecipient",
]

# KRPC error codes (BEP5)
GENERIC_ERROR = 201
SERVER_ERROR = 202
PROTOCOL_ERROR = 203
METHOD_UNKNOWN = 204


class HailingError(Exception):
    """Base class of every error hailing raises on purpose."""


class LocalProtocolError(HailingError):
    """The local caller did something the API does not allow."""


class UsageError(LocalProtocolError):
    """Wrong use of the command line found after parsing: a setting neither given nor
    configured, an unknown or ambiguous contact name. One line, exit 2 (hailing.cli)."""


class RemoteProtocolError(HailingError):
    """A remote peer sent something invalid.

    ``code`` is the KRPC error code to answer with (BEP5: 201 generic, 203 protocol,
    204 method unknown; BEP44 adds 205-207 and 301-302).
    """

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


# -- the wire: bencode, KRPC, BEP44 ----------------------------------------------------


class BencodeError(RemoteProtocolError):
    """Input is not strict canonical bencode."""


class MalformedMessage(RemoteProtocolError):
    """A datagram that is not a KRPC message; ``tid`` is set if it was readable."""

    def __init__(self, message: str, tid: bytes | None = None, code: int = PROTOCOL_ERROR):
        super().__init__(message, code)
        self.tid = tid


class KrpcError(RemoteProtocolError):
    """A peer answered a query with a KRPC error message (``y`` = ``e``)."""


class PutRejected(RemoteProtocolError):
    """A mutable ``put`` a storing node must refuse; ``code`` is the KRPC error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message, code)
        self.message = message

    def __repr__(self) -> str:
        return f"PutRejected({self.code}, {self.message!r})"


# -- envelopes (hailing.signaling.envelope) ---------------------------------------------


class EnvelopeError(RemoteProtocolError):
    """An envelope was refused. ``reason`` is its key in
    :attr:`hailing.signaling.envelope.ReplayCache.stats`."""

    reason = "invalid"


class MalformedEnvelope(EnvelopeError):
    """Truncated or garbage bytes, or authenticated fields that do not parse."""

    reason = "malformed"


class UnknownEnvelopeVersion(EnvelopeError):
    reason = "unknown_version"


class TamperedEnvelope(EnvelopeError):
    """Bytes were changed on the way (the outer MAC fails)."""

    reason = "tampered"


class WrongRecipient(EnvelopeError):
    """The envelope was sealed to another key (the outer MAC fails)."""

    reason = "wrong_recipient"


class UnopenableEnvelope(TamperedEnvelope, WrongRecipient):
    """The outer box does not open. Tampering and a different recipient look the same:
    telling them apart would need a recipient hint in clear, which observers could link."""

    reason = "unopenable"


class ForgedEnvelope(EnvelopeError):
    """The envelope opened but its sender's key did not make it (inner MAC fails)."""

    reason = "forged"


class ExpiredEnvelope(EnvelopeError):
    """Past its expiry (plus :data:`hailing.signaling.envelope.CLOCK_SKEW`)."""

    reason = "expired"


class FutureEnvelope(ExpiredEnvelope):
    """Timestamped more than :data:`hailing.signaling.envelope.CLOCK_SKEW` ahead of the
    receiver's clock."""

    reason = "future"


class ReplayedEnvelope(EnvelopeError):
    """The same envelope (sender, nonce) was opened before."""

    reason = "replayed"


# -- other signaling payloads ------------------------------------------------------------


class SdpError(RemoteProtocolError):
    """A compact SDP blob is malformed, truncated, oversized or out of range."""


class EndpointError(RemoteProtocolError):
    """A received endpoint record that does not parse or is not valid."""


class MalformedLog(RemoteProtocolError):
    """An event log that is not a well-formed signaling event (skipped and counted)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed signaling log: {reason}")
        self.reason = reason


# -- local conditions --------------------------------------------------------------------


class QueryTimeout(HailingError):
    """No answer arrived before the deadline."""


class CallCancelled(QueryTimeout):
    """The caller sent a CANCEL for the offer being answered: it hung up first."""


class NotFoundError(HailingError):
    """A lookup completed and nobody had the value."""


class StorageError(HailingError):
    """The node's data directory, or a file or database in it, cannot be used."""


class CorruptStorageError(StorageError):
    """A database file is damaged, is not a database, or has another schema: a cache
    (``dht.sqlite3``) is set aside and rebuilt; other files need the user."""


class RelayError(HailingError):
    """The relay could not be reached, refused a message, or closed the connection."""


class RecipientOffline(RelayError):
    """The relay has no connection for the recipient id."""


class ChainError(HailingError):
    """The chain endpoint failed us (unreachable, garbage answer, failed transaction)."""


class ChainUnavailable(ChainError):
    """The JSON-RPC endpoint cannot be reached."""


class BadRpcAnswer(ChainError):
    """The endpoint answered something that is not a valid JSON-RPC result."""


class TransactionFailed(ChainError):
    """A transaction reverted, or no receipt came in time."""


class AuthenticationError(HailingError):
    """The peer could not prove it holds the identity its envelope claimed."""


class ConnectionClosed(HailingError):
    """The connection to a peer is closed; ``str()`` says why (hung up, lost, silent)."""


class DaemonError(HailingError):
    """A daemon already runs for the data directory, or the daemon's local API refused a
    request (the message says why)."""


class DaemonGone(DaemonError):
    """The daemon's API could not be reached (it stopped or was never there)."""
