"""The parts around the contract backend, each fed garbage: the signaling store (rotation
secrets, cursors, address cache, endpoint records, chain.json), endpoint records, the
JSON-RPC server over the embedded chain, ``sig`` frames on a data channel, gas keys and
the Peer's contract arguments; and the watcher cancelled at an awkward moment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from web3 import Web3

from hailing.chain import EmbeddedChain, SignalingContract, http_web3
from hailing.chain.client import ChainUnavailable, SignalEvent, SignalKind
from hailing.chain.rpc_server import MAX_BATCH, RpcServer, to_rpc
from hailing.chain.wallet import RotationSecret, watch_days
from hailing.errors import LocalProtocolError, StorageError
from hailing.identity import Identity
from hailing.peer import Peer
from hailing.rtc.connection import MAX_SIGNAL, Connection
from hailing.services.contacts import DB_NAME
from hailing.signaling.contract_rdv import ChainLink, ContractRendezvous, gas_account
from hailing.signaling.endpoint import (
    EndpointError,
    EndpointRecord,
    decode_record,
    encode_record,
    format_wireguard,
    parse_endpoint,
)
from hailing.signaling.store import (
    CHAIN_CONFIG,
    ChainConfig,
    SignalStore,
    load_chain_config,
    save_chain_config,
)

ALICE = Identity.from_seed(bytes(range(32)))
WG_KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


# -- the store -------------------------------------------------------------------------


def test_rotation_secrets_cursor_and_address_cache_survive_a_reopen(tmp_path: Path) -> None:
    with SignalStore(tmp_path) as store:
        assert store.rotation(ALICE.public_key) is None
        store.set_rotation(ALICE.contact_id, "prefix one", "userid1")
        store.set_cursor("1:0xabc:watch", 42)
        secret = RotationSecret("prefix one", "userid1")
        store.cache_address(secret, date(2030, 1, 5), "0x" + "ab" * 20)
    with SignalStore(tmp_path) as store:
        assert store.rotation(ALICE.public_key) == RotationSecret("prefix one", "userid1")
        assert store.cursor("1:0xabc:watch") == 42 and store.cursor("other") is None
        assert store.cached_address(secret, date(2030, 1, 5)) == "0x" + "ab" * 20
        assert store.cached_address(secret, date(2030, 1, 6)) is None
        store.cache_address(secret, date(2030, 1, 9), "0x" + "cd" * 20)  # prunes old days
        assert store.cached_address(secret, date(2030, 1, 5)) is None
        assert store.forget_rotation(ALICE.public_key) and store.rotation(ALICE.public_key) is None


@pytest.mark.parametrize(("prefix", "user_id"), [("", "u"), ("p", ""), ("p", "has space"),
                                                 ("p\n", "u"), ("p" * 300, "u")])
def test_bad_rotation_secrets_are_refused(tmp_path: Path, prefix: str, user_id: str) -> None:
    with SignalStore(tmp_path) as store, pytest.raises(LocalProtocolError):
        store.set_rotation(ALICE.public_key, prefix, user_id)


@pytest.mark.parametrize("contact", [b"short", "hl-not-a-contact-id", bytes(31)])
def test_bad_contacts_are_refused(tmp_path: Path, contact: Any) -> None:
    with SignalStore(tmp_path) as store, pytest.raises(LocalProtocolError):
        store.set_rotation(contact, "p", "u")


@pytest.mark.parametrize(("sql", "read"), [
    ("INSERT INTO chain_cursor VALUES ('s', 'nonsense')", lambda s: s.cursor("s")),
    ("INSERT INTO rotation VALUES (?, 'p', 'with space')", lambda s: s.rotation(ALICE.public_key)),
    ("INSERT INTO address_cache VALUES (?, '2030-01-01', 'garbage')",
     lambda s: s.cached_address(RotationSecret("p", "u"), date(2030, 1, 1))),
    ("INSERT INTO endpoint_records VALUES (?, 'sip', 'h:1', '[1]', 0, 'x', 0)",
     lambda s: s.endpoints()),
])
def test_corrupt_rows_are_storage_errors(tmp_path: Path, sql: str, read: Any) -> None:
    SignalStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    if sql.count("?"):
        key: Any = ALICE.public_key
        if "address_cache" in sql:
            key = SignalStore._address_key(RotationSecret("p", "u"), date(2030, 1, 1))
        db.execute(sql, (key,))
    else:
        db.execute(sql)
    db.commit()
    db.close()
    with SignalStore(tmp_path) as store, pytest.raises(StorageError):
        read(store)


def test_a_file_that_is_no_database_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StorageError):
        SignalStore(tmp_path)


def test_endpoint_records_keep_the_newest(tmp_path: Path) -> None:
    with SignalStore(tmp_path) as store:
        assert store.put_endpoint(ALICE.public_key, "sip", "a:1", {}, 100.0, "dht")
        assert not store.put_endpoint(ALICE.public_key, "sip", "old:1", {}, 50.0, "dht")
        assert store.put_endpoint(ALICE.public_key, "sip", "b:2", {"u": "x"}, 200.0, "contract")
        assert store.put_endpoint(ALICE.public_key, "wireguard", "c:3", {}, 10.0, "dht")
        got = {(r.kind, r.endpoint, r.via) for r in store.endpoints(ALICE.contact_id)}
        assert got == {("sip", "b:2", "contract"), ("wireguard", "c:3", "dht")}


def test_chain_config_round_trip_and_mode(tmp_path: Path) -> None:
    assert load_chain_config(tmp_path) == ChainConfig()
    path = save_chain_config(tmp_path, ChainConfig("http://127.0.0.1:8545", "0x" + "1" * 40))
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_chain_config(tmp_path) == ChainConfig("http://127.0.0.1:8545", "0x" + "1" * 40)


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b'{"version": 2}',
                                     b'{"version": 1, "rpc": 5}', b"x" * 5000,
                                     b'{"version": 1, "contract": ""}'])
def test_garbage_chain_config_is_a_storage_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / CHAIN_CONFIG
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(StorageError):
        load_chain_config(tmp_path)


def test_a_chain_config_readable_by_others_is_refused(tmp_path: Path) -> None:
    save_chain_config(tmp_path, ChainConfig("embedded"))
    os.chmod(tmp_path / CHAIN_CONFIG, 0o644)
    with pytest.raises(StorageError, match="chmod"):
        load_chain_config(tmp_path)


# -- endpoint records ----------------------------------------------------------------------


def test_endpoint_record_round_trip() -> None:
    rec = EndpointRecord("wireguard", "[2001:db8::1]:51820",
                         {"pubkey": WG_KEY, "allowed": "10.0.0.2/32, fd00::2/128"})
    body = encode_record(rec)
    assert decode_record(body) == rec and len(body) < 200
    assert format_wireguard(rec.endpoint, rec.extra, "bob") == (
        "[Peer]\n# bob\nPublicKey = " + WG_KEY + "\nEndpoint = [2001:db8::1]:51820\n"
        "AllowedIPs = 10.0.0.2/32, fd00::2/128\n")


@pytest.mark.parametrize("rec", [
    EndpointRecord("ftp", "h:1"),
    EndpointRecord("sip", "h"),
    EndpointRecord("sip", "h:0"),
    EndpointRecord("sip", "h:70000"),
    EndpointRecord("sip", "[zz::1]:5"),
    EndpointRecord("sip", "bad host:5"),
    EndpointRecord("sip", "h:5", {"Upper": "x"}),
    EndpointRecord("sip", "h:5", {"k": "line\nbreak"}),
    EndpointRecord("sip", "h:5", {f"k{i}": "v" for i in range(9)}),
    EndpointRecord("sip", "h:5", {"k": "v" * 201}),
    EndpointRecord("wireguard", "h:5", {"pubkey": "not base64!"}),
    EndpointRecord("wireguard", "h:5", {"pubkey": "AAAA"}),
    EndpointRecord("wireguard", "h:5", {"allowed": "10.0.0.300/32"}),
    EndpointRecord("sip", "h:5", {f"k{i}": "v" * 60 for i in range(8)}),  # too long in all
])
def test_bad_records_are_refused_before_sending(rec: EndpointRecord) -> None:
    with pytest.raises(LocalProtocolError):
        encode_record(rec)


@pytest.mark.parametrize("body", [
    b"", b"\xff\xfe", b"null", b"[]", b'{"k":"sip","e":"h:1"}', b'{"k":"sip","e":"h:1","x":[]}',
    b'{"k":"sip","e":"h:1","x":{},"more":1}', b'{"k":1,"e":"h:1","x":{}}',
    b'{"k":"sip","e":"h","x":{}}', b'{"k":"sip","e":"h:1","x":{"a":1}}', b"{" * 500,
])
def test_garbage_records_are_endpoint_errors(body: bytes) -> None:
    with pytest.raises(EndpointError):
        decode_record(body)


@pytest.mark.parametrize(("text", "expected"), [("example.org:5060", ("example.org", 5060)),
                                                ("[::1]:1", ("::1", 1)),
                                                ("192.0.2.1:65535", ("192.0.2.1", 65535))])
def test_parse_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


# -- gas keys and Peer arguments -------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "zz" * 32, "00" * 31, "00" * 32, "ff" * 32, b"\x01" * 31])
def test_bad_gas_keys(key: Any) -> None:
    link = ChainLink(Web3(), "http://127.0.0.1:1")
    with pytest.raises(LocalProtocolError):
        gas_account(key, link)


def test_gas_key_parsing_and_default() -> None:
    link = ChainLink(Web3(), "http://127.0.0.1:1")
    assert gas_account("0x" + "00" * 31 + "01", link).address == \
        "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
    with pytest.raises(LocalProtocolError, match="gas-key"):
        gas_account(None, link)


def test_contract_backend_needs_an_rpc_url(tmp_path: Path) -> None:
    with pytest.raises(LocalProtocolError, match="rpc_url"):
        Peer(tmp_path, backend="contract")
    with pytest.raises(LocalProtocolError, match="contract"):
        Peer(tmp_path, backend="chain")


async def test_contract_backend_on_a_json_rpc_url_needs_the_contract_address(
        tmp_path: Path) -> None:
    peer = Peer(tmp_path, backend="contract", rpc_url="http://127.0.0.1:9",
                gas_key="00" * 31 + "01")
    with pytest.raises(LocalProtocolError, match="contract address"):
        await peer.start()


async def test_an_unreachable_rpc_at_start_is_one_clear_line(tmp_path: Path) -> None:
    peer = Peer(tmp_path, backend="contract", rpc_url="http://127.0.0.1:9",
                contract_address="0x" + "11" * 20, gas_key="00" * 31 + "01")
    with pytest.raises(ChainUnavailable) as failed:
        await peer.start()
    assert "cannot reach the JSON-RPC endpoint" in str(failed.value)
    assert "\n" not in str(failed.value)


# -- sig frames on the data channel -------------------------------------------------------


class FakeChannel:
    readyState = "open"
    bufferedAmount = 0

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.handlers: dict[str, Any] = {}

    def on(self, event: str, handler: Any) -> None:
        self.handlers[event] = handler

    def send(self, data: Any) -> None:
        self.sent.append(data)


async def authenticated_connection() -> tuple[Connection, FakeChannel]:
    channel = FakeChannel()
    conn = Connection(None, channel, ALICE, ALICE.public_key, initiator=True,
                      local_fp=b"\x01" * 32, remote_fp=b"\x02" * 32, downloads=Path("/tmp"))
    conn._authenticated.set_result(None)
    return conn, channel


async def test_sig_frames_reach_on_signal() -> None:
    conn, channel = await authenticated_connection()
    got: list[bytes] = []
    conn.on_signal = lambda c, blob: got.append(blob)
    conn._on_message(json.dumps({"t": "sig", "blob": "0102ff"}))
    assert got == [b"\x01\x02\xff"] and conn.stats["signals"] == 1
    conn.send_signal(b"\xaa" * 10)
    assert json.loads(channel.sent[-1]) == {"t": "sig", "blob": "aa" * 10}
    with pytest.raises(LocalProtocolError):
        conn.send_signal(b"")
    with pytest.raises(LocalProtocolError):
        conn.send_signal(b"x" * (MAX_SIGNAL + 1))


@pytest.mark.parametrize("frame", [
    {"t": "sig"}, {"t": "sig", "blob": 5}, {"t": "sig", "blob": "zz"}, {"t": "sig", "blob": "0"},
    {"t": "sig", "blob": ""}, {"t": "sig", "blob": "00" * (MAX_SIGNAL + 1)},
])
async def test_garbage_sig_frames_are_dropped_and_counted(frame: dict[str, Any]) -> None:
    conn, _ = await authenticated_connection()
    got: list[bytes] = []
    conn.on_signal = lambda c, blob: got.append(blob)
    conn._on_message(json.dumps(frame))
    assert got == [] and conn.stats["garbage_signal"] == 1


async def test_sig_frames_before_authentication_or_without_a_sink_are_dropped() -> None:
    conn, _ = await authenticated_connection()
    conn._on_message(json.dumps({"t": "sig", "blob": "01"}))  # nobody listens
    assert conn.stats["garbage_unexpected_signal"] == 1
    channel = FakeChannel()
    fresh = Connection(None, channel, ALICE, ALICE.public_key, initiator=True,
                       local_fp=b"\x01" * 32, remote_fp=b"\x02" * 32, downloads=Path("/tmp"))
    got: list[bytes] = []
    fresh.on_signal = lambda c, blob: got.append(blob)
    fresh._on_message(json.dumps({"t": "sig", "blob": "01"}))
    assert got == [] and fresh.stats["garbage_unauthenticated"] == 1
    assert not fresh.is_open


# -- the watcher ----------------------------------------------------------------------------


class OneOfferContract:
    """A contract whose head stays at block 10, which holds one offer."""

    def head(self) -> int:
        return 10

    def events_since(self, start: int, addresses: list[str], *, to_block: int) -> list[Any]:
        return [SignalEvent(SignalKind.OFFER, "0x" + "11" * 20, "0x" + "22" * 20, b"offer",
                            10, 0, bytes(32))][start - 10:]


async def test_a_watcher_cancelled_as_its_consumer_finishes_ends(tmp_path: Path) -> None:
    """The session cancels the watcher (Peer.stop) in the very loop iteration where the
    router's ``task_done`` ended the watcher's wait for the handoff: the watcher must end,
    not swallow the cancellation and poll forever (a Peer.stop that hung)."""
    rendezvous = ContractRendezvous(
        OneOfferContract(), ALICE, SignalStore(tmp_path),  # type: ignore[arg-type]
        RotationSecret("prefix", "userid1"), None, poll_interval=0.05)
    sink: asyncio.Queue[bytes] = asyncio.Queue()
    rendezvous._sink, rendezvous._cursor_key, rendezvous._cursor = sink, "1:0xabc:watch", 10
    rendezvous._days = watch_days(rendezvous._now(), rendezvous.skew)
    watcher = asyncio.ensure_future(rendezvous.watch())
    try:
        assert await sink.get() == b"offer"
        sink.task_done()  # the router handled it: the watcher's wait for the handoff ends...
        await asyncio.sleep(0)
        watcher.cancel()  # ...as the session stops
        await asyncio.wait([watcher], timeout=2)
        assert watcher.cancelled(), f"the watcher kept polling: {dict(rendezvous.stats)}"
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def test_a_cancelled_aclose_is_cancelled(tmp_path: Path) -> None:
    """aclose waits for the watcher it cancelled; when aclose itself is cancelled meanwhile,
    its caller sees the cancellation (it is not swallowed with the watcher's)."""
    rendezvous = ContractRendezvous(
        OneOfferContract(), ALICE, SignalStore(tmp_path),  # type: ignore[arg-type]
        RotationSecret("prefix", "userid1"), None)
    slow_to_end = asyncio.Event()

    async def watcher() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await slow_to_end.wait()  # cleans up for a while

    rendezvous._task = asyncio.ensure_future(watcher())
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(rendezvous.aclose())
    await asyncio.sleep(0.05)
    closing.cancel()
    await asyncio.wait([closing], timeout=2)
    slow_to_end.set()
    assert closing.cancelled()


# -- the JSON-RPC server ---------------------------------------------------------------------


def test_to_rpc_encoding() -> None:
    assert to_rpc({"a": 16, "b": b"\x01", "c": [True, None, "0x1", 0.5]}) == \
        {"a": "0x10", "b": "0x01", "c": [True, None, "0x1", 0.5]}
    with pytest.raises(TypeError):
        to_rpc(object())


@pytest.fixture
async def rpc() -> Any:
    chain = EmbeddedChain(accounts=2)
    server = RpcServer(chain)
    url = await server.start("127.0.0.1", 0)
    yield chain, url
    await server.aclose()


async def post(url: str, body: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_the_rpc_server_serves_web3_and_the_contract(rpc: Any) -> None:
    chain, url = rpc

    def work() -> tuple[int, list[Any]]:
        web3 = http_web3(url)
        address = SignalingContract.deploy(web3, chain.accounts[0])
        contract = SignalingContract(web3, address)
        contract.check_code()
        contract.offer(chain.accounts[1].address, b"sealed", chain.accounts[0])
        return web3.eth.chain_id, contract.events_since(0, [chain.accounts[1].address])

    chain_id, events = await asyncio.to_thread(work)
    assert chain_id == chain.web3.eth.chain_id
    assert [e.payload for e in events] == [b"sealed"]


@pytest.mark.parametrize(("body", "code"), [
    (b"not json", -32700),
    (b"[]", -32600),
    (json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}] * (MAX_BATCH + 1)).encode(),
     -32600),
    (b'"a string"', -32600),
    (b'{"id": 1}', -32600),
    (b'{"id": [1], "method": "eth_chainId"}', -32600),
    (b'{"id": 1, "method": "eth_sign", "params": []}', -32601),
    (b'{"id": 1, "method": "evm_mine", "params": []}', -32601),
    (b'{"id": 1, "method": "eth_getBalance", "params": {"a": 1}}', -32602),
    (b'{"id": 1, "method": "eth_getBalance", "params": ["nonsense", "latest"]}', -32000),
    (b'{"id": 1, "method": "eth_sendRawTransaction", "params": ["0x00"]}', -32000),
    (b'{"id": 1, "method": "eth_getLogs", "params": [{"fromBlock": "zz"}]}', -32000),
])
async def test_garbage_requests_get_json_rpc_errors(rpc: Any, body: bytes, code: int) -> None:
    _chain, url = rpc
    status, answer = await post(url, body)
    assert status == 200
    assert answer["error"]["code"] == code and "\n" not in answer["error"]["message"]
    # and the server still works
    _status, ok = await post(url, b'{"jsonrpc":"2.0","id":7,"method":"eth_blockNumber"}')
    assert ok == {"jsonrpc": "2.0", "id": 7, "result": ok["result"]}
    assert ok["result"].startswith("0x")


async def test_a_batch_is_answered_in_order(rpc: Any) -> None:
    _chain, url = rpc
    batch = [{"jsonrpc": "2.0", "id": i, "method": m}
             for i, m in enumerate(["eth_chainId", "nope", "net_version"])]
    _status, answer = await post(url, json.dumps(batch).encode())
    assert [a["id"] for a in answer] == [0, 1, 2]
    assert "result" in answer[0] and answer[1]["error"]["code"] == -32601
    assert answer[2]["result"] == "1"


async def test_an_oversized_body_is_refused(rpc: Any) -> None:
    _chain, url = rpc
    status, _answer = await post(url, b"[" + b" " * (2 << 20) + b"]")
    assert status == 413
