"""The text coupler through the real CLI: two ``hailing up`` processes on a ``hailing
testnet`` subprocess (ICE on 127.0.0.1), ``hailing couple offer/answer/finish`` each its
own process, the texts carried by the test as a person would. Every wait has a timeout;
nothing here is timed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_helpers import run_testnet
from test_cli_peer import HAILING, TIMEOUT, env, no_traceback, ok, one_error_line, run
from test_daemon import Up, friends, up

from hailing.signaling.textcode import PREFIX, decode_text, text_kind

NOTHING = "hailing: nothing to answer"


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    yield from run_testnet(8)


def piped(*args: str | Path, text: str) -> subprocess.CompletedProcess[bytes]:
    """A command with ``text`` on its stdin."""
    proc = subprocess.run([*HAILING, *map(str, args)], input=text.encode(),
                          capture_output=True, env=env(), timeout=TIMEOUT * 3, check=False)
    no_traceback(proc.stdout, proc.stderr)
    return proc


def one_text(proc: subprocess.CompletedProcess[bytes], kind: str) -> str:
    out = ok(proc)
    assert len(out) == 1 and out[0].startswith(PREFIX) and text_kind(out[0]) == kind, out
    decode_text(out[0], kind)  # type: ignore[arg-type]
    return out[0]


def test_offer_answer_finish_through_two_daemons(bootstrap: str, tmp_path: Path) -> None:
    ids = friends(tmp_path, "alice", "bob")
    a_dir, b_dir = tmp_path / "alice", tmp_path / "bob"
    # no --bootstrap needed for the texts, but a daemon on a DHT is the usual one
    with up(b_dir, "--bootstrap", bootstrap) as bd, up(a_dir, "--bootstrap", bootstrap) as ad:
        bob, alice = Up(bd, b_dir), Up(ad, a_dir)
        offer_proc = run("couple", "offer", "bob", "--data-dir", a_dir, "--qr")
        offer = one_text(offer_proc, "offer")
        note = offer_proc.stderr.decode()
        assert "valid 10 minutes" in note and "\u2588" in note  # the QR code, on stderr
        status, pending = alice.request("GET", "/api/couple")
        assert status == 200 and [o["contact"] for o in pending["offers"]] == [ids["bob"]]

        answered = run("couple", "answer", offer, "--data-dir", b_dir, "--json")
        reply = json.loads(ok(answered)[0])
        assert reply["from"] == ids["alice"] and reply["name"] == "alice"
        assert text_kind(reply["text"]) == "answer" and reply["qr"] == reply["qr"].upper()
        assert "qr_svg" not in reply  # not for a terminal

        finished = piped("couple", "finish", "-", "--data-dir", a_dir, text=reply["text"] + "\n")
        link = json.loads(ok(finished)[0])
        assert link["to"] == ids["bob"] and link["via"] == "text" and link["reused"] is False
        alice.d.wait_event(event="connected", to=ids["bob"], via="text")
        bob.d.wait_event(event="connected", **{"from": ids["alice"]})
        for who, other in ((alice, ids["bob"]), (bob, ids["alice"])):
            status, links = who.request("GET", "/api/links")
            assert status == 200 and [lk["contact"] for lk in links["links"]] == [other]
        # the link the texts opened is the contact's link: a send reuses it
        sent = json.loads(ok(run("send", "bob", "over the pasted link", "--data-dir", a_dir))[0])
        assert sent["reused"] is True and sent["delivered"] is True
        bob.d.wait_event(event="message", text="over the pasted link")
        assert alice.request("GET", "/api/couple")[1]["offers"] == []

        # the same offer again: handled once ever -> nothing to answer
        again = one_error_line(run("couple", "answer", offer, "--data-dir", b_dir), 1)
        assert again.startswith(NOTHING)
        # the answer again: no offer waits for it any more
        used = one_error_line(run("couple", "finish", reply["text"], "--data-dir", a_dir), 1)
        assert "is waiting" in used or "does not open here" in used

        # bob blocks alice: her new offer gets exactly what the replayed one got
        ok(run("contact", "block", "alice", "--data-dir", b_dir))
        second = one_text(run("couple", "offer", "bob", "--data-dir", a_dir), "offer")
        blocked = one_error_line(piped("couple", "answer", "-", "--data-dir", b_dir,
                                       text=second), 1)
        assert blocked == again
        assert bob.d.stop() == 0 and alice.d.stop() == 0


def test_garbage_texts_through_the_cli_and_the_api(bootstrap: str, tmp_path: Path) -> None:
    friends(tmp_path, "alice", "bob")
    a_dir = tmp_path / "alice"
    with up(a_dir, "--bootstrap", bootstrap) as ad:
        alice = Up(ad, a_dir)
        offer = one_text(run("couple", "offer", "bob", "--data-dir", a_dir), "offer")
        damaged = offer[:-5] + ("x" if offer[-5] != "x" else "y") + offer[-4:]
        cases = {
            ("answer", "hello"): "not a hailing text",
            ("answer", damaged): "damaged",
            ("answer", offer[:40]): "damaged",
            ("finish", offer): "an offer text, not an answer",
            ("answer", "hailing:9:o:AAAA"): "version",
            ("answer", "hailing:1:o:" + "A" * 20_000): "too long",
        }
        for (step, text), words in cases.items():
            line = one_error_line(run("couple", step, text, "--data-dir", a_dir), 1)
            assert line.startswith("hailing: error: ") and words in line, line
        assert "no text on stdin" in one_error_line(
            piped("couple", "answer", "-", "--data-dir", a_dir, text="  \n"), 1)
        # an offer pasted back into its own maker opens as nothing here
        assert one_error_line(run("couple", "answer", offer, "--data-dir", a_dir),
                              1).startswith(NOTHING)
        # the API: wrong types, garbage, unknown contacts are 4xx and the daemon goes on
        for path, body, code in (
                ("/api/couple/answer", {"text": 5}, 400),
                ("/api/couple/answer", {"text": "\x00" * 100}, 400),
                ("/api/couple/finish", {"text": damaged}, 400),
                ("/api/couple/finish", {"text": offer, "timeout": 0}, 400),
                ("/api/couple/offer", {"contact": "nobody-by-that-name"}, 404),
                ("/api/couple/offer", {}, 400)):
            status, answer = alice.request("POST", path, body)
            assert status == code and "\n" not in answer["error"], (path, body, answer)
        assert alice.request("GET", "/api/status")[0] == 200
        assert alice.d.stop() == 0


def test_couple_needs_a_daemon(tmp_path: Path) -> None:
    line = one_error_line(run("couple", "answer", "hailing:1:o:AAAA", "--data-dir",
                              tmp_path / "nobody"), 1)
    assert "hailing up" in line
    assert "offer" in ok(run("couple", "--help"))[0] or "STEP" in " ".join(
        ok(run("couple", "--help")))
