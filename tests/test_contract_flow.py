"""Calls signaled through the Ethereum contract, end to end, on the embedded chain (in
process) and on anvil (a real node, 1 s blocks): offer by transaction, the callee's
watcher, admission, answer by transaction, data channel. Forged and replayed events,
offers sent while the callee was down, a lost JSON-RPC endpoint, a second connection over
the first one's data channel (no new transaction, no DHT post), endpoint records, and a
scan of every log the tests emitted for anything in clear."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import aiortc
import pytest
from conftest_chain import Anvil
from pytest_helpers import anvil_or_skip, loopback_ice
from session_doubles import eventually
from test_envelope import build, fields
from web3 import Web3

from hailing.chain import EmbeddedChain, SignalingContract, http_web3
from hailing.chain.client import ChainUnavailable
from hailing.chain.rpc_server import RpcServer
from hailing.chain.wallet import RotatingWallets, Wallet, load_or_create_rotation
from hailing.identity import Identity, format_contact_id
from hailing.node import DhtNode
from hailing.peer import Peer
from hailing.signaling import envelope
from hailing.signaling.contract_rdv import (
    ChainStatus,
    ContractRendezvous,
    embedded_contract,
    open_chain,
)
from hailing.signaling.endpoint import KIND_ENDPOINT, EndpointRecord, format_wireguard
from hailing.signaling.envelope import KIND_OFFER
from hailing.signaling.sdp import encode_sdp
from hailing.signaling.store import SignalStore
from hailing.testnet import testnet as local_testnet


def quick_wallet(prefix: str, user_id: str, day: date) -> Wallet:
    """A stand-in for the warp derivation (a second of scrypt each; tested in test_wallet
    and used for real by the CLI tests): same inputs, same address; others, others."""
    return Wallet.from_private_key(hashlib.sha256(f"{prefix}{day}\0{user_id}".encode()).digest())


WALLETS = RotatingWallets(quick_wallet)
WG_KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


_loopback_ice = pytest.fixture(autouse=True)(loopback_ice)


@dataclass
class ChainEnv:
    name: str
    rpc_url: str
    contract: str
    web3: Web3
    keys: list[str | None]  # funded gas keys, one per peer (None: the embedded chain's)
    lock: Any = None

    def logs(self) -> list[Any]:
        """Every log of the contract so far."""
        query: Any = {"address": self.contract, "fromBlock": 0, "toBlock": "latest"}
        if self.lock is None:
            return list(self.web3.eth.get_logs(query))
        with self.lock:
            return list(self.web3.eth.get_logs(query))


@pytest.fixture(scope="module")
def anvil_node() -> Iterator[Anvil]:
    with Anvil(anvil_or_skip(), block_time=1) as node:
        yield node


def embedded_env() -> ChainEnv:
    link = open_chain("embedded")
    return ChainEnv("embedded", "embedded", embedded_contract(), link.web3, [None] * 4,
                    link.lock)


@pytest.fixture(scope="module", params=["embedded", "anvil"])
def chain(request: pytest.FixtureRequest) -> ChainEnv:
    if request.param == "embedded":
        return embedded_env()
    node: Anvil = request.getfixturevalue("anvil_node")
    accounts = [node.funded_account() for _ in range(4)]
    address = SignalingContract.deploy(node.web3(), accounts[0])
    return ChainEnv("anvil", node.url, address, node.web3(),
                    [bytes(a.key).hex() for a in accounts])


@dataclass
class Net:
    env: ChainEnv
    tmp: Path
    pcs: list[aiortc.RTCPeerConnection]
    started: list[Peer] = field(default_factory=list)
    secrets: set[bytes] = field(default_factory=lambda: {b"127.0.0.1", b"\x7f\x00\x00\x01",
                                                          b"a=ice", b"candidate"})

    async def peer(self, name: str, slot: int, **kw: Any) -> Peer:
        options = {"poll_interval": 0.1 if self.env.name == "embedded" else 0.2,
                   "wallets": WALLETS, **kw.pop("contract_options", {})}
        gas_key = kw.pop("gas_key", self.env.keys[slot])
        p = Peer(self.tmp / name, backend="contract", rpc_url=self.env.rpc_url,
                 contract_address=self.env.contract, gas_key=gas_key,
                 contract_options=options, **kw)
        await p.start()
        self.started.append(p)
        ident = p._identity()
        secret = load_or_create_rotation(p.data_dir)
        self.secrets |= {p.contact_id.encode(), ident.public_key, ident.public_key.hex().encode(),
                         secret.prefix.encode(), secret.user_id.encode()}
        return p

    async def stop(self, p: Peer) -> None:
        await p.stop()
        self.started.remove(p)

    async def scan(self) -> None:
        """No log of the contract carries a secret of this test, raw or hex."""
        for pc in self.pcs:
            for desc in (pc.localDescription, pc.remoteDescription):
                if desc is not None:
                    for key in ("ice-ufrag", "ice-pwd"):
                        self.secrets |= {m.encode() for m in re.findall(rf"a={key}:(\S+)", desc.sdp)}
        assert_no_leak(await asyncio.to_thread(self.env.logs), self.secrets)


def assert_no_leak(logs: list[Any], secrets: set[bytes]) -> None:
    assert logs
    for log in logs:
        blobs = [bytes(log["data"]), *(bytes(t) for t in log["topics"])]
        for blob in blobs:
            text = blob.hex().encode()
            for secret in secrets:
                assert secret not in blob and secret.hex().encode() not in text, (secret, log)



async def _running(n: Net) -> AsyncIterator[Net]:
    """Yield ``n``; then scan the chain's logs for leaks and stop its peers."""
    try:
        yield n
        await n.scan()
    finally:
        for p in reversed(n.started):
            await p.stop()


