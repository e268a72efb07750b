"""The one error tree of hailing.

::

    HailingError
     +-- LocalProtocolError      the caller misused an API (bad argument, wrong state)
     +-- RemoteProtocolError     a peer sent something invalid (carries a KRPC error code)
     |    +-- BencodeError       bytes that are not strict canonical bencode
     |    +-- KrpcError          a KRPC error reply received from a peer
     |    +-- EnvelopeError      a sealed envelope that is forged, tampered, expired,
     |    |                      replayed or not for us (hailing.signaling.envelope)
     |    +-- SdpError           a compact SDP blob that does not decode (signaling.sdp)
     +-- QueryTimeout           a request got no answer in time
     +-- NotFoundError          a lookup finished without finding the value
     +-- StorageError           the node's data directory is unusable or corrupt
     +-- RelayError             the WebSocket relay refused or lost us (signaling.ws_relay)
     +-- AuthenticationError    a peer failed its identity proof (rtc.connection)
     +-- ConnectionClosed       the data channel to a peer is closed: hung up, lost, or
                                silent past the keepalive timeout (rtc.connection)

Garbage from the network never escapes the receiving function: the protocol core turns it
into a KRPC error reply or drops and counts it. Local misuse raises. The CLI prints
``str(error)`` as one line, never a traceback.
"""

from __future__ import annotations

__all__ = [
    "BencodeError",
    "ConnectionClosed",
    "HailingError",
    "KrpcError",
    "LocalProtocolError",
    "NotFoundError",
    "QueryTimeout",
    "RemoteProtocolError",
    "StorageError",
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


class RemoteProtocolError(HailingError):
    """A remote peer sent something invalid.

    ``code`` is the KRPC error code to answer with (BEP5: 201 generic, 203 protocol,
    204 method unknown; BEP44 adds 205-207 and 301-302).
    """

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class BencodeError(RemoteProtocolError):
    """Input is not strict canonical bencode."""


class KrpcError(RemoteProtocolError):
    """A peer answered a query with a KRPC error message (``y`` = ``e``)."""


class QueryTimeout(HailingError):
    """No answer arrived before the deadline."""


class NotFoundError(HailingError):
    """A lookup completed and nobody had the value."""


class StorageError(HailingError):
    """The node's data directory or database cannot be used."""


class ConnectionClosed(HailingError):
    """The connection to a peer is closed; ``str()`` says why (hung up, lost, silent)."""
