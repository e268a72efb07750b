"""KRPC (BEP5): messages, their strict codec, and compact node/peer info (BEP5, BEP32)."""

from ._codec import decode_message, encode_message
from ._compact import (
    COMPACT_NODE_V4,
    COMPACT_NODE_V6,
    AddressCodec,
    IPAddressCodec,
    decode_nodes,
    encode_nodes,
)
from ._messages import Error, Message, Query, Response

__all__ = [
    "COMPACT_NODE_V4",
    "COMPACT_NODE_V6",
    "AddressCodec",
    "Error",
    "IPAddressCodec",
    "Message",
    "Query",
    "Response",
    "decode_message",
    "decode_nodes",
    "encode_message",
    "encode_nodes",
]