@pytest.fixture
async def net(chain: ChainEnv, tmp_path: Path, pcs: list[Any]) -> AsyncIterator[Net]:
    async for n in _running(Net(chain, tmp_path, pcs)):
        yield n


@pytest.fixture
async def emb(tmp_path: Path, pcs: list[Any]) -> AsyncIterator[Net]:
    """A Net on the embedded chain only."""
    async for n in _running(Net(embedded_env(), tmp_path, pcs)):
        yield n


def befriend(a: Peer, b: Peer) -> None:
    for me, other in ((a, b), (b, a)):
        assert me.contacts is not None
        me.contacts.add(other.contact_id, "friend")
        secret = load_or_create_rotation(other.data_dir)
        me.set_rotation(other.contact_id, secret.prefix, secret.user_id)


def rdv(p: Peer) -> ContractRendezvous:
    rendezvous = getattr(p.coupler("contract"), "rendezvous", None)
    assert isinstance(rendezvous, ContractRendezvous)
    return rendezvous



def txs(*peers: Peer) -> int:
    return sum(v for p in peers for k, v in rdv(p).stats.items() if k.startswith("tx_"))


# -- the call ------------------------------------------------------------------------------


async def test_call_by_transactions_then_a_second_connection_over_the_channel(net: Net) -> None:
    alice, bob = await net.peer("alice", 1), await net.peer("bob", 2)
    befriend(alice, bob)
    conn = await alice.connect(bob.contact_id, timeout=30)
    inc = await bob.accept(10)
    assert conn.peer == bob._identity().public_key and inc.peer == alice._identity().public_key
    await conn.send_text("over the chain")
    assert (await inc.recv()).text == "over the chain"  # type: ignore[union-attr]
    # offer by transaction, seen by bob's watcher, answered by transaction
    assert rdv(alice).stats["tx_offer"] == 1 and rdv(bob).stats["events_offer"] == 1
    assert rdv(bob).stats["tx_answer"] == 1 and rdv(alice).stats["events_answer"] == 1
    ev = bob.calls.get_nowait()
    assert ev.accepted and ev.peer == alice._identity().public_key
    if net.env.name == "anvil":  # 1 s blocks: two block intervals + 1 s, with slack for CI
        assert conn.connect_ms is not None and conn.connect_ms < 6000

    # a second connection (a media call, say) is signaled over the first one's channel
    logs_before, tx_before = len(await asyncio.to_thread(net.env.logs)), txs(alice, bob)
    conn2 = await alice.connect(bob.contact_id, timeout=10, via=conn)
    inc2 = await bob.accept(10)
    assert conn2.pc is not conn.pc and inc2.pc is not inc.pc
    await conn2.send_text("second")
    assert (await inc2.recv()).text == "second"  # type: ignore[union-attr]
    assert txs(alice, bob) == tx_before and len(await asyncio.to_thread(net.env.logs)) == logs_before
    assert conn.stats["signals"] == 1 and inc.stats["signals"] == 1  # offer out, answer back
    assert conn.is_open and conn2.is_open


