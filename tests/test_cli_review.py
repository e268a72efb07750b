"""What a newcomer trying the command line ran into (one command per subprocess, one
error line and no traceback; ICE on loopback only; nothing here is timed)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from test_cli_peer import (
    BOOTSTRAP_LINE,
    book,
    daemon,
    env,
    new_ids,
    no_traceback,
    one_error_line,
    run,
)

from hailing.cli import build_parser


def test_text_may_follow_an_option() -> None:
    # Plain argparse bound the empty TEXT at CONTACT and refused "hi" as unrecognized.
    for argv in (["send", "bob", "--timeout", "5", "hi"], ["send", "bob", "--no-daemon", "hi"],
                 ["send", "--timeout", "5", "bob", "hi"], ["send", "bob", "hi", "--timeout", "5"]):
        args = build_parser().parse_args(argv)
        assert (args.contact, args.text) == ("bob", "hi"), argv
    args = build_parser().parse_args(["status", "--accept-any", "on", "busy"])
    assert (args.status, args.accept_any) == ("busy", "on")


def test_send_text_after_an_option_reaches_the_contact_lookup(tmp_path: Path) -> None:
    new_ids(tmp_path, "alice")
    proc = run("send", "nobody", "--data-dir", tmp_path / "alice", "--no-daemon", "hi")
    err = one_error_line(proc, 2)
    assert "no contact named 'nobody'" in err and "unrecognized" not in err


def test_wrong_usage_of_send_is_exit_2(tmp_path: Path) -> None:
    ids = new_ids(tmp_path, "alice", "bob")
    with book(tmp_path / "alice") as b:
        b.add(ids["bob"], "bob")
    d = ["--data-dir", str(tmp_path / "alice")]
    for argv, words in ((["send", "bob", *d], "give either TEXT or --file"),
                        (["send", "bob", "hi", "--file", "x", *d], "give either TEXT or --file"),
                        (["send", "bob", "hi", "--ice-host", "nope", *d], "not an IP address"),
                        (["send", "bob", "hi", "--timeout", "0", *d], "expected seconds"),
                        (["chat", "bob", "--timeout", "-1", *d], "expected seconds"),
                        (["up", "--ice-host", "0.0.0.0", *d], "not a usable ICE host")):
        assert words in one_error_line(run(*argv), 2), argv


def test_up_without_bootstrap_names_the_setting(tmp_path: Path) -> None:
    new_ids(tmp_path, "alice")
    err = one_error_line(run("up", "--data-dir", tmp_path / "alice"), 1)
    assert "hailing config set bootstrap" in err


def test_up_removes_what_a_killed_daemon_was_receiving(tmp_path: Path) -> None:
    new_ids(tmp_path, "alice")
    downloads = tmp_path / "alice" / "downloads"
    downloads.mkdir()
    stale = downloads / ".partial-999999999-1-1"  # no such process: a killed receiver's
    stale.write_bytes(b"x" * 1000)
    kept = downloads / "photo.jpg"
    kept.write_bytes(b"y")
    with daemon("testnet", "--nodes", "4") as net:
        m = BOOTSTRAP_LINE.fullmatch(net.first_line())
        assert m, net.out.lines
        with daemon("up", "--data-dir", tmp_path / "alice", "--bootstrap", m.group(1)) as up:
            assert up.first_line().startswith("up "), up.err.lines
            assert not stale.exists() and kept.exists()
            assert up.stop(signal.SIGINT) == 0, up.err.lines
        net.stop()


def test_ctrl_c_while_the_command_line_loads_prints_no_traceback() -> None:
    # The SIGINT lands while hailing.cli is being imported (an impatient Ctrl-C in the
    # first few tenths of a second): the process ends quietly, by the signal.
    code = (
        "import builtins, os, signal, sys\n"
        "real = builtins.__import__\n"
        "def hook(name, *a, **k):\n"
        "    if name == 'argparse' and 'hailing.cli' in sys.modules:\n"
        "        builtins.__import__ = real\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = hook\n"
        "import hailing.cli\n"
        "print('imported')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                          env=env())
    no_traceback(proc.stdout, proc.stderr)
    assert proc.returncode == -signal.SIGINT, (proc.returncode, proc.stderr)


def test_the_usual_ctrl_c_handler_is_back_after_the_import() -> None:
    import hailing.cli  # noqa: F401

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
