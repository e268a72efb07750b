"""Links to friends kept by two ``hailing up`` processes (issue 12): a link opens at boot
with no send, there is one (not two) when both call, it comes back after a restart of
either side, and a send reuses it. Every daemon and command is its own subprocess on a
``hailing testnet`` subprocess on 127.0.0.1. Every wait has a timeout; nothing is timed."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_helpers import run_testnet
from test_cli_peer import ok, one_error_line, run, send_result
from test_daemon import Up, friends, up, wait_until

LINK_WAIT = 90.0  # a restart, a backoff and a call through the DHT inbox, with room


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    yield from run_testnet(8)


def status(u: Up) -> dict[str, Any]:
    code, body = u.request("GET", "/api/status")
    assert code == 200, body
    return body  # type: ignore[no-any-return]


def linked(a: Up, b: Up) -> bool:
    """Exactly one link between a and b, seen from both sides, and each says its
    friend is linked."""
    sa, sb = status(a), status(b)
    return (len(sa["links"]) == 1 and len(sb["links"]) == 1
            and sa["links"][0]["contact"] == b.contact_id
            and sb["links"][0]["contact"] == a.contact_id
            and [f["linked"] for f in sa["friends"]] == [True]
            and [f["linked"] for f in sb["friends"]] == [True])


def test_a_friend_link_opens_at_boot_and_survives_a_restart_of_either_side(
        bootstrap: str, tmp_path: Path) -> None:
    ids = friends(tmp_path, "alice", "bob")
    for me, other in (("alice", "bob"), ("bob", "alice")):
        assert ok(run("contact", "friend", other, "--data-dir", tmp_path / me)) == [
            f"{ids[other]} friend {other}"]
    dirs = {n: tmp_path / n for n in ("alice", "bob")}
    with contextlib.ExitStack() as stack:
        def start(name: str) -> tuple[Any, Up]:
            cm = up(dirs[name], "--bootstrap", bootstrap)
            d = cm.__enter__()
            stack.callback(cm.__exit__, None, None, None)
            return cm, Up(d, dirs[name])

        _, bob = start("bob")
        _, alice = start("alice")
        wait_until(lambda: linked(alice, bob), LINK_WAIT)  # at boot, nothing sent
        code, body = alice.request("GET", "/api/contacts")
        assert code == 200 and [(c["name"], c["friend"]) for c in body["contacts"]] == [
            ("bob", True)]
        assert status(alice)["ladder"] == "link:5,network:10,dht,mainline"

        r = send_result(run("send", "bob", "over the friend link", "--data-dir", dirs["alice"]))
        assert r["reused"] is True and r["connect_ms"] == 0.0
        bob.d.wait_event(event="message", text="over the friend link")

        assert alice.d.stop() == 0  # restart alice: the link comes back
        _, alice = start("alice")
        wait_until(lambda: linked(alice, bob), LINK_WAIT)

        assert bob.d.stop() == 0  # restart bob: the link comes back
        _, bob = start("bob")
        wait_until(lambda: linked(alice, bob), LINK_WAIT)
        r = send_result(run("send", "alice", "still linked", "--data-dir", dirs["bob"]))
        assert r["reused"] is True
        alice.d.wait_event(event="message", text="still linked")

        # killed (no bye): bob notices by the keepalive; the link comes back all the same
        assert alice.d.stop(signal.SIGKILL) == -signal.SIGKILL
        _, alice = start("alice")
        wait_until(lambda: linked(alice, bob), LINK_WAIT)
        # bob's node lost its DHT channel to alice's with the link: the friend link
        # brought a new one; his driver opened no connection of its own to her node
        # (it would be a second pinned link to her, kept for good)
        wait_until(lambda: ["friend" in x["pins"] for x in status(bob)["overlay"]["links"]]
                   == [True], 30)
        over = status(bob)["overlay"]
        couplings = {k: v for k, v in over["stats"].items()
                     if k in ("link_coupled", "link_couple_failures", "link_reconnected")}
        assert couplings == {} and len(over["links"]) == 1, over

        # unmarked: no longer kept (the link stays until idle or a stop; not re-opened)
        ok(run("contact", "friend", "bob", "--off", "--data-dir", dirs["alice"]))
        wait_until(lambda: status(alice)["friends"] == [], 20)


def test_only_an_allowed_contact_can_be_a_friend(tmp_path: Path) -> None:
    ids = friends(tmp_path, "alice", "bob")
    ok(run("contact", "block", "bob", "--data-dir", tmp_path / "alice"))
    err = one_error_line(run("contact", "friend", ids["bob"], "--data-dir",
                             tmp_path / "alice"), 1)
    assert "only an allowed contact can be a friend" in err


def test_by_default_a_friend_link_carries_the_nodes_dht_traffic(tmp_path: Path) -> None:
    """No --links flag: the overlay is on. The friend link carries the nodes' pinned
    hailing-dht channel, each node's routing table reaches the other's node through it,
    and a lookup of alice's node queries bob's node over it (counted in the overlay's
    stats); with --links 0 there is no overlay and no network rung."""
    friends(tmp_path, "alice", "bob", "carol")
    for me, other in (("alice", "bob"), ("bob", "alice")):
        ok(run("contact", "friend", other, "--data-dir", tmp_path / me))
    # Two testnet nodes: a lookup of alice's node asks every other node, bob's included.
    with contextlib.contextmanager(run_testnet)(2) as small:
        opts = ("--bootstrap", small)
        with up(tmp_path / "bob", *opts) as bd, up(tmp_path / "alice", *opts) as ad:
            bob, alice = Up(bd, tmp_path / "bob"), Up(ad, tmp_path / "alice")
            wait_until(lambda: linked(alice, bob), LINK_WAIT)
            assert status(alice)["ladder"] == "link:5,network:10,dht,mainline"

            def dht_link(u: Up) -> bool:
                links = status(u)["overlay"]["links"]
                return (len(links) == 1 and links[0]["open"] and links[0]["peer"] is not None
                        and "friend" in links[0]["pins"] and links[0]["routed"])

            # routed: the link's ping was answered over it, and the table took that address
            wait_until(lambda: dht_link(alice) and dht_link(bob), 30)
            sa, sb = status(alice)["overlay"], status(bob)["overlay"]
            assert sa["cap"] == 32 and sa["dht_channels"] == 1 and sb["dht_channels"] == 1
            assert sa["links"][0]["peer"] != sb["links"][0]["peer"]
            got = sb["stats"].get("link_received", 0)
            # a send to carol (offline: never up) posts to her inbox: a fresh lookup,
            # which asks bob's node over the friend link
            code, body = alice.request("POST", "/api/send",
                                       {"contact": "carol", "text": "hi", "timeout": 3})
            assert code == 504, body
            wait_until(lambda: status(bob)["overlay"]["stats"]["link_received"] > got, 20)
            assert status(alice)["overlay"]["stats"]["link_received"] >= 2  # the answers
            r = send_result(run("send", "bob", "still one link", "--data-dir", tmp_path / "alice"))
            assert r["reused"] is True
            assert alice.d.stop() == 0 and bob.d.stop() == 0

        # --links 0: no overlay, no network rung; the friend link itself still opens
        with up(tmp_path / "bob", *opts, "--links", "0") as bd, \
                up(tmp_path / "alice", *opts, "--links", "0") as ad:
            bob, alice = Up(bd, tmp_path / "bob"), Up(ad, tmp_path / "alice")
            wait_until(lambda: linked(alice, bob), LINK_WAIT)
            sa = status(alice)
            assert sa["overlay"] is None and sa["ladder"] == "link:5,dht,mainline"
            assert alice.d.stop() == 0 and bob.d.stop() == 0


def test_a_bad_links_value_is_one_line(tmp_path: Path) -> None:
    err = one_error_line(run("up", "--links", "lots", "--data-dir", tmp_path / "a"), 2)
    assert "--links: expected a number of links, 0 to 256" in err and "'lots'" in err
    err = one_error_line(run("up", "--links", "-1", "--data-dir", tmp_path / "a"), 2)
    assert "0 to 256" in err
    err = one_error_line(run("config", "set", "links", "300", "--data-dir", tmp_path / "a"), 1)
    assert "links is a number of links, 0 to 256" in err
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "a" / "config.toml").write_text("links = true\n")
    err = one_error_line(run("up", "--data-dir", tmp_path / "a"), 1)
    assert "line 1: links must be a number, e.g. links = 32" in err