async def test_second_connection_over_the_channel_posts_nothing_on_the_dht(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    posts = 0
    original = DhtNode.post

    async def counting(self: DhtNode, key: bytes, value: bytes) -> int:
        nonlocal posts
        posts += 1
        return await original(self, key, value)

    monkeypatch.setattr(DhtNode, "post", counting)
    async with local_testnet(8) as nodes:
        boot = [nodes[0].address]
        async with Peer(tmp_path / "a", bootstrap=boot) as alice, \
                Peer(tmp_path / "b", bootstrap=boot) as bob:
            assert bob.contacts is not None
            bob.contacts.add(alice.contact_id, "alice")
            await bob.refresh()
            conn = await alice.connect(bob.contact_id, timeout=10)
            await bob.accept(10)
            first = posts
            assert first >= 2  # the offer and the answer went through the DHT
            conn2 = await alice.connect(bob.contact_id, timeout=10, via=conn)
            inc2 = await bob.accept(10)
            await conn2.send_text("no DHT")
            assert (await inc2.recv()).text == "no DHT"  # type: ignore[union-attr]
            assert posts == first
            # an endpoint record through bob's DHT inbox
            sip = EndpointRecord("sip", "198.51.100.1:5060", {"user": "alice"})
            assert await alice.publish_endpoint(bob.contact_id, sip) >= 1
            await eventually(lambda: bob.stats["endpoints"] == 1, "the record stored")
            assert bob.store is not None
            [got] = bob.store.endpoints()
            assert (got.kind, got.endpoint, got.extra, got.via) == ("sip", sip.endpoint,
                                                                    sip.extra, "dht")


# -- hostile events --------------------------------------------------------------------------


async def test_forged_replayed_and_garbage_events_are_rejected(emb: Net) -> None:
    alice, bob = await emb.peer("alice", 0), await emb.peer("bob", 0)
    befriend(alice, bob)
    conn = await alice.connect(bob.contact_id, timeout=30)
    await bob.accept(10)
    bob_address = rdv(bob).addresses[0]
    events = await rdv(bob)._call(rdv(bob).contract.events_since, 0, [bob_address])
    offer = next(e for e in events if e.kind == "offer")
    carol = Identity.generate()  # a stranger who learned bob's address of today
    emb.secrets.add(format_contact_id(carol.public_key).encode())
    chain = open_chain("embedded")
    payer = chain.funded[3]

    def post(payload: bytes) -> None:
        with chain.lock:  # type: ignore[union-attr]
            rdv(bob).contract.offer(bob_address, payload, payer)

    answers = rdv(bob).stats["tx_answer"]
    assert bob.calls.get_nowait().accepted and bob.calls.empty()  # alice's call
    # a replay of alice's real offer, from another wallet
    await asyncio.to_thread(post, offer.payload)
    await eventually(lambda: bob.replay.stats["replayed"] == 1, "the replay refused")
    # forged: carol's key, alice's name
    forged = build(alice._identity().public_key, carol.x25519_private_key, bob._identity(),
                   fields(kind=KIND_OFFER, ts=int(time.time()), body=b"x"))
    await asyncio.to_thread(post, forged)
    await eventually(lambda: bob.replay.stats["forged"] == 1, "the forgery refused")
    # garbage
    await asyncio.to_thread(post, b"\x01" + bytes(200))
    await eventually(lambda: bob.replay.stats["unopenable"] >= 1, "garbage refused")
    # carol's own, valid offer: a stranger, refused by admission and never answered
    pc = aiortc.RTCPeerConnection()
    pc.createDataChannel("x")
    await pc.setLocalDescription(await pc.createOffer())
    real = envelope.seal(carol, bob._identity().public_key, KIND_OFFER,
                         encode_sdp(pc.localDescription), now=time.time())
    await pc.close()
    await asyncio.to_thread(post, real)
    await eventually(lambda: bob.stats["refused_unknown caller"] == 1, "carol refused")
    assert bob.stats["bad_envelopes"] == 2 and bob.stats["duplicates"] == 1
    refused = bob.calls.get_nowait()
    assert refused.peer == carol.public_key and not refused.accepted and bob.calls.empty()
    assert rdv(bob).stats["tx_answer"] == answers  # nothing went back to anyone
    assert conn.is_open


async def test_offers_sent_while_down_are_processed_exactly_once(net: Net) -> None:
    alice, bob = await net.peer("alice", 1), await net.peer("bob", 2)
    befriend(alice, bob)
    await net.stop(bob)  # bob's cursor is saved: the block after the last one he read
    call = asyncio.ensure_future(alice.connect(bob.contact_id, timeout=40))
    await eventually(lambda: rdv(alice).stats["tx_offer"] == 1, "the offer mined", 15)
    bob = await net.peer("bob", 2)
    inc = await bob.accept(20)
    conn = await call
    await conn.send_text("sent while you were away")
    assert (await inc.recv()).text == "sent while you were away"  # type: ignore[union-attr]
    assert bob.calls.qsize() == 1
    await net.stop(bob)

    # again: the offer is still fresh, but the saved cursor is past it: nothing happens
    bob = await net.peer("bob", 2)
    head = await rdv(bob)._call(rdv(bob).contract.head)
    await eventually(lambda: rdv(bob).stats["polls"] >= 3 and rdv(bob).next_block > head,
                     "three polls past the head", 10)
    assert bob.calls.empty() and bob.replay.stats["opened"] == 0
    await net.stop(bob)

    # control: with the cursor rewound the watcher reads the offer again (so the cursor is
    # what kept it away above), and the record of handled envelopes still stops it
    with SignalStore(bob.data_dir) as store:
        key = next(iter(store._query("SELECT scope FROM chain_cursor")))[0]
        store.set_cursor(key, 0)
    bob = await net.peer("bob", 2)
    await eventually(lambda: bob.stats["already_handled"] == 1, "the old offer read again", 15)
    assert bob.calls.empty()


async def test_authentication_by_wallet_when_the_sender_pays_from_its_own_wallet(
        emb: Net) -> None:
    """Seed 000's model: alice pays from her own wallet of the day, so msg.sender proves
    her to bob, who can compute that address; with require_wallet, bob refuses carol, a
    friend too, whose transactions a shared gas wallet paid."""
    from hailing.errors import QueryTimeout

    alice = await emb.peer("alice", 0, gas_key="rotating")
    bob = await emb.peer("bob", 1, contract_options={"require_wallet": True})
    carol = await emb.peer("carol", 2)
    befriend(alice, bob)
    befriend(carol, bob)
    conn = await alice.connect(bob.contact_id, timeout=20)
    inc = await bob.accept(10)
    await conn.send_text("it is me, by wallet")
    assert (await inc.recv()).text == "it is me, by wallet"  # type: ignore[union-attr]
    assert bob.stats["wallet_verified"] == 1 and bob.stats["refused_wallet"] == 0
    # the offer's msg.sender is alice's address of the day, as bob computes it
    paid = (await rdv(alice).payer()).address
    assert paid == await rdv(bob)._address_of(alice._identity().public_key)
    bob_address = await rdv(alice)._address_of(bob._identity().public_key)

    def bob_events() -> list[Any]:
        with emb.env.lock:  # py-evm is not thread-safe: the watchers poll meanwhile
            return rdv(bob).contract.events_since(0, [bob_address])

    [offer] = [e for e in await asyncio.to_thread(bob_events) if e.kind.value == "offer"]
    assert offer.sender == paid
    with pytest.raises(QueryTimeout):
        await carol.connect(bob.contact_id, timeout=3)
    assert bob.stats["refused_wallet"] == 1 and bob.calls.qsize() == 1  # only alice's call


async def test_the_cursor_is_saved_only_once_the_payloads_were_handled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between 'given to the Peer' and 'handled by the Peer' a crash must not lose an
    offer: the cursor on disk stays before its block until the consumer is done."""
    import hailing.signaling.contract_rdv as contract_rdv

    monkeypatch.setattr(contract_rdv, "HANDOFF_TIMEOUT", 0.2)
    env = embedded_env()
    idents = {n: Identity.generate() for n in ("alice", "bob")}
    rdvs: dict[str, ContractRendezvous] = {}
    sinks: dict[str, asyncio.Queue[bytes]] = {}
    for name in ("alice", "bob"):
        rdvs[name] = await ContractRendezvous.open(
            tmp_path / name, idents[name], SignalStore(tmp_path / name), rpc_url="embedded",
            contract_address=env.contract, wallets=WALLETS, poll_interval=3600.0,
            max_backoff=3600.0)
        sinks[name] = asyncio.Queue()
        await rdvs[name].start(sinks[name])
    bob = rdvs["bob"]
    try:
        # the watchers' first polls are done; the next ones are an hour away
        await eventually(lambda: all(r.stats["polls"] for r in rdvs.values()), "first polls")
        secret = load_or_create_rotation(tmp_path / "bob")
        rdvs["alice"].store.set_rotation(format_contact_id(idents["bob"].public_key),
                                         secret.prefix, secret.user_id)
        await rdvs["alice"].send(idents["bob"].public_key, b"an offer", kind="offer")
        saved = bob.store.cursor(bob._cursor_key)
        assert await bob.poll_once() == 1
        assert bob.stats["cursor_deferred"] == 1
        assert bob.store.cursor(bob._cursor_key) == saved  # a crash now reads it again
        assert sinks["bob"].get_nowait() == b"an offer"
        sinks["bob"].task_done()  # handled
        assert await bob.poll_once() == 0
        assert bob.store.cursor(bob._cursor_key) == bob.next_block > saved
    finally:
        for r in rdvs.values():
            await r.aclose()
            r.store.close()


async def test_a_chain_restarted_below_the_saved_cursor_is_watched_again(
        tmp_path: Path) -> None:
    """Issue 8 item 3: after the chain restarts (same contract address, lower block
    height) the saved cursor is ahead of the chain; the watcher must notice and read the
    new chain's blocks instead of waiting forever for it to pass the old cursor."""
    env = embedded_env()
    idents = {n: Identity.generate() for n in ("alice", "bob")}
    rdvs: dict[str, ContractRendezvous] = {}
    sinks: dict[str, asyncio.Queue[bytes]] = {}
    for name in ("alice", "bob"):
        rdvs[name] = await ContractRendezvous.open(
            tmp_path / name, idents[name], SignalStore(tmp_path / name), rpc_url="embedded",
            contract_address=env.contract, wallets=WALLETS, poll_interval=3600.0,
            max_backoff=3600.0)
        sinks[name] = asyncio.Queue()
        await rdvs[name].start(sinks[name])
    bob = rdvs["bob"]
    try:
        await eventually(lambda: all(r.stats["polls"] for r in rdvs.values()), "first polls")
        secret = load_or_create_rotation(tmp_path / "bob")
        rdvs["alice"].store.set_rotation(format_contact_id(idents["bob"].public_key),
                                         secret.prefix, secret.user_id)
        # what a restarted chain looks like from bob's side: his cursor is far ahead
        ahead = bob.next_block + 10_000
        bob._cursor = bob._saved = ahead
        bob.store.set_cursor(bob._cursor_key, ahead)
        await rdvs["alice"].send(idents["bob"].public_key, b"after the restart", kind="offer")
        assert await bob.poll_once() == 1
        assert sinks["bob"].get_nowait() == b"after the restart"
        sinks["bob"].task_done()
        assert bob.stats["chain_rewound"] == 1
        assert await bob.poll_once() == 0
        assert bob.store.cursor(bob._cursor_key) == bob.next_block < ahead
    finally:
        for r in rdvs.values():
            await r.aclose()
            r.store.close()


async def test_lost_rpc_gives_a_clear_error_and_the_watcher_recovers(
        tmp_path: Path, pcs: list[Any]) -> None:
    chain = EmbeddedChain(accounts=3)
    server = RpcServer(chain)
    url = await server.start("127.0.0.1", 0)
    port = int(url.rsplit(":", 1)[1])
    address = await asyncio.to_thread(SignalingContract.deploy, http_web3(url), chain.accounts[0])
    keys = [bytes(a.key).hex() for a in chain.accounts]
    env = ChainEnv("rpc", url, address, http_web3(url), [None, keys[1], keys[2]])
    n = Net(env, tmp_path, pcs)
    try:
        alice = await n.peer("alice", 1, contract_options={"max_backoff": 0.4})
        bob = await n.peer("bob", 2, contract_options={"max_backoff": 0.4})
        befriend(alice, bob)
        await server.aclose()
        await eventually(lambda: rdv(bob).last_error is not None, "the loss noticed")
        error = rdv(bob).last_error
        assert error is not None and "cannot reach" in error and "\n" not in error
        down = await asyncio.wait_for(rdv(bob).status_events.get(), 1)
        assert down.up is False and down.error == error
        with pytest.raises(ChainUnavailable) as failed:
            await alice.connect(bob.contact_id, timeout=5)
        assert "\n" not in str(failed.value)
        await asyncio.sleep(1.0)
        assert rdv(bob).stats["rpc_errors"] >= 2  # kept trying, backing off

        server = RpcServer(chain)
        await server.start("127.0.0.1", port)
        await eventually(lambda: rdv(bob).last_error is None, "the recovery")
        up = await asyncio.wait_for(rdv(bob).status_events.get(), 1)
        assert up == ChainStatus(True, None, up.at) and rdv(bob).stats["rpc_recoveries"] == 1
        conn = await alice.connect(bob.contact_id, timeout=20)
        inc = await bob.accept(10)
        await conn.send_text("back")
        assert (await inc.recv()).text == "back"  # type: ignore[union-attr]
        await n.scan()
    finally:
        for p in reversed(n.started):
            await p.stop()
        await server.aclose()


# -- endpoint records ------------------------------------------------------------------------


async def test_endpoint_records_through_the_contract_and_the_channel(emb: Net) -> None:
    alice, bob = await emb.peer("alice", 0), await emb.peer("bob", 0)
    carol = await emb.peer("carol", 0)
    befriend(alice, bob)
    wg = EndpointRecord("wireguard", "203.0.113.7:51820",
                        {"pubkey": WG_KEY, "allowed": "10.0.0.2/32"})
    emb.secrets |= {b"203.0.113.7", b"51820", WG_KEY.encode()}
    assert await alice.publish_endpoint(bob.contact_id, wg) == 1
    assert rdv(alice).stats["tx_endpoint"] == 1
    await eventually(lambda: bob.stats["endpoints"] == 1, "the record stored")
    assert bob.store is not None
    [got] = bob.store.endpoints(alice.contact_id)
    assert (got.kind, got.endpoint, got.extra, got.via) == ("wireguard", wg.endpoint, wg.extra,
                                                            "contract")
    assert format_wireguard(got.endpoint, got.extra) == (
        f"[Peer]\nPublicKey = {WG_KEY}\nEndpoint = 203.0.113.7:51820\nAllowedIPs = 10.0.0.2/32\n")

    # a stranger's record is not kept (carol is no contact of bob's)
    carol.set_rotation(bob.contact_id, rdv(bob).rotation.prefix, rdv(bob).rotation.user_id)
    await carol.publish_endpoint(bob.contact_id, EndpointRecord("sip", "198.51.100.1:5060"))
    await eventually(lambda: bob.stats["refused_endpoints"] == 1, "the stranger refused")
    # a contact's garbage record inside a good envelope is dropped and counted
    blob = envelope.seal(alice._identity(), bob._identity().public_key, KIND_ENDPOINT,
                         b'{"k":"wireguard"}', now=time.time())
    await rdv(alice).send(bob._identity().public_key, blob, kind="endpoint")
    await eventually(lambda: bob.stats["bad_endpoints"] == 1, "the garbage dropped")

    # over an open connection: no transaction
    conn = await alice.connect(bob.contact_id, timeout=30)
    await bob.accept(10)
    sent = txs(alice)
    sip = EndpointRecord("sip", "[2001:db8::5]:5061", {"user": "alice"})
    assert await alice.publish_endpoint(bob.contact_id, sip, via=conn) == 1
    await eventually(lambda: bob.stats["endpoints"] == 2, "the channel record stored")
    assert txs(alice) == sent
    assert {(r.kind, r.via) for r in bob.store.endpoints()} == {("wireguard", "contract"),
                                                               ("sip", "channel")}


def test_the_leak_scan_finds_a_payload_in_clear() -> None:
    chain = open_chain("embedded")
    with chain.lock:  # type: ignore[union-attr]
        # a contract of its own: the other tests scan the shared one
        address = SignalingContract.deploy(chain.web3, chain.funded[0])
        SignalingContract(chain.web3, address).offer(
            chain.funded[1].address, b"a=ice-ufrag:abcd candidate 127.0.0.1", chain.funded[2])
    env = ChainEnv("embedded", "embedded", address, chain.web3, [], chain.lock)
    with pytest.raises(AssertionError):
        assert_no_leak(env.logs(), {b"127.0.0.1"})
    with pytest.raises(AssertionError):
        assert_no_leak(env.logs(), {b"abcd"})
    assert_no_leak(env.logs(), {b"192.0.2.1"})
