"""Tests for hailing.chain: the Vyper contract and its cache, the client on the embedded
chain and on anvil (a real node over HTTP JSON-RPC, 1 s blocks), garbage logs and garbage
or missing JSON-RPC endpoints, and the gas benchmark's target."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import vyper
from conftest_chain import REPO, Anvil, ScriptedRpc, rpc_result
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_helpers import anvil_or_skip
from web3 import Web3

from hailing.chain import (
    MAX_PAYLOAD,
    BadRpcAnswer,
    ChainError,
    ChainUnavailable,
    EmbeddedChain,
    MalformedLog,
    SignalEvent,
    SignalingContract,
    SignalKind,
    TransactionFailed,
    compile_vyper,
    http_web3,
    parse_log,
    signaling_contract,
)
from hailing.chain import contract as contract_module
from hailing.chain.client import _transact
from hailing.errors import HailingError, LocalProtocolError

OFFER_TOPIC = bytes(Web3.keccak(text="Offer(address,address,bytes)"))
# Emits arbitrary logs: stands in for a foreign or hostile contract.
MIMIC_SOURCE = """\
# pragma version ~=0.4.3
@external
def emit3(t0: bytes32, t1: bytes32, t2: bytes32, data: Bytes[1024]):
    raw_log([t0, t1, t2], data)

@external
def emit2(t0: bytes32, t1: bytes32, data: Bytes[1024]):
    raw_log([t0, t1], data)
