"""Sizes of the text coupler's texts and QR codes: base64url (the copy form, QR byte
mode) against base45 (the QR form, QR alphanumeric mode), for real sealed offers and
answers.

Two Peers on a loopback testnet (ICE host candidates on 127.0.0.1: one candidate, as
on a machine with one address) make an offer through the text coupler and answer it;
``--pad`` adds that many bytes to each envelope to stand for more candidates (an SDP
candidate line packs to about 10 bytes; a srflx one with its related address to ~20).
Reported per envelope: its bytes, each form's characters, and the QR code's version and
modules per side (error correction M, the one the app draws; no quiet zone).

    python benchmarks/text_sizes.py [--pad 0 --pad 100 ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from _report import emit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def measure(blob: bytes, kind: str) -> dict[str, Any]:
    from hailing.identity import qr_matrix
    from hailing.signaling.textcode import encode_text, qr_text

    out: dict[str, Any] = {"kind": kind, "envelope_bytes": len(blob)}
    for name, text in (("base64url", encode_text(blob, kind)),  # type: ignore[arg-type]
                       ("base45", qr_text(blob, kind))):  # type: ignore[arg-type]
        modules = len(qr_matrix(text, border=0))
        out[name] = {"chars": len(text), "qr_modules": modules, "qr_version": (modules - 17) // 4}
    return out


async def text_pair(net: Any) -> tuple[Any, Any, Any, Any]:
    """Peers a and b of ``net`` with the text coupler, a in b's contacts: (a, b, a's text
    coupler, b's text coupler)."""
    from hailing.session.text_coupler import TextCoupler

    a = await net.peer("a", text=True)
    b = await net.peer("b", text=True)
    b.contacts.add(a.contact_id, "a")
    ta, tb = a.coupler("text"), b.coupler("text")
    assert isinstance(ta, TextCoupler) and isinstance(tb, TextCoupler)
    return a, b, ta, tb


async def envelopes() -> list[tuple[bytes, str]]:
    from session_doubles import peer_net

    from hailing.rtc import set_host_addresses
    from hailing.session.text_coupler import text_offer

    set_host_addresses(["127.0.0.1"])
    with tempfile.TemporaryDirectory() as tmp:
        async with peer_net(Path(tmp), 4) as net:
            a, b, ta, tb = await text_pair(net)
            offer, call = await text_offer(a.manager, ta, b.public_key)
            pasted = await tb.paste(offer, "offer")
            assert pasted.answer is not None
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            return [(offer, "offer"), (pasted.answer, "answer")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pad", type=int, action="append", default=None,
                        help="extra envelope bytes (repeatable; default 0, 100, 300)")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    args = parser.parse_args()
    pads = args.pad or [0, 100, 300]
    rows = []
    for blob, kind in asyncio.run(envelopes()):
        for pad in pads:
            # random bytes, as ciphertext is (a long run of zeros would be a run of
            # digits, which the QR encoder packs in numeric mode instead)
            filler = random.Random(pad).randbytes(pad)
            rows.append({"pad": pad, **measure(blob + filler, kind)})
    report = {"benchmark": "text_sizes", "error_correction": "M", "rows": rows}
    emit(report, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
