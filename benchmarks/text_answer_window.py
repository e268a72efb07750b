"""How long after the answer text was made can it still be finished? (the text coupler)

The answering side's ICE checks start when it makes its answer; a person then carries
the answer text back. For each ``--delay D``: two Peers on a loopback testnet (ICE on
127.0.0.1), a text offer answered at once, the answer pasted at the caller D seconds
later, with the answering side's channel wait lifted (so only ICE decides): whether the
link opened, and how long after the paste. ``hailing.session.text_coupler.ANSWER_HOLD``
is set below the longest delay that connects.

    python benchmarks/text_answer_window.py --delay 45 --delay 110 --delay 150 [--out FILE]

Each delay runs in turn (minutes in all: the delays are real time).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import emit
from text_sizes import text_pair

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


async def attempt(delay: float) -> dict[str, Any]:
    from session_doubles import peer_net

    from hailing.errors import HailingError
    from hailing.rtc import set_host_addresses
    from hailing.session.text_coupler import text_offer

    set_host_addresses(["127.0.0.1"])
    with tempfile.TemporaryDirectory() as tmp:
        async with peer_net(Path(tmp), 4) as net:
            a, b, ta, tb = await text_pair(net)
            b.manager.channel_waits["text"] = delay + 120.0  # only ICE decides
            offer, call = await text_offer(a.manager, ta, b.public_key)
            pasted = await tb.paste(offer, "offer")
            assert pasted.answer is not None
            await asyncio.sleep(delay)
            t0 = time.monotonic()
            await ta.paste(pasted.answer, "answer")
            try:
                async with asyncio.timeout(60):
                    await call
                    await b.accept(timeout=30)
            except (HailingError, TimeoutError) as exc:
                return {"delay_s": delay, "connected": False,
                        "error": str(exc) or type(exc).__name__}
            return {"delay_s": delay, "connected": True,
                    "open_after_paste_s": round(time.monotonic() - t0, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, action="append", default=None,
                        help="seconds between the answer and the paste (repeatable)")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    args = parser.parse_args()
    rows = [asyncio.run(attempt(d)) for d in (args.delay or [45.0, 110.0, 150.0])]
    emit({"benchmark": "text_answer_window", "rows": rows}, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
