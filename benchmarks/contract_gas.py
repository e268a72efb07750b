"""Gas per signaling message, beside the gas of storing the same bytes, in the same run.

For each chain (the embedded py-evm chain, and anvil when it can be found or installed)
(``anvil:cancun`` runs anvil at an older hardfork, before EIP-7623) and each payload size (default 175 and 300 bytes, the range of a compact sealed offer),
this deploys the signaling contract and a storage contract compiled from the same Vyper,
then sends ``offer``, ``answer`` and ``endpoint`` messages and ``store`` calls with the
same random-looking payload (sealed envelopes look random), and reads ``gasUsed`` from the
receipts. ``store`` keeps the payload in a ``HashMap[address, Bytes[512]]``: ``store_new``
writes a fresh slot (what a message kept in storage would cost), ``store_overwrite``
rewrites one. Each result also gives the calldata and its EIP-7623 floor (Prague prices
calldata at least 10 gas per zero byte and 40 per non-zero byte, and that floor, not the
contract's work, decides the price of a large message).

Target (issue 5): a compact sealed offer costs at most 35,000 gas.

    python benchmarks/contract_gas.py [--chains embedded,anvil,anvil:cancun] [--sizes 175,300]
                                      [--repeats 3] [--seed 5] [--out FILE]

Prints one JSON document on stdout (and to --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as abi_encode
from web3 import Web3

from hailing.chain import EmbeddedChain, SignalingContract, compile_vyper
from hailing.chain.client import _transact

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest_chain import Anvil, anvil_binary

TARGET_OFFER_GAS = 35_000
STORE_SOURCE = """\
# pragma version ~=0.4.3
# Benchmark only: keeps each payload in contract storage, for comparison with events.
MAX_PAYLOAD: constant(uint256) = 512
stored: public(HashMap[address, Bytes[MAX_PAYLOAD]])

@external
def store(to: address, payload: Bytes[MAX_PAYLOAD]):
    self.stored[to] = payload
"""
STORE_SELECTOR = bytes(Web3.keccak(text="store(address,bytes)"))[:4]


def calldata_costs(data: bytes) -> dict[str, int]:
    zeros = data.count(0)
    nonzero = len(data) - zeros
    return {
        "calldata_bytes": len(data),
        "calldata_zero_bytes": zeros,
        "intrinsic_gas": 21_000 + 16 * nonzero + 4 * zeros,
        "eip7623_floor_gas": 21_000 + 10 * (zeros + 4 * nonzero),
    }


def measure_chain(web3: Web3, accounts: list[Any], sizes: list[int], repeats: int,
                  seed: int) -> dict[str, Any]:
    """Deploy both contracts on ``web3`` and measure; ``accounts``: two funded keys."""
    sender, other = accounts
    signaling = SignalingContract(web3, SignalingContract.deploy(web3, sender))
    store_code = compile_vyper(STORE_SOURCE)
    store_address = SignalingContract.deploy(web3, sender, compiled=store_code)
    rng = random.Random(seed)
    results: dict[str, Any] = {}
    for size in sizes:
        payload = bytes(rng.randrange(1, 256) for _ in range(size))  # no zero byte: worst case
        row: dict[str, Any] = {}
        for kind in ("offer", "answer", "endpoint"):
            gas = [signaling.send(kind, other.address, payload, sender).gas_used  # type: ignore[arg-type]
                   for _ in range(repeats)]
            row[kind] = {"gas": gas, "median": statistics.median(gas)}
        new, overwrite = [], []
        for _ in range(repeats):
            recipient = Web3.to_checksum_address(rng.randbytes(20))
            data = STORE_SELECTOR + abi_encode(["address", "bytes"], [recipient, payload])
            new.append(_transact(web3, sender, store_address, data, 120.0)[0].gas_used)
            overwrite.append(_transact(web3, sender, store_address, data, 120.0)[0].gas_used)
        row["store_new"] = {"gas": new, "median": statistics.median(new)}
        row["store_overwrite"] = {"gas": overwrite, "median": statistics.median(overwrite)}
        offer_data = bytes(Web3.keccak(text="offer(address,bytes)"))[:4] + abi_encode(
            ["address", "bytes"], [other.address, payload])
        row["offer_calldata"] = calldata_costs(offer_data)
        row["store_new_over_offer"] = round(row["store_new"]["median"] / row["offer"]["median"], 2)
        results[str(size)] = row
    return {"client": str(web3.client_version), "sizes": results}


def run(chains: list[str], sizes: list[int], repeats: int, seed: int) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "contract_gas",
        "command": "python " + " ".join(sys.argv),
        "target_offer_gas": TARGET_OFFER_GAS,
        "payload": "random bytes 1..255 (no zero byte), same payload for every call of a size",
        "versions": {p: version(p) for p in ("vyper", "web3", "eth-tester", "py-evm")},
        "python": platform.python_version(),
        "chains": {},
    }
    if "embedded" in chains:
        chain = EmbeddedChain(accounts=2)
        report["chains"]["embedded"] = measure_chain(
            chain.web3, list(chain.accounts), sizes, repeats, seed)
        report["chains"]["embedded"]["hardfork"] = "prague (eth-tester's py-evm)"
    for name in (c for c in chains if c.startswith("anvil")):
        binary, why = anvil_binary()
        hardfork = name.partition(":")[2] or None
        if binary is None:
            report["chains"][name] = {"skipped": why}
            continue
        with Anvil(binary, block_time=None, hardfork=hardfork) as anvil:
            accounts = [anvil.funded_account(), anvil.funded_account()]
            report["chains"][name] = measure_chain(anvil.web3(), accounts, sizes, repeats, seed)
        report["chains"][name]["hardfork"] = hardfork or "anvil's default"
    smallest = str(min(sizes))
    report["target_met"] = {
        name: data["sizes"][smallest]["offer"]["median"] <= TARGET_OFFER_GAS
        for name, data in report["chains"].items() if "sizes" in data
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", default="embedded,anvil,anvil:cancun")
    parser.add_argument("--sizes", default="175,300")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    report = run(args.chains.split(","), sizes, args.repeats, args.seed)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
