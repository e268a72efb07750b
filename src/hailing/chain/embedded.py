"""An embedded Ethereum chain: a real EVM (py-evm through eth-tester) inside this process.

The default chain of hailing, so a demo needs no node, no network and no account: create an
:class:`EmbeddedChain`, hand its :attr:`~EmbeddedChain.web3` to
:class:`hailing.chain.client.SignalingContract` and sign with one of its funded
:attr:`~EmbeddedChain.accounts`. Every transaction is mined into its own block at once.

The funded accounts are eth-tester's development keys (private keys 1, 2, 3, ...): they are
public knowledge and worth nothing outside this process. Fund any other wallet (a
rotating warp address, say) with :meth:`EmbeddedChain.fund`.

It is synchronous, like everything web3 does over this provider; from asyncio call it
through ``asyncio.to_thread`` (one thread at a time: py-evm is not thread-safe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eth_account import Account
from web3 import EthereumTesterProvider, Web3

from ..errors import LocalProtocolError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["DEFAULT_BALANCE", "EmbeddedChain"]

DEFAULT_BALANCE = 10**6 * 10**18  # wei per genesis account: a million ether


class EmbeddedChain:
    """An in-process chain with ``accounts`` funded accounts (signing keys held locally)."""

    def __init__(self, accounts: int = 4, balance: int = DEFAULT_BALANCE) -> None:
        if not 1 <= accounts <= 64:
            raise LocalProtocolError("an embedded chain has 1 to 64 funded accounts")
        if balance <= 0:
            raise LocalProtocolError("the balance of a genesis account must be positive")
        from eth_tester import EthereumTester, PyEVMBackend

        state = PyEVMBackend.generate_genesis_state(
            overrides={"balance": balance}, num_accounts=accounts
        )
        backend = PyEVMBackend(genesis_state=state)
        self.tester = EthereumTester(backend)
        self.web3: Web3 = Web3(EthereumTesterProvider(self.tester))
        self.accounts: tuple[LocalAccount, ...] = tuple(
            Account.from_key(key.to_bytes()) for key in backend.account_keys
        )

    def fund(self, address: str, wei: int) -> None:
        """Send ``wei`` from the first funded account to ``address`` (mined at once)."""
        if wei <= 0:
            raise LocalProtocolError("fund a positive amount of wei")
        payer = self.accounts[0]
        eth = self.web3.eth
        base_fee = int(eth.get_block("latest").get("baseFeePerGas", 0))
        tx: dict[str, Any] = {
            "to": Web3.to_checksum_address(address),
            "value": wei,
            "gas": 21_000,
            "maxFeePerGas": 2 * base_fee + 10**9,
            "maxPriorityFeePerGas": 10**9,
            "nonce": eth.get_transaction_count(payer.address, "pending"),
            "chainId": eth.chain_id,
        }
        signed = payer.sign_transaction(tx)
        eth.wait_for_transaction_receipt(eth.send_raw_transaction(signed.raw_transaction))

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks (to move the head, e.g. in a test)."""
        self.tester.mine_blocks(blocks)
