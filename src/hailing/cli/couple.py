"""``hailing couple``: connect to a contact by copying texts, with no network to signal.

Three commands, all through the running daemon (``hailing up``), which holds the peer
connections in between (:mod:`hailing.daemon.text`)::

    A$ hailing couple offer bob           # prints an offer text; A's daemon waits 10 min
    B$ hailing couple answer 'hailing:1:o:...'   # prints the answer text
    A$ hailing couple finish 'hailing:1:a:...'   # connects: one JSON line, the link

``-`` reads the text from stdin (``hailing couple answer - < offer.txt``). ``--qr`` also
draws the text's QR code on the terminal (on stderr, so stdout stays the text alone).
``--json`` prints the daemon's answer as one JSON object instead. An offer that gets no
answer (expired, used, not sealed to you, or from a caller you do not take calls from:
the same for all) prints ``hailing: nothing to answer: ...`` and exits 1; a damaged or
wrong text, one line and exit 1 too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import DaemonError, LocalProtocolError
from ._common import _positive_seconds
from ._shared import add_contact_arg, add_data_dir

#: Seconds a request may take beyond the daemon's own wait.
MARGIN = 15.0
#: Longest text read from stdin (the daemon refuses longer ones anyway).
MAX_STDIN = 64 * 1024


async def _client(args: argparse.Namespace) -> Any:
    from ..daemon.client import find_daemon

    client = await find_daemon(args.data_dir)
    if client is None:
        raise DaemonError(f"no daemon runs for {args.data_dir}: 'hailing couple' needs "
                          "'hailing up' running (it holds the connection between the texts)")
    return client


def _text_arg(text: str) -> str:
    if text != "-":
        return text
    data = sys.stdin.read(MAX_STDIN + 1)
    if len(data) > MAX_STDIN:
        raise LocalProtocolError("the text on stdin is too long for a hailing text")
    if not data.strip():
        raise LocalProtocolError("no text on stdin")
    return data


def _show(args: argparse.Namespace, result: dict[str, Any], note: str) -> None:
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "qr_svg"}), flush=True)
        return
    if args.qr:
        from ..identity import text_qr

        print(text_qr(result["qr"]), file=sys.stderr, flush=True)
    print(note, file=sys.stderr, flush=True)
    print(result["text"], flush=True)


async def cmd_offer(args: argparse.Namespace) -> int:
    from ..identity import format_contact_id

    client = await _client(args)
    ref = format_contact_id(args.contact) if isinstance(args.contact, bytes) else args.contact
    result = await client.request("POST", "/api/couple/offer", {"contact": ref},
                                  timeout=MARGIN + 30.0)
    minutes = result["expires_s"] / 60
    _show(args, result, f"give this offer text to the contact (it is valid {minutes:.0f} "
          "minutes); then run 'hailing couple finish ANSWER-TEXT' with their answer:")
    return 0


async def cmd_answer(args: argparse.Namespace) -> int:
    client = await _client(args)
    result = await client.request("POST", "/api/couple/answer", {"text": _text_arg(args.text)},
                                  timeout=MARGIN + 30.0)
    who = result.get("name") or result["from"]
    _show(args, result, f"an offer from {who}: give this answer text back; it must be "
          f"finished within {result['finish_within_s']:.0f} s:")
    return 0


async def cmd_finish(args: argparse.Namespace) -> int:
    client = await _client(args)
    result = await client.request("POST", "/api/couple/finish",
                                  {"text": _text_arg(args.text), "timeout": args.timeout},
                                  timeout=MARGIN + args.timeout)
    print(json.dumps(result), flush=True)
    return 0


def add_couple_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "couple", help="connect by copying texts (or QR codes): offer, answer, finish",
        description="Connect to a contact with no network to signal through: an offer and "
        "its answer travel as short texts that you copy (a chat, a mail, a QR code on a "
        "screen). Each text is sealed to its recipient: whoever sees it learns nothing. "
        "Needs the daemon ('hailing up') on both sides. Steps: A runs 'hailing couple "
        "offer B' and gives B the text; B runs 'hailing couple answer TEXT' and gives A "
        "the answer text; A runs 'hailing couple finish TEXT': both daemons now have an "
        "open link (sends and chats use it).")
    couple = p.add_subparsers(dest="couple_command", required=True, parser_class=parser_class,
                              metavar="STEP")

    o = couple.add_parser(
        "offer", help="print an offer text for CONTACT",
        description="Seal an offer to CONTACT and print it as a text (one line on stdout; "
        "what to do next on stderr). The daemon waits 10 minutes for the answer; a new "
        "offer to the same contact replaces the waiting one.")
    add_contact_arg(o)
    _common_options(o)
    o.set_defaults(func=cmd_offer)

    a = couple.add_parser(
        "answer", help="answer an offer TEXT: print the answer text",
        description="Take a contact's offer text and print the answer text to give back "
        "(one line on stdout). Your call policy decides first: an offer from someone you "
        "do not take calls from, an expired, used or damaged offer, or one sealed to "
        "someone else gives 'nothing to answer' (exit 1). The answer must be finished "
        "within 90 seconds (your side's connection waits that long; it says so).")
    a.add_argument("text", metavar="TEXT", help="the offer text ('hailing:1:o:...'), or - "
                   "to read it from stdin")
    _common_options(a)
    a.set_defaults(func=cmd_answer)

    f = couple.add_parser(
        "finish", help="finish with an answer TEXT: connect",
        description="Take the contact's answer text to your offer and connect. Prints one "
        "JSON line (to, connect_ms, via 'text', path) once the link is open and both "
        "sides proved who they are.")
    f.add_argument("text", metavar="TEXT", help="the answer text ('hailing:1:a:...'), or - "
                   "to read it from stdin")
    f.add_argument("--timeout", type=_positive_seconds, default=60.0, metavar="S",
                   help="seconds to wait for the link to open (default and at most 60)")
    add_data_dir(f)
    f.set_defaults(func=cmd_finish)


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qr", action="store_true",
                   help="also draw the text as a QR code (on stderr)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (text, qr, ...) instead of the text")
    add_data_dir(p)
