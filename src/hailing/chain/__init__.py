"""Ethereum: the signaling contract, its client, and an embedded chain.

:class:`SignalingContract` sends sealed offers, answers and endpoint records as contract
events and reads them back; :class:`EmbeddedChain` is an in-process EVM for demos and
tests; any JSON-RPC node (anvil, geth) works through :func:`http_web3`. Wallets
(:mod:`hailing.chain.wallet`): secp256k1 keys, warpwallet derivation, daily rotation.
"""

# Imported on first use: web3, eth-tester and vyper take a second to import, and most
# hailing commands (and the wallet CLI) never need them.
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "BadRpcAnswer": "client",
    "ChainError": "client",
    "ChainUnavailable": "client",
    "CompiledContract": "contract",
    "DEFAULT_SKEW": "wallet",
    "EmbeddedChain": "embedded",
    "MAX_PAYLOAD": "contract",
    "MalformedLog": "client",
    "ROTATION_FILE": "wallet",
    "RotatingWallets": "wallet",
    "RotationSecret": "wallet",
    "Sent": "client",
    "SignalEvent": "client",
    "SignalKind": "client",
    "SignalingContract": "client",
    "TransactionFailed": "client",
    "Wallet": "wallet",
    "compile_vyper": "contract",
    "daily_passphrase": "wallet",
    "daily_wallet": "wallet",
    "http_web3": "client",
    "load_or_create_rotation": "wallet",
    "load_rotation": "wallet",
    "new_prefix": "wallet",
    "new_user_id": "wallet",
    "parse_log": "client",
    "signaling_contract": "contract",
    "utc_day": "wallet",
    "warp_private_key": "wallet",
    "warp_wallet": "wallet",
    "watch_days": "wallet",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
