"""The NAT matrix: daemons behind every pair of NAT kinds connect, with no STUN or TURN
server configured anywhere, directly wherever the NATs allow hole punching and through a
volunteer relay elsewhere; a blocked caller receives nothing at all from the callee.

One NAT lab for the module (:mod:`natmatrix_world`): three public hailing DHT nodes
(the last also a coturn relay, volunteered on the DHT), one daemon behind each kind for
calling and one behind each kind for being called (10 daemons, each with its own data
directory; every daemon is ``hailing up --bootstrap PUBLIC_NODE`` and nothing else),
and all 25 pairs dialed in turn. Skipped where the lab cannot run, required under
CI=true. Every wait has a timeout; nothing here is timed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from natlab import Lab
from natmatrix_world import KINDS, LabDaemon, NatWorld, expected_path

from hailing.identity import parse_contact_id
from hailing.services.contacts import ContactBook

#: How long one call may take (a QueryTimeout after that).
CALL_TIMEOUT = 30.0
#: How long the blocked caller tries.
BLOCKED_TIMEOUT = 6.0


@pytest.fixture(scope="module")
def world(natlab_module: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatWorld]:
    w = NatWorld(natlab_module, tmp_path_factory.mktemp("natmatrix"))
    try:
        w.start()
        yield w
    finally:
        w.close()


def path_word(path: dict[str, Any] | None) -> str:
    if not path or path.get("local") == "unknown":
        return "unknown"
    return "relayed" if path["relayed"] else "direct"


def describe(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['caller']:>18} -> {r['callee']:<18} {r['got']:<8} "
                     f"(expected {r['expected']}) {json.dumps(r['result'])}" for r in rows)


def test_every_pair_connects_directly_where_the_nats_allow_it_else_relayed(
        world: NatWorld, tmp_path: Path) -> None:
    for d in world.daemons.values():  # nobody configured a STUN or TURN server
        assert list(d.args) == ["--bootstrap", world.bootstrap], d.args
    rows = []
    for caller in KINDS:
        for callee in KINDS:
            result = world.call(caller, callee, timeout=CALL_TIMEOUT)
            rows.append({"caller": caller, "callee": callee, "result": result,
                         "got": path_word(result.get("path")),
                         "callee_path": world.callee_path(caller, callee),
                         "expected": expected_path(caller, callee)})
    (tmp_path / "matrix.json").write_text(json.dumps(rows, indent=1))
    print("\n" + describe(rows))
    failed = [r for r in rows if not r["result"].get("delivered")]
    assert not failed, "pairs that did not connect:\n" + describe(failed)
    wrong = [r for r in rows if r["got"] != r["expected"]]
    assert not wrong, "pairs on another path than the NATs allow:\n" + describe(wrong)
    for r in rows:  # both ends agree on whether a relay carries it
        assert r["callee_path"] is not None and \
            r["callee_path"]["relayed"] == r["result"]["path"]["relayed"], r
        assert r["result"]["path"]["local"] in ("host", "relay")
        if r["got"] == "direct" and r["callee"] != "public":
            # a NATed callee is reached at its address as a DHT node's STUN saw it, or
            # as its checks came (hole punching)
            assert r["result"]["path"]["remote"] in ("srflx", "prflx"), r


def _packets(lines: list[str]) -> list[tuple[str, str]]:
    """tcpdump ``-A`` output as (header line, the packet's ASCII) pairs."""
    out: list[tuple[str, str]] = []
    for line in lines:
        if " IP " in line and " > " in line and ": UDP" in line:
            out.append((line, ""))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + line)
    return out


def _source_port(header: str) -> int:
    """The source port of a tcpdump header line (``... IP 198.19.1.2.6881 > ...``)."""
    return int(header.split(" IP ", 1)[1].split(" > ", 1)[0].rsplit(".", 1)[1])


def _call_captured(world: NatWorld, src: LabDaemon, dst: LabDaemon,
                   timeout: float) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``src`` calls ``dst`` while ``dst``'s namespace captures every datagram from
    ``dst``'s host to ``src``'s public address."""
    flt = f"-A udp and src host {dst.host.address} and dst host {src.host.public_address}"
    with dst.host.capture(flt, settle=1.0) as cap:
        result = world.send(src, dst, timeout=timeout)
    return result, _packets(cap.lines)


def test_a_blocked_caller_receives_nothing_from_the_callee(world: NatWorld) -> None:
    callee = world.callee("full-cone")  # the NAT that would let anything through
    # mallory: a public host (its public address is its own), a read-only DHT node (in
    # nobody's routing table, so no DHT traffic of the callee's own goes to it)
    mallory = world.add_daemon("mallory", "public", "--read-only")
    with ContactBook(callee.data_dir) as book:  # the running callee sees it at once
        book.block(parse_contact_id(mallory.contact_id), "mallory")
    with ContactBook(mallory.data_dir) as book:
        book.add(callee.contact_id, callee.name)
    world.wait_daemons()
    # The callee takes calls from strangers too (its public inbox), so that mallory's
    # offer does reach it and its policy refuses it (a callee that does not accept
    # strangers never even listens where a blocked caller posts).
    assert callee.driver is not None
    status, body = callee.driver.request("POST", "/api/status", {"accept_any": True})
    assert status == 200 and body["accept_any"] is True, body

    result, packets = _call_captured(world, mallory, callee, BLOCKED_TIMEOUT)
    assert result.get("status") == 504, result  # exactly what an offline callee reads as
    refused = [e for e in callee.events("call") if e.get("from") == mallory.contact_id]
    assert refused and refused[-1]["accepted"] is False, callee.events("call")
    # Nothing from the callee's host reached the blocked caller's address but answers
    # from its DHT port to the caller's own requests (the callee's node may be one it
    # asked while posting the offer, or one of the hailing nodes its ICE asked for its
    # reflexive address: a STUN answer, like a KRPC one, says nothing of the callee):
    # no ICE check, no DTLS, no query, no answer pushed.
    not_dht = [h for h, _ in packets if _source_port(h) != callee.dht_port]
    assert not not_dht, "the blocked caller received:\n" + "\n".join(not_dht)
    queries = [h for h, payload in packets if "1:y1:q" in payload]
    assert not queries, "the callee's node queried the blocked caller:\n" + "\n".join(queries)
    assert not any("hailing_push" in payload for _, payload in packets)
    print(f"\nblocked caller: {len(packets)} datagrams from the callee's host, "
          "all from its DHT port, answers to its own requests")

    # The same capture sees an accepted caller's call: it is not blind.
    caller = world.caller("public")
    world.hang_up("public", "full-cone")
    result, packets = _call_captured(world, caller, callee, CALL_TIMEOUT)
    assert result.get("delivered"), result
    media = [h for h, _ in packets if _source_port(h) != callee.dht_port]
    assert media, packets
    print(f"accepted caller: {len(media)} ICE/DTLS/SCTP datagrams from the callee's host")