"""


@dataclass
class Chain:
    name: str
    web3: Web3
    accounts: list[LocalAccount]  # three funded keys
    contract: SignalingContract


@pytest.fixture(scope="module")
def anvil_node() -> Iterator[Anvil]:
    with Anvil(anvil_or_skip(), block_time=1) as node:
        yield node


@pytest.fixture(scope="module", params=["embedded", "anvil"])
def chain(request: pytest.FixtureRequest) -> Chain:
    if request.param == "embedded":
        embedded = EmbeddedChain(accounts=3)
        web3, accounts = embedded.web3, list(embedded.accounts)
    else:
        node: Anvil = request.getfixturevalue("anvil_node")
        web3, accounts = node.web3(), [node.funded_account() for _ in range(3)]
    address = SignalingContract.deploy(web3, accounts[0])
    return Chain(request.param, web3, accounts, SignalingContract(web3, address))


@pytest.fixture
def embedded() -> Chain:
    chain = EmbeddedChain(accounts=3)
    address = SignalingContract.deploy(chain.web3, chain.accounts[0])
    return Chain("embedded", chain.web3, list(chain.accounts),
                 SignalingContract(chain.web3, address))


def fresh_address() -> str:
    return str(Account.create().address)


def one_line(error: BaseException) -> bool:
    text = str(error)
    return bool(text) and "\n" not in text and len(text) < 300


# -- the contract and its compilation ---------------------------------------------------


def test_contract_abi_has_the_three_messages_and_their_events() -> None:
    abi = signaling_contract().abi
    functions = {e["name"]: e for e in abi if e["type"] == "function"}
    events = {e["name"]: e for e in abi if e["type"] == "event"}
    assert sorted(functions) == ["answer", "endpoint", "offer"]
    for f in functions.values():
        assert [i["type"] for i in f["inputs"]] == ["address", "bytes"]
        assert f["stateMutability"] == "nonpayable"
    assert sorted(events) == ["Answer", "Endpoint", "Offer"]
    for e in events.values():
        assert [(i["name"], i["type"], i["indexed"]) for i in e["inputs"]] == [
            ("to", "address", True), ("sender", "address", True), ("payload", "bytes", False)]


def test_contract_stores_nothing_and_its_bound_matches_the_client() -> None:
    source = contract_module.SOURCE_PATH.read_text()
    out = vyper.compile_code(source, output_formats=["layout", "opcodes_runtime"])
    assert not out["layout"].get("storage_layout")
    assert "SSTORE" not in out["opcodes_runtime"].split()
    bound = re.search(r"MAX_PAYLOAD: constant\(uint256\) = (\d+)", source)
    assert bound is not None and int(bound.group(1)) == MAX_PAYLOAD


def test_compile_cache_is_keyed_by_source_and_compiler(tmp_path, monkeypatch) -> None:
    source = contract_module.SOURCE_PATH.read_text()
    first = compile_vyper(source, cache=tmp_path)
    assert first.bytecode == signaling_contract().bytecode
    assert [p.name for p in tmp_path.iterdir()] == [f"{first.key}.json"]

    def no_compiler(_source: str) -> dict[str, object]:
        raise AssertionError("compiled although cached")

    monkeypatch.setattr(contract_module, "_compile", no_compiler)
    assert compile_vyper(source, cache=tmp_path) == first  # served from the cache
    with pytest.raises(AssertionError):  # a changed source is a new key, so compiles
        compile_vyper(source + "\n# changed\n", cache=tmp_path)
    monkeypatch.setattr(contract_module, "_vyper_version", lambda: "9.9.9")
    with pytest.raises(AssertionError):  # so is another vyper version
        compile_vyper(source, cache=tmp_path)


@pytest.mark.parametrize("garbage", [b"", b"{not json", b"[]", b'{"key": 1}',
                                     b'{"key": "KEY", "abi": [], "bytecode": "zz", "runtime": ""}',
                                     b'{"key": "KEY", "abi": 5, "bytecode": "", "runtime": ""}'])
def test_a_garbage_cache_entry_is_recompiled_and_rewritten(tmp_path, garbage: bytes) -> None:
    source = contract_module.SOURCE_PATH.read_text()
    key = compile_vyper(source, cache=tmp_path).key
    entry = tmp_path / f"{key}.json"
    entry.write_bytes(garbage.replace(b"KEY", key.encode()))
    again = compile_vyper(source, cache=tmp_path)
    assert again.bytecode == signaling_contract().bytecode and again.abi
    assert compile_vyper(source, cache=tmp_path) == again
    assert entry.read_bytes() != garbage


def test_a_source_that_does_not_compile_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(LocalProtocolError, match="does not compile") as caught:
        compile_vyper("@external\ndef f(:\n", cache=tmp_path)
    assert one_line(caught.value)


# -- messages on both chains -------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SignalKind))
def test_each_message_emits_its_event(chain: Chain, kind: SignalKind) -> None:
    sender, recipient = chain.accounts[1], fresh_address()
    payload = os.urandom(175)
    start = chain.contract.head()
    sent = getattr(chain.contract, kind.value)(recipient, payload, sender)
    assert 25_000 < sent.gas_used <= 35_000
    events = chain.contract.events_since(start, [recipient])
    assert events == [SignalEvent(kind, recipient, sender.address, payload, sent.block,
                                  events[0].log_index, sent.tx_hash)]
    # web3's own ABI decoder reads the same event from the receipt
    receipt = chain.web3.eth.get_transaction_receipt(sent.tx_hash)
    decoded = getattr(chain.web3.eth.contract(abi=signaling_contract().abi).events,
                      kind.value.capitalize())().process_receipt(receipt)
    assert [(d["args"]["to"], d["args"]["sender"], d["args"]["payload"]) for d in decoded] == [
        (recipient, sender.address, payload)]


def test_deployed_code_is_the_compiled_runtime(chain: Chain) -> None:
    chain.contract.check_code()
    elsewhere = SignalingContract(chain.web3, fresh_address())
    with pytest.raises(ChainError, match="no hailing signaling contract"):
        elsewhere.check_code()


def test_oversized_payload_reverts_on_chain(chain: Chain) -> None:
    payer = chain.accounts[2]
    selector = bytes(Web3.keccak(text="offer(address,bytes)"))[:4]

    def raw_offer(size: int) -> bytes:
        return selector + abi_encode(["address", "bytes"], [fresh_address(), b"\x01" * size])

    assert _transact(chain.web3, payer, chain.contract.address, raw_offer(MAX_PAYLOAD),
                     60.0)[0].gas_used > 0
    with pytest.raises(TransactionFailed, match="would revert") as caught:
        _transact(chain.web3, payer, chain.contract.address, raw_offer(MAX_PAYLOAD + 1), 60.0)
    assert one_line(caught.value)
    # past gas estimation too: a mined transaction with status 0
    eth = chain.web3.eth
    base_fee = int(eth.get_block("latest").get("baseFeePerGas", 0))
    signed = payer.sign_transaction({
        "to": chain.contract.address, "data": raw_offer(MAX_PAYLOAD + 1), "gas": 200_000,
        "maxFeePerGas": 2 * base_fee + 10**9, "maxPriorityFeePerGas": 10**9, "value": 0,
        "nonce": eth.get_transaction_count(payer.address, "pending"), "chainId": eth.chain_id})
    receipt = eth.wait_for_transaction_receipt(eth.send_raw_transaction(signed.raw_transaction))
    assert receipt["status"] == 0


def test_client_refuses_bad_input_before_sending(chain: Chain) -> None:
    payer = chain.accounts[2]
    nonce = chain.web3.eth.get_transaction_count(payer.address)
    for to, payload in [(fresh_address(), b"\x01" * (MAX_PAYLOAD + 1)), (fresh_address(), b""),
                        ("0x1234", b"x"), (fresh_address(), "text")]:
        with pytest.raises(LocalProtocolError):
            chain.contract.offer(to, payload, payer)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        chain.contract.events_since(0, ["not an address"])
    assert chain.web3.eth.get_transaction_count(payer.address) == nonce


def test_a_sender_without_funds_gets_one_clear_error(chain: Chain) -> None:
    with pytest.raises(TransactionFailed, match="would fail") as caught:
        chain.contract.offer(fresh_address(), b"x", Account.create())
    assert one_line(caught.value)


def test_events_since_filters_by_recipient_and_block(chain: Chain) -> None:
    alice, bob = chain.accounts[1], chain.accounts[2]
    b_addr, c_addr = fresh_address(), fresh_address()
    start = chain.contract.head() + 1
    first = chain.contract.offer(b_addr, b"one", alice)
    second = chain.contract.answer(c_addr, b"two", bob)
    third = chain.contract.endpoint(b_addr, b"three", bob)
    contract = chain.contract
    to_b = contract.events_since(start, [b_addr])
    assert [(e.payload, e.kind, e.sender) for e in to_b] == [
        (b"one", SignalKind.OFFER, alice.address), (b"three", SignalKind.ENDPOINT, bob.address)]
    both = contract.events_since(start, [c_addr, b_addr.lower()])
    assert [e.payload for e in both] == [b"one", b"two", b"three"]
    assert [e.payload for e in contract.events_since(first.block + 1, [b_addr])] == [b"three"]
    assert [e.payload for e in contract.events_since(start, [b_addr], to_block=second.block)] == [
        b"one"]
    assert contract.events_since(third.block + 1, [b_addr]) == []
    assert contract.events_since(start, []) == []
    narrow = SignalingContract(chain.web3, contract.address, max_block_range=1)
    assert narrow.events_since(start, [b_addr, c_addr]) == both
    assert contract.skipped_logs == 0


# -- garbage logs --------------------------------------------------------------------------


def _topic(address: str) -> bytes:
    return bytes.fromhex(address[2:]).rjust(32, b"\0")


def _abi_bytes(payload: bytes) -> bytes:
    return abi_encode(["bytes"], [payload])


def test_garbage_logs_are_skipped_and_counted(embedded: Chain) -> None:
    web3, payer = embedded.web3, embedded.accounts[1]
    mimic = compile_vyper(MIMIC_SOURCE)
    mimic_address = SignalingContract.deploy(web3, payer, compiled=mimic)
    contract = web3.eth.contract(address=mimic_address, abi=mimic.abi)
    to, sender = fresh_address(), _topic(payer.address)
    start = web3.eth.block_number + 1
    good = _abi_bytes(b"hello")
    cases = {
        "truncated data": (sender, good[:40]),
        "bad offset": (sender, (64).to_bytes(32, "big") + good[32:]),
        "data length": (sender, good + b"\0" * 32),
        "oversized payload": (sender, _abi_bytes(b"\x01" * (MAX_PAYLOAD + 1))),
        "nonzero padding": (sender, good[:-1] + b"\x01"),
        "sender is not an address topic": (b"\xff" * 32, good),
    }
    for topic2, data in cases.values():
        embedded_tx(web3, payer, contract.functions.emit3(OFFER_TOPIC, _topic(to), topic2, data))
    embedded_tx(web3, payer, contract.functions.emit2(OFFER_TOPIC, _topic(to), good))
    embedded_tx(web3, payer, contract.functions.emit3(OFFER_TOPIC, _topic(to), sender, good))

    reader = SignalingContract(web3, mimic_address)
    events = reader.events_since(start, [to])
    assert [(e.payload, e.sender) for e in events] == [(b"hello", payer.address)]
    assert reader.stats == dict.fromkeys([*cases, "topic count"], 1)

    # a lying endpoint adds logs of another contract, of unasked recipients, removed logs
    real = embedded.contract
    embedded.contract.offer(to, b"real", payer)
    honest = web3.eth.get_logs
    foreign = honest({"address": mimic_address, "fromBlock": start})
    stranger = dict(foreign[-1], address=real.address, topics=[
        OFFER_TOPIC, _topic(fresh_address()), sender])
    removed = dict(foreign[-1], address=real.address, removed=True)
    web3.eth.get_logs = lambda params: [*honest(params), *foreign, stranger, removed, 7]
    assert [e.payload for e in real.events_since(start, [to])] == [b"real"]
    assert real.stats == {"foreign contract": len(foreign), "unasked recipient": 1,
                          "removed": 1, "not an object": 1}


def embedded_tx(web3: Web3, account: LocalAccount, call: object) -> None:
    data = bytes.fromhex(call._encode_transaction_data()[2:])  # type: ignore[attr-defined]
    _transact(web3, account, call.address, data, 30.0)  # type: ignore[attr-defined]


def _valid_log() -> dict[str, object]:
    return {"address": "0x" + "11" * 20, "topics": [OFFER_TOPIC, b"\0" * 12 + b"\x22" * 20,
                                                    b"\0" * 12 + b"\x33" * 20],
            "data": _abi_bytes(b"sealed"), "blockNumber": 5, "logIndex": 0,
            "transactionHash": b"\x44" * 32, "removed": False}


def test_parse_log_reads_a_valid_log_from_bytes_or_hex() -> None:
    log = _valid_log()
    event = parse_log(log, "0x" + "11" * 20)
    as_hex = {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in log.items()}
    as_hex["topics"] = ["0x" + t.hex() for t in log["topics"]]  # type: ignore[attr-defined]
    as_hex["blockNumber"] = "0x5"
    assert parse_log(as_hex, "0x" + "11" * 20) == event
    assert (event.payload, event.block, event.kind) == (b"sealed", 5, SignalKind.OFFER)


_junk = st.one_of(st.none(), st.booleans(), st.integers(), st.binary(max_size=80),
                  st.text(max_size=80), st.lists(st.binary(max_size=40), max_size=4))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(_valid_log())), _junk), st.data())
def test_parse_log_raises_only_malformed_log(overrides: dict[str, object], data) -> None:
    log = {**_valid_log(), **overrides}
    if data.draw(st.booleans()):  # also cut or flip the payload bytes
        raw = bytearray(_abi_bytes(b"sealed"))
        cut = data.draw(st.integers(0, len(raw)))
        log["data"] = bytes(raw[:cut]) + data.draw(st.binary(max_size=8))
    try:
        event = parse_log(log, "0x" + "11" * 20)
    except MalformedLog as exc:
        assert one_line(exc) and exc.reason
    else:
        assert 0 < len(event.payload) <= MAX_PAYLOAD or event.payload == b""


# -- unreachable and garbage JSON-RPC endpoints ----------------------------------------


def test_unreachable_endpoint_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    contract = SignalingContract(http_web3(url, timeout=2), fresh_address())
    payer = Account.create()
    for call in (contract.head, lambda: contract.events_since(0, [fresh_address()]),
                 lambda: contract.offer(fresh_address(), b"x", payer),
                 lambda: SignalingContract.deploy(contract.web3, payer)):
        with pytest.raises(ChainUnavailable) as caught:
            call()
        assert one_line(caught.value)
        assert str(caught.value) == f"cannot reach the JSON-RPC endpoint {url}: connection refused"


GARBAGE_ANSWERS = {
    "not json": lambda m, i: (200, b"<html>oops</html>"),
    "a json list": lambda m, i: (200, b"[1, 2]"),
    "http 500": lambda m, i: (500, b"internal error"),
    "an error object": lambda m, i: (200, b'{"jsonrpc": "2.0", "id": %d, "error": '
                                          b'{"code": -32000, "message": "boom\\nline"}}' % i),
    "bad hex": lambda m, i: rpc_result(i, "0xzz"),
    "null": lambda m, i: rpc_result(i, None),
    "a huge number": lambda m, i: rpc_result(i, "0x" + "f" * 40),
    "logs not a list": lambda m, i: rpc_result(i, "0x10" if m == "eth_blockNumber" else 5),
    "logs of junk": lambda m, i: rpc_result(
        i, "0x10" if m == "eth_blockNumber" else [1, {"address": "zz"}, {"topics": 3}]),
}


@pytest.mark.parametrize("answer", list(GARBAGE_ANSWERS))
def test_garbage_json_rpc_answers_are_chain_errors(answer: str) -> None:
    with ScriptedRpc(GARBAGE_ANSWERS[answer]) as rpc:
        contract = SignalingContract(http_web3(rpc.url, timeout=5), fresh_address())
        payer = Account.create()
        for call in (contract.head, lambda: contract.events_since(1, [fresh_address()]),
                     lambda: contract.offer(fresh_address(), b"x", payer)):
            try:
                result = call()
            except ChainError as exc:
                assert one_line(exc)
            else:  # only the answers that are valid for this call may get through
                assert answer.startswith("logs") and result in ([], 16)
        with pytest.raises(HailingError):
            contract.head() if not answer.startswith("logs") else contract.events_since(
                1, [fresh_address()])


def test_a_malformed_receipt_is_a_bad_answer(embedded: Chain, monkeypatch) -> None:
    monkeypatch.setattr(embedded.web3.eth, "wait_for_transaction_receipt",
                        lambda *a, **k: {"status": "yes", "gasUsed": 1, "blockNumber": 1})
    with pytest.raises(BadRpcAnswer, match="malformed receipt"):
        embedded.contract.offer(fresh_address(), b"x", embedded.accounts[1])
    monkeypatch.setattr(embedded.web3.eth, "wait_for_transaction_receipt", lambda *a, **k: {
        "status": 1, "gasUsed": 1, "blockNumber": 1, "contractAddress": "0x12"})
    with pytest.raises(BadRpcAnswer, match="without an address"):
        SignalingContract.deploy(embedded.web3, embedded.accounts[1])


# -- one gas wallet, several senders ----------------------------------------------------

_SENDER = """
import sys
from eth_account import Account
from hailing.chain import SignalingContract, http_web3
url, address, key, to, n = sys.argv[1:6]
contract = SignalingContract(http_web3(url), address)
for i in range(int(n)):
    contract.offer(to, b"p%d" % i, Account.from_key(key))
