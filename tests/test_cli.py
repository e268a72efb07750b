"""The real ``hailing`` command line, run in subprocesses against a ``hailing testnet``
subprocess on 127.0.0.1 (OS-chosen ports only). Every call has a timeout."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from proc_lines import START_TIMEOUT

from hailing.dht.bep44 import mutable_target, public_key

HAILING = [sys.executable, "-m", "hailing"]
TIMEOUT = 20.0
HEX40 = re.compile(r"[0-9a-f]{40}")
BOOTSTRAP_LINE = re.compile(r"bootstrap (127\.0\.0\.1:\d+)")
SERVE_LINE = re.compile(r"node ([0-9a-f]{40}) listening on 127\.0\.0\.1:(\d+)")


@pytest.fixture(autouse=True)
def _default_data_dir_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Commands run without --data-dir use tmp_path/xdg/hailing, never the user's own."""
    monkeypatch.delenv("HAILING_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def run(*args: str | Path | bytes, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [*HAILING, *(os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args)],
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    no_traceback(proc.stdout, proc.stderr)
    return proc


def no_traceback(*streams: bytes) -> None:
    for data in streams:
        assert b"Traceback" not in data, data.decode(errors="replace")


def lines(data: bytes) -> list[str]:
    return data.decode().splitlines()


def ok(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    """stdout lines of a command that must have succeeded."""
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return lines(proc.stdout)


def one_error_line(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, (proc.returncode, err)
    assert len(err.splitlines()) == 1 and err.endswith("\n") and err.strip(), repr(err)
    return err.strip()


def first_line(proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output line in time"
    return proc.stdout.readline().decode().rstrip("\n")


def finish(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> tuple[int, bytes, bytes]:
    """Send ``sig`` and collect the exit code and output (killed if it hangs)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    no_traceback(out, err)
    return proc.returncode, out, err


@contextlib.contextmanager
def popen(*args: str | Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [*HAILING, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@contextlib.contextmanager
def running_testnet(nodes: int = 8) -> Iterator[str]:
    """Run ``hailing testnet --nodes N``; yield its bootstrap ``HOST:PORT``."""
    with popen("testnet", "--nodes", str(nodes)) as proc:
        line = first_line(proc)
        m = BOOTSTRAP_LINE.fullmatch(line)
        assert m, line
        yield m.group(1)
        code, _, err = finish(proc)
        assert code == 0, err


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """A testnet subprocess shared by this module's client commands."""
    with running_testnet() as addr:
        yield addr


@pytest.fixture
def own_bootstrap() -> Iterator[str]:
    """A testnet for one ``dht serve`` test: the served node, once stopped, stays in its
    routing tables, and in an 8-node net every lookup would then wait for it to time out."""
    with running_testnet() as addr:
        yield addr


def test_testnet_first_line(bootstrap: str) -> None:
    host, port = bootstrap.split(":")
    assert host == "127.0.0.1" and 0 < int(port) < 65536


# -- immutable items ---------------------------------------------------------------------


def test_put_then_get(bootstrap: str) -> None:
    out = ok(run("dht", "put", "--bootstrap", bootstrap, "hello from the cli"))
    assert len(out) == 1 and HEX40.fullmatch(out[0])
    assert out[0] == hashlib.sha1(b"18:hello from the cli").hexdigest()
    assert ok(run("dht", "get", "--bootstrap", bootstrap, out[0])) == ["hello from the cli"]
    raw = run("dht", "get", "--bootstrap", bootstrap, out[0], "--raw")
    assert raw.returncode == 0 and raw.stdout == b"18:hello from the cli"


def test_put_non_utf8_value_is_printed_as_hex(bootstrap: str) -> None:
    out = ok(run("dht", "put", "--bootstrap", bootstrap, b"\xff\xfe"))
    assert out[0] == hashlib.sha1(b"2:\xff\xfe").hexdigest()
    assert ok(run("dht", "get", "--bootstrap", bootstrap, out[0])) == ["fffe"]


def test_get_unknown_target_exits_1(bootstrap: str) -> None:
    proc = run("dht", "get", "--bootstrap", bootstrap, os.urandom(20).hex())
    one_error_line(proc, 1)
    assert proc.stdout == b""


# -- mutable items -----------------------------------------------------------------------


def test_put_mutable_and_get_mutable(bootstrap: str, tmp_path: Path) -> None:
    key = tmp_path / "alice.key"
    proc = run(
        "dht",
        "put-mutable",
        "--bootstrap",
        bootstrap,
        "--key-file",
        key,
        "--salt",
        "status",
        "online",
    )
    out = ok(proc)
    assert key.stat().st_size == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = public_key(key.read_bytes())
    assert f"public key {pub.hex()}" in lines(proc.stderr)
    assert out == [mutable_target(pub, b"status").hex()]

    got = ok(run("dht", "get-mutable", "--bootstrap", bootstrap, pub.hex(), "--salt", "status"))
    assert got == ["online", "seq 1"]

    # The key file is reused, and seq goes up by itself.
    proc = run(
        "dht",
        "put-mutable",
        "--bootstrap",
        bootstrap,
        "--key-file",
        key,
        "--salt",
        "status",
        "in a call",
    )
    assert ok(proc) == out
    assert not any("created" in ln for ln in lines(proc.stderr))
    got = ok(run("dht", "get-mutable", "--bootstrap", bootstrap, pub.hex(), "--salt", "status"))
    assert got == ["in a call", "seq 2"]

    js = ok(
        run("dht", "get-mutable", "--bootstrap", bootstrap, pub.hex(), "--salt", "status", "--json")
    )
    assert len(js) == 1
    assert json.loads(js[0]) == {
        "value": "in a call",
        "value_bencoded_hex": b"9:in a call".hex(),
        "seq": 2,
        "target": out[0],
    }
    raw = run(
        "dht", "get-mutable", "--bootstrap", bootstrap, pub.hex(), "--salt", "status", "--raw"
    )
    assert raw.returncode == 0 and raw.stdout == b"9:in a call"

    # No salt is another item, which nobody stored.
    proc = run("dht", "get-mutable", "--bootstrap", bootstrap, pub.hex())
    one_error_line(proc, 1)
    assert proc.stdout == b""


def test_put_mutable_explicit_seq(bootstrap: str, tmp_path: Path) -> None:
    key = tmp_path / "k"
    ok(run("dht", "put-mutable", "--bootstrap", bootstrap, "--key-file", key, "--seq", "41", "v"))
    pub = public_key(key.read_bytes()).hex()
    assert ok(run("dht", "get-mutable", "--bootstrap", bootstrap, pub)) == ["v", "seq 41"]


# -- peers and nodes -----------------------------------------------------------------------


def test_announce_and_get_peers(bootstrap: str) -> None:
    info_hash = os.urandom(20).hex()
    out = ok(run("dht", "announce", "--bootstrap", bootstrap, info_hash, "--port", "6881"))
    m = re.fullmatch(r"announced to (\d+) nodes", out[0])
    assert m and int(m.group(1)) > 0
    assert "127.0.0.1:6881" in ok(run("dht", "get-peers", "--bootstrap", bootstrap, info_hash))


def test_find_node_prints_id_and_address(bootstrap: str) -> None:
    out = ok(run("dht", "find-node", "--bootstrap", bootstrap, os.urandom(20).hex()))
    assert len(out) == 8  # k nodes
    for line in out:
        assert re.fullmatch(r"[0-9a-f]{40} 127\.0\.0\.1:\d+", line), line
    assert len({line.split()[0] for line in out}) == 8


def test_ping_prints_the_id(bootstrap: str) -> None:
    out = ok(run("dht", "ping", bootstrap))
    m = re.fullmatch(r"([0-9a-f]{40}) answered in [0-9.]+ ms", out[0])
    assert m
    found = ok(run("dht", "find-node", "--bootstrap", bootstrap, m.group(1)))
    assert found[0] == f"{m.group(1)} {bootstrap}"


# -- serve ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_exits_0_on_signal(own_bootstrap: str, sig: int) -> None:
    with popen("dht", "serve", "--bind", "127.0.0.1:0", "--bootstrap", own_bootstrap) as proc:
        assert SERVE_LINE.fullmatch(first_line(proc))
        code, _, err = finish(proc, sig)  # at once: the handler is set before the line
        assert code == 0, err


def test_serve_answers_ping_and_find_node(own_bootstrap: str) -> None:
    with popen("dht", "serve", "--bind", "127.0.0.1:0", "--bootstrap", own_bootstrap) as proc:
        m = SERVE_LINE.fullmatch(first_line(proc))
        assert m
        node_id, addr = m.group(1), f"127.0.0.1:{m.group(2)}"
        assert ok(run("dht", "ping", addr))[0].split()[0] == node_id
        found = ok(run("dht", "find-node", "--bootstrap", addr, node_id))
        assert found[0] == f"{node_id} {addr}"
        code, _, err = finish(proc)
        assert code == 0, err


def test_serve_data_dir_keeps_node_id(own_bootstrap: str, tmp_path: Path) -> None:
    data = tmp_path / "node"
    ids = []
    for extra in (["--bootstrap", own_bootstrap], []):
        with popen("dht", "serve", "--bind", "127.0.0.1:0", "--data-dir", data, *extra) as proc:
            m = SERVE_LINE.fullmatch(first_line(proc))
            assert m
            ids.append(m.group(1))
            code, _, err = finish(proc)
            assert code == 0, err
            # Restarted without --bootstrap, it rejoins through its saved routing table.
            assert b"joined: " in err
    assert ids[0] == ids[1]
    assert (data / "dht.sqlite3").is_file()


# -- errors --------------------------------------------------------------------------------

BS = "{bootstrap}"
KEY = "{key}"


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        ([], 2),
        (["frobnicate"], 2),
        (["dht"], 2),
        (["dht", "frobnicate"], 2),
        (["dht", "get", "--bootstrap", BS, "not-hex"], 2),
        (["dht", "get", "--bootstrap", BS, "ab" * 19], 2),
        (["dht", "get", "ab" * 20], 2),  # missing --bootstrap
        (["dht", "put", "value"], 2),  # missing --bootstrap
        (["dht", "put", "--bootstrap", "127.0.0.1", "value"], 2),
        (["dht", "put", "--bootstrap", "127.0.0.1:70000", "value"], 2),
        (["dht", "put", "--bootstrap", "127.0.0.1:port", "value"], 2),
        (["dht", "ping", "nonsense"], 2),
        (["dht", "serve", "--bind", ":5"], 2),
        (["dht", "serve"], 2),
        (["dht", "announce", "--bootstrap", BS, "ab" * 20, "--port", "70000"], 2),
        (["testnet", "--nodes", "0"], 2),
        (["testnet", "--nodes", "many"], 2),
        (["testnet"], 2),
        (["demo", "--nodes", "0"], 2),
        (["dht", "put-mutable", "--bootstrap", BS, "--key-file", KEY, "--salt", "s" * 65, "v"], 2),
        (["dht", "get-mutable", "--bootstrap", BS, "ab" * 32, "--salt", "s" * 65], 2),
        (["dht", "get-mutable", "--bootstrap", BS, "ab" * 31], 2),
        (["dht", "put-mutable", "--bootstrap", BS, "--key-file", KEY, "--seq", "-1", "v"], 2),
        (["dht", "put", "--bootstrap", BS, "x" * 1001], 1),  # BEP44: value too big
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], code: int, bootstrap: str, tmp_path: Path
) -> None:
    key = tmp_path / "key"
    argv = [a.replace(BS, bootstrap).replace(KEY, str(key)) for a in argv]
    proc = run(*argv)
    msg = one_error_line(proc, code)
    assert msg.startswith("hailing")
    assert proc.stdout == b""
    assert not key.exists()


def test_key_file_of_wrong_size(bootstrap: str, tmp_path: Path) -> None:
    key = tmp_path / "short.key"
    key.write_bytes(b"\x01" * 31)
    proc = run("dht", "put-mutable", "--bootstrap", bootstrap, "--key-file", key, "value")
    assert str(key) in one_error_line(proc, 1)
    assert key.read_bytes() == b"\x01" * 31


def test_a_corrupt_routing_cache_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    """dht.sqlite3 is a cache: a corrupt one is moved aside (kept, never deleted) with
    one warning naming it, and the node serves with a fresh one (issue 8 item 7)."""
    db = tmp_path / "dht.sqlite3"
    garbage = b"garbage, not sqlite " * 100
    db.write_bytes(garbage)
    with popen("dht", "serve", "--bind", "127.0.0.1:0", "--data-dir", tmp_path) as proc:
        assert SERVE_LINE.fullmatch(first_line(proc))
        code, _out, err = finish(proc)
    assert code == 0
    no_traceback(err)
    [aside] = tmp_path.glob("dht.sqlite3.corrupt-*")
    assert aside.read_bytes() == garbage
    assert str(db) in err.decode() and aside.name in err.decode()
    assert db.exists() and db.read_bytes() != garbage


def test_serve_on_a_busy_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        proc = run("dht", "serve", "--bind", f"127.0.0.1:{port}")
        assert f"127.0.0.1:{port}" in one_error_line(proc, 1)


def test_nobody_answers() -> None:
    # A port bound and closed by us: nobody listens there. Both commands wait for the
    # query timeout, so they run side by side.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    procs = [
        subprocess.Popen(
            [*HAILING, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for argv in (["dht", "ping", dead], ["dht", "get", "--bootstrap", dead, "ab" * 20])
    ]
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert dead in one_error_line(
            subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 1
        )
        assert out == b""
        no_traceback(out, err)


# -- help and demo ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], ["demo", "testnet", "dht", "--version"]),
        (["demo"], ["--nodes"]),
        (["testnet"], ["--nodes", "--base-port", "--bind"]),
        (
            ["dht"],
            [
                "serve",
                "put",
                "get",
                "put-mutable",
                "get-mutable",
                "find-node",
                "announce",
                "get-peers",
                "ping",
            ],
        ),
        (["dht", "serve"], ["--bind", "--bootstrap", "--data-dir", "--enforce-node-id"]),
        (["dht", "put"], ["--bootstrap", "--bind", "VALUE"]),
        (["dht", "get"], ["--bootstrap", "--raw", "TARGET"]),
        (["dht", "put-mutable"], ["--bootstrap", "--key-file", "--salt", "--seq", "VALUE"]),
        (["dht", "get-mutable"], ["--bootstrap", "--salt", "--raw", "--json", "PUBKEY"]),
        (["dht", "find-node"], ["--bootstrap", "TARGET"]),
        (["dht", "announce"], ["--bootstrap", "--port", "INFO_HASH"]),
        (["dht", "get-peers"], ["--bootstrap", "INFO_HASH"]),
        (["dht", "ping"], ["HOST:PORT"]),
    ],
)
def test_help(argv: list[str], words: list[str]) -> None:
    proc = run(*argv, "--help")
    out = ok(proc)
    text = "\n".join(out)
    assert text.startswith("usage: hailing")
    for word in words:
        assert word in text, word
    assert proc.stderr == b""


def test_version() -> None:
    out = ok(run("--version"))
    assert re.fullmatch(r"hailing \d+\.\d+\.\d+.*", out[0])


def test_demo() -> None:
    out = ok(run("demo", "--nodes", "10"))
    assert any(line.startswith("ok:") for line in out)
