"""Sizes of sealed browser offers and answers: audio (+ data channel) and audio+video
(+ data channel), with 1, 4 and 8 ICE candidates, against the DHT's value limit.

The descriptions are Chromium's own, made live: a page of a local HTTP server (a secure
context) builds two RTCPeerConnections as the web app does (the caller adds the data
channel "hailing" and its fake camera/microphone tracks, the callee answers with its
own), waits for ICE gathering to complete and hands both SDPs over. Chromium runs in a
network namespace with only ``lo`` (the script re-runs itself under ``unshare --net``
when it is root and not in one), so each media section carries one host candidate on
127.0.0.1.

The candidate counts are then set by rewriting the candidate lines, in Chromium's own
format: every media section that carried candidates gets the first N of
:data:`CANDIDATES` (udp host IPv4, udp host IPv6, tcp host IPv4 and IPv6, srflx,
a second interface's udp and tcp host, relay; documentation and private addresses, a
port of its own per section as Chromium picks them). 1 candidate is what a browser
sends once the daemon filtered its host candidates to its ICE host (``--ice-host``).

Each description is sealed as the daemon seals a page's SDP (``session/external.py``,
``session/connections.py``): the body is ``pack_external_sdp`` (SDP text deflated with
the preset dictionary, format 2; no candidate filtering here), the offer an envelope of
kind OFFER (after the reply hint a DHT caller's offer carries, when the session has
one: a direct push token and the caller node's address), the answer of kind ANSWER with
the offer's reference first. Reported per case: SDP text bytes, body bytes, sealed bytes and whether
the sealed envelope fits a DHT inbox value (``dht.inbox.MAX_VALUE``).

    python benchmarks/sdp_sizes.py [--out FILE] [--save-sdp DIR]

``--save-sdp`` writes the captured Chromium descriptions there (as tests/data/sdp/ holds
them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "browser"))

from browser_harness import (  # noqa: E402
    chromium,
    chromium_path,
    run_in_loopback_netns,
    static_page,
)

COUNTS = (1, 4, 8)

#: Candidate lines in Chromium's format; ``{port}`` is the section's own port.
CANDIDATES = (
    "a=candidate:1971180717 1 udp 2122194687 192.168.1.20 {port} typ host generation 0 network-id 1",
    "a=candidate:3189445965 1 udp 2122265343 2001:db8::20 {port2} typ host generation 0 network-id 2",
    "a=candidate:2346123321 1 tcp 1518214911 192.168.1.20 9 typ host tcptype active generation 0 network-id 1",
    "a=candidate:1085391321 1 tcp 1518285567 2001:db8::20 9 typ host tcptype active generation 0 network-id 2",
    "a=candidate:842163049 1 udp 1686052607 203.0.113.7 {port3} typ srflx raddr 192.168.1.20 rport {port} generation 0 network-id 1",
    "a=candidate:4233069003 1 udp 2122129151 10.8.0.6 {port4} typ host generation 0 network-id 3",
    "a=candidate:3001449083 1 tcp 1518149375 10.8.0.6 9 typ host tcptype active generation 0 network-id 3",
    "a=candidate:1424382963 1 udp 41885439 198.51.100.9 {port5} typ relay raddr 203.0.113.7 rport {port3} generation 0 network-id 1",
)

#: JS: Chromium's offer and answer for ``media`` ("audio" or "video"), ICE gathered.
CAPTURE = """
async (media) => {
  const gathered = (pc) => new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
  const constraints = { audio: true, video: media === "video" };
  const caller = new RTCPeerConnection(), callee = new RTCPeerConnection();
  caller.createDataChannel("hailing");
  const mine = await navigator.mediaDevices.getUserMedia(constraints);
  mine.getTracks().forEach((t) => caller.addTrack(t, mine));
  await caller.setLocalDescription();
  await gathered(caller);
  await callee.setRemoteDescription(caller.localDescription);
  const theirs = await navigator.mediaDevices.getUserMedia(constraints);
  theirs.getTracks().forEach((t) => callee.addTrack(t, theirs));
  await callee.setLocalDescription();
  await gathered(callee);
  const out = { offer: caller.localDescription.sdp, answer: callee.localDescription.sdp };
  caller.close(); callee.close();
  mine.getTracks().forEach((t) => t.stop()); theirs.getTracks().forEach((t) => t.stop());
  return out;
}
"""


def capture() -> tuple[dict[str, dict[str, str]], str]:
    """{"audio"|"video": {"offer": SDP, "answer": SDP}} from Chromium, and its version."""
    out: dict[str, dict[str, str]] = {}
    with chromium() as browser, static_page() as origin:
        page = browser.new_context().new_page()
        page.goto(origin + "/")
        for media in ("audio", "video"):
            out[media] = page.evaluate(CAPTURE, media)
        version = str(browser.version)
    return out, version


def with_candidates(sdp: str, n: int) -> str:
    """``sdp`` with its candidate lines replaced by N of :data:`CANDIDATES` in each media
    section that had any."""
    sections = re.split(r"(?=^m=)", sdp, flags=re.MULTILINE)
    out = [sections[0]]
    for i, section in enumerate(sections[1:]):
        lines = section.split("\r\n")
        if not any(line.startswith("a=candidate:") for line in lines):
            out.append(section)
            continue
        base = 40000 + 1000 * i
        ports = {"port": base + 11, "port2": base + 23, "port3": base + 37, "port4": base + 41,
                 "port5": base + 59}
        new = [c.format(**ports) for c in CANDIDATES[:n]]
        kept: list[str] = []
        for line in lines:
            if line.startswith("a=candidate:"):
                kept.extend(new)
                new = []
            elif not line.startswith("a=end-of-candidates"):
                kept.append(line)
        out.append("\r\n".join(kept))
    return "".join(out)


def sealed_sizes(offer_sdp: str, answer_sdp: str) -> dict[str, Any]:
    """Text, body and sealed sizes of an offer and its answer, sealed as the session does."""
    from hailing.dht.inbox import MAX_VALUE
    from hailing.identity import Identity
    from hailing.session.connections import ANSWER_REF
    from hailing.session.descriptions import decode_description
    from hailing.session.external import pack_external_sdp
    from hailing.signaling import envelope
    from hailing.signaling.replay import ReplayCache

    alice, bob = Identity.generate(), Identity.generate()
    now = time.time()
    offer_body, _ = pack_external_sdp(offer_sdp, None)
    answer_body, _ = pack_external_sdp(answer_sdp, None)
    hint = reply_hint()
    sealed_body = offer_body if hint is None else _offer_body()(offer_body, hint)
    offer = envelope.seal(alice, bob.public_key, envelope.KIND_OFFER, sealed_body, now=now,
                          ttl=30)
    opened = envelope.open_envelope(bob, offer, now=now, replay=ReplayCache())
    answer = envelope.seal(bob, alice.public_key, envelope.KIND_ANSWER,
                           opened.nonce[:ANSWER_REF] + answer_body, now=now)
    for body, kind, sdp in ((offer_body, "offer", offer_sdp),
                            (answer_body, "answer", answer_sdp)):
        decoded = decode_description(body, kind)  # type: ignore[arg-type]
        assert _same(decoded.sdp, sdp), f"the {kind} body does not round-trip"
    return {
        "offer": {"sdp_text": len(offer_sdp.encode()), "body": len(sealed_body),
                  "sealed": len(offer), "fits_dht_value": len(offer) <= MAX_VALUE},
        "answer": {"sdp_text": len(answer_sdp.encode()), "body": len(answer_body),
                   "sealed": len(answer), "fits_dht_value": len(answer) <= MAX_VALUE},
    }


def _offer_body() -> Any:
    from hailing.session import descriptions

    return getattr(descriptions, "offer_body", None)


def reply_hint() -> bytes | None:
    """A reply hint as a DHT caller's offer carries it (a direct push token and an IPv4
    address and port), when this version of the session seals one; else None."""
    if _offer_body() is None:
        return None
    from hailing.dht import tokens

    return os.urandom(getattr(tokens, "TOKEN_BYTES", 8)) + bytes([192, 0, 2, 20, 0x1a, 0xe1])


def _same(decoded: str, sdp: str) -> bool:
    """The same description, line endings aside (the codec may normalize them)."""
    def norm(text: str) -> str:
        return text.replace("\r\n", "\n").strip()

    return norm(decoded) == norm(sdp)


def git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=HERE, check=False).stdout.strip()
    except OSError:
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the JSON here too")
    parser.add_argument("--save-sdp", metavar="DIR",
                        help="write the captured Chromium descriptions into DIR")
    args = parser.parse_args()
    path, why = chromium_path()
    if path is None:
        raise SystemExit(f"error: {why}")
    run_in_loopback_netns()
    from hailing.dht.inbox import MAX_VALUE

    captured, version = capture()
    major = version.split(".")[0]
    if args.save_sdp:
        folder = Path(args.save_sdp)
        folder.mkdir(parents=True, exist_ok=True)
        for media, pair in captured.items():
            name = "audio-data" if media == "audio" else "av-data"
            for kind, sdp in pair.items():
                (folder / f"chromium{major}-{kind}-{name}-loopback.sdp").write_text(sdp)
    cases: dict[str, Any] = {}
    for media, pair in captured.items():
        label = "audio" if media == "audio" else "audio+video"
        cases[label] = {"as_captured": {
            "offer_candidate_lines": pair["offer"].count("a=candidate:"),
            **sealed_sizes(pair["offer"], pair["answer"])}}
        for n in COUNTS:
            cases[label][f"{n}_candidates"] = sealed_sizes(
                with_candidates(pair["offer"], n), with_candidates(pair["answer"], n))
    hint = reply_hint()
    result = {
        "benchmark": "sdp_sizes",
        "dht_value_limit": MAX_VALUE,
        "offer_reply_hint_bytes": None if hint is None else len(hint),
        "cases": cases,
        "environment": {"chromium": version, "python": platform.python_version(),
                        "aiortc": metadata.version("aiortc"), "git_head": git_head()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