"""


def test_processes_sharing_a_gas_wallet_never_collide_on_a_nonce(anvil_node: Anvil) -> None:
    """Three processes pay with the same key at the same time (a listener and two sends):
    the nonce lock makes every transaction get its own nonce, none replaces another."""
    import subprocess
    import sys

    web3 = anvil_node.web3()
    payer = anvil_node.funded_account()
    address = SignalingContract.deploy(web3, payer)
    to = fresh_address()
    procs = [subprocess.Popen([sys.executable, "-c", _SENDER, anvil_node.url, address,
                               bytes(payer.key).hex(), to, "3"],
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    events = SignalingContract(web3, address).events_since(0, [to])
    assert len(events) == 9
    nonces = [web3.eth.get_transaction(e.tx_hash)["nonce"] for e in events]
    assert len(set(nonces)) == 9


def test_a_stale_nonce_is_read_again_not_reused(anvil_node: Anvil, monkeypatch) -> None:
    """The endpoint refuses a nonce already taken (another machine with the same key):
    the client reads the nonce again and re-signs instead of failing or replacing."""
    web3 = anvil_node.web3()
    payer = anvil_node.funded_account()
    address = SignalingContract.deploy(web3, payer)
    contract = SignalingContract(web3, address)
    to = fresh_address()
    contract.offer(to, b"first", payer)
    real = web3.eth.get_transaction_count
    stale = [int(real(payer.address, "pending")) - 1]  # the nonce "first" already used

    def count(addr: str, block: str = "latest") -> int:
        return stale.pop() if stale else int(real(addr, block))

    monkeypatch.setattr(web3.eth, "get_transaction_count", count)
    contract.offer(to, b"second", payer)
    assert not stale  # the stale read did happen
    assert [e.payload for e in contract.events_since(0, [to])] == [b"first", b"second"]


def test_an_unusable_nonce_lock_file_does_not_stop_sending(embedded: Chain, tmp_path,
                                                            monkeypatch) -> None:
    """The lock file cannot be opened (another user's, say; here a directory in its
    place): the transaction still goes, under this process's own lock."""
    import tempfile

    payer = embedded.accounts[1]
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    (tmp_path / f"hailing-nonce-{payer.address.lower()}.lock").mkdir()
    to = fresh_address()
    embedded.contract.offer(to, b"despite the lock file", payer)
    assert [e.payload for e in embedded.contract.events_since(0, [to])] == [b"despite the lock file"]


