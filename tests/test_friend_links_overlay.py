"""The overlay on by default in the daemon (issue 12, seed 000: the overlay's own traffic
over the links to friends): ``--links`` and config.toml's ``links``, and a node that also
has UDP addressing a peer it reaches through a pinned link (a friend link's DHT channel)
through that link, so that its DHT queries to that peer travel over it.

In process (no ``hailing up`` here: tests/test_friend_links_daemon.py runs two)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from session_doubles import eventually

from hailing.cli import build_parser, main
from hailing.cli._config import MAX_LINKS
from hailing.cli._shared import prepare
from hailing.cli.up import _daemon_parts
from hailing.daemon.dhtnode import DEFAULT_LINKS, DhtSettings, overlay_status
from hailing.daemon.dhtnode import MAX_LINKS as DAEMON_MAX_LINKS
from hailing.node import DhtNode
from hailing.testnet import testnet as udp_testnet
from hailing.transport.datachannel import LinkDriver, couple_direct
from hailing.transport.linkaddr import LinkAddr


def test_the_daemon_runs_the_overlay_by_default() -> None:
    assert DhtSettings().links == DEFAULT_LINKS == 32
    assert MAX_LINKS == DAEMON_MAX_LINKS  # the CLI's copy (no DHT import to parse a file)


def test_links_comes_from_the_flag_then_config_toml_then_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d"
    monkeypatch.delenv("HAILING_DATA_DIR", raising=False)

    def links(*argv: str) -> int:
        args = build_parser().parse_args(["up", "--data-dir", str(data), "--bootstrap",
                                          "127.0.0.1:1", *argv])
        prepare(args)
        dht = _daemon_parts(args)[1]
        assert isinstance(dht, DhtSettings)
        return dht.links

    assert links() == DEFAULT_LINKS
    assert links("--links", "0") == 0
    assert main(["config", "set", "links", "0", "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out == "links = 0\n"  # a TOML integer
    assert links() == 0
    assert links("--links", "16") == 16  # the flag wins
    (data / "config.toml").write_text("links = 8\n")
    assert links() == 8
    (data / "config.toml").write_text('links = "12"\n')  # a string is taken too
    assert links() == 12
    assert main(["config", "show", "--data-dir", str(data)]) == 0
    assert "\nlinks = 12\n" in capsys.readouterr().out
    assert main(["config", "unset", "links", "--data-dir", str(data)]) == 0
    assert links() == DEFAULT_LINKS
    help_text = build_parser()._subparsers._group_actions[0].choices["up"].format_help()  # type: ignore[union-attr]
    assert f"default {DEFAULT_LINKS}" in " ".join(help_text.split())


@pytest.fixture
async def pair() -> AsyncIterator[tuple[DhtNode, DhtNode]]:
    """Two nodes with UDP and a link driver (no ``closest`` or ``level`` pins: the tests
    pin), on a 3-node UDP testnet, each in the other's routing table at its UDP address."""
    async with udp_testnet(3) as net:
        nodes = [DhtNode(("127.0.0.1", 0), links=LinkDriver(cap=4, closest=0, levels=0),
                         bootstrap=[net[0].address]) for _ in range(2)]
        try:
            for node in nodes:
                await node.start()
                await node.bootstrap()
            a, b = nodes
            await a.ping(b.address)
            await b.ping(a.address)
            entry = a.core.table.get(b.node_id)
            assert entry is not None and entry.addr == b.address
            yield a, b
        finally:
            for node in nodes:
                await node.stop()


def _addr(node: DhtNode, peer: DhtNode) -> Any:
    entry = node.core.table.get(peer.node_id)
    return None if entry is None else entry.addr


async def test_a_pinned_link_carries_the_dht_queries_to_its_peer(
        pair: tuple[DhtNode, DhtNode]) -> None:
    """As a friend link's DHT channel: pinned, the peer's id learned from its hello.
    Each table then reaches the other node through the link, and a lookup toward b's
    id (and a BEP44 get) asks b over the link."""
    a, b = pair
    assert a.links is not None and b.links is not None
    link_a, link_b = await couple_direct(a.links, b.links, pinned=True, tell_ids=False)
    await eventually(lambda: _addr(a, b) == link_a.addr and _addr(b, a) == link_b.addr,
                     "each node's entry for the other at the link", 15)
    assert type(link_a.addr) is LinkAddr
    assert a.stats["link_readdressed"] == 1 and b.stats["link_readdressed"] == 1
    status = overlay_status(a, None)
    assert status is not None and [x["routed"] for x in status["links"]] == [True]

    target = await b.put(b"over the friend link")
    received = b.links.stats["link_received"]
    answers = a.links.stats["link_received"]
    found = await a.find_node(b.node_id)
    assert found[0].id == b.node_id
    assert b.links.stats["link_received"] > received  # a's query came over the link
    assert a.links.stats["link_received"] > answers  # and b's answer went back on it
    assert await a.get(target) == b"over the friend link"


async def test_an_unpinned_link_leaves_the_udp_address_alone(
        pair: tuple[DhtNode, DhtNode]) -> None:
    """A link the overlay opened for a lookup (not pinned: not a friend's, not one of
    the ``closest``) may be evicted soon: the table keeps the address that works."""
    a, b = pair
    assert a.links is not None and b.links is not None
    link_a, _ = await couple_direct(a.links, b.links, tell_ids=False)
    await eventually(lambda: link_a.peer_id == b.node_id, "b's hello", 15)
    await a.ping(link_a.addr)  # answered over the link; the table keeps the UDP entry
    assert _addr(a, b) == b.address and a.stats.get("link_readdressed", 0) == 0
    status = overlay_status(a, None)
    assert status is not None and [x["routed"] for x in status["links"]] == [False]


async def test_the_network_rung_needs_an_open_link_for_an_offer() -> None:
    """A daemon that just started has no link yet: an offer through the network rung
    fails at once (the Dialer goes on to the DHT inbox) instead of forwarding over UDP
    to the contact's node's address from before its restart (4 s of query timeout,
    measured: benchmarks/daemon_overlay.py). An answer goes back the way its offer came."""
    import re

    from hailing.errors import NotFoundError
    from hailing.session.network_coupler import NO_LINK, NetworkCoupler

    class Link:
        is_open = True

    class Driver:
        def __init__(self) -> None:
            self.items: list[Link] = []

        def links(self) -> list[Link]:
            return list(self.items)

    class Fwd:
        def __init__(self) -> None:
            self.driver = Driver()
            self.sent: list[bytes] = []

        def handle(self, kind: bytes, handler: Any) -> None:
            return None

        async def send_toward(self, target: bytes, kind: bytes, payload: bytes,
                              timeout: float) -> bytes:
            self.sent.append(payload)
            return b""

    fwd = Fwd()
    coupler = NetworkCoupler(lambda: fwd, lambda p: b"n" * 20, lambda: b"o" * 20)
    with pytest.raises(NotFoundError, match=re.escape(NO_LINK)):
        await coupler.send(b"p" * 32, b"offer", "offer")
    assert coupler.stats["network_no_link"] == 1 and fwd.sent == []
    assert await coupler.send(b"p" * 32, b"answer", "answer") == 1  # no check
    fwd.driver.items.append(Link())
    assert await coupler.send(b"p" * 32, b"offer", "offer") == 1
    assert fwd.sent == [b"answer", b"offer"]
