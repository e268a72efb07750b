# pragma version ~=0.4.3
"""
@title hailing signaling
@notice Carries sealed WebRTC offers, answers and endpoint records from a sender to a
        recipient as events. Nothing is stored: the contract has no storage at all, so a
        message costs the transaction, its calldata and one LOG3, never an SSTORE.
@dev Each event is indexed by the recipient (topic 1) and by msg.sender (topic 2), so a
     watcher asks a node for the logs of its own (rotating) addresses only. A payload is
     an opaque sealed envelope; its size is bounded by MAX_PAYLOAD, and the ABI decoder
     reverts a call whose payload is longer.
"""

# A sealed offer is 175-300 bytes (105 bytes of envelope, a 32-byte DTLS fingerprint and
# a compact SDP of 40-160 bytes); endpoint records are smaller. 512 leaves room for a few
# more ICE candidates while capping what a stranger can make a watcher download per event.
MAX_PAYLOAD: constant(uint256) = 512


event Offer:
    to: indexed(address)
    sender: indexed(address)
    payload: Bytes[MAX_PAYLOAD]


event Answer:
    to: indexed(address)
    sender: indexed(address)
    payload: Bytes[MAX_PAYLOAD]


event Endpoint:
    to: indexed(address)
    sender: indexed(address)
    payload: Bytes[MAX_PAYLOAD]


@external
def offer(to: address, payload: Bytes[MAX_PAYLOAD]):
    """
    @notice Send a sealed WebRTC offer to `to`.
    """
    log Offer(to=to, sender=msg.sender, payload=payload)


@external
def answer(to: address, payload: Bytes[MAX_PAYLOAD]):
    """
    @notice Send a sealed WebRTC answer to `to`.
    """
    log Answer(to=to, sender=msg.sender, payload=payload)


@external
def endpoint(to: address, payload: Bytes[MAX_PAYLOAD]):
    """
    @notice Send a sealed connection-info record (SIP server, WireGuard peer) to `to`.
    """
    log Endpoint(to=to, sender=msg.sender, payload=payload)