# -- the embedded chain and the benchmark ----------------------------------------------


def test_embedded_chain_funds_any_wallet_and_refuses_misuse() -> None:
    chain = EmbeddedChain(accounts=2)
    wallet = Account.create()
    chain.fund(wallet.address, 10**18)
    assert chain.web3.eth.get_balance(wallet.address) == 10**18
    start = chain.web3.eth.block_number
    chain.mine(3)
    assert chain.web3.eth.block_number == start + 3
    for bad in ({"accounts": 0}, {"balance": 0}):
        with pytest.raises(LocalProtocolError):
            EmbeddedChain(**bad)  # type: ignore[arg-type]


def test_gas_benchmark_meets_the_target_and_beats_storage() -> None:
    spec = importlib.util.spec_from_file_location(
        "contract_gas", REPO / "benchmarks" / "contract_gas.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.run(["embedded"], [175, 300], 1, 1)
    sizes = report["chains"]["embedded"]["sizes"]
    assert report["target_met"] == {"embedded": True}
    for size, row in sizes.items():
        assert row["offer"]["median"] == row["offer_calldata"]["eip7623_floor_gas"], size
        assert row["store_new"]["median"] > 5 * row["offer"]["median"]
    assert sizes["175"]["offer"]["median"] <= bench.TARGET_OFFER_GAS
