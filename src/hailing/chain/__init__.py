"""Ethereum: the signaling contract, its client, and an embedded chain.

:class:`SignalingContract` sends sealed offers, answers and endpoint records as contract
events and reads them back; :class:`EmbeddedChain` is an in-process EVM for demos and
tests; any JSON-RPC node (anvil, geth) works through :func:`http_web3`. Wallets
(:mod:`hailing.chain.wallet`): secp256k1 keys, warpwallet derivation, daily rotation.
"""

from .client import (
    BadRpcAnswer,
    ChainError,
    ChainUnavailable,
    MalformedLog,
    Sent,
    SignalEvent,
    SignalingContract,
    SignalKind,
    TransactionFailed,
    http_web3,
    parse_log,
)
from .contract import MAX_PAYLOAD, CompiledContract, compile_vyper, signaling_contract
from .embedded import EmbeddedChain
from .wallet import (
    DEFAULT_SKEW,
    ROTATION_FILE,
    RotatingWallets,
    RotationSecret,
    Wallet,
    daily_passphrase,
    daily_wallet,
    load_or_create_rotation,
    load_rotation,
    new_prefix,
    new_user_id,
    utc_day,
    warp_private_key,
    warp_wallet,
    watch_days,
)

__all__ = [
    "DEFAULT_SKEW",
    "MAX_PAYLOAD",
    "ROTATION_FILE",
    "BadRpcAnswer",
    "ChainError",
    "ChainUnavailable",
    "CompiledContract",
    "EmbeddedChain",
    "MalformedLog",
    "RotatingWallets",
    "RotationSecret",
    "Sent",
    "SignalEvent",
    "SignalKind",
    "SignalingContract",
    "TransactionFailed",
    "Wallet",
    "compile_vyper",
    "daily_passphrase",
    "daily_wallet",
    "http_web3",
    "load_or_create_rotation",
    "load_rotation",
    "new_prefix",
    "new_user_id",
    "parse_log",
    "signaling_contract",
    "utc_day",
    "warp_private_key",
    "warp_wallet",
    "watch_days",
]
