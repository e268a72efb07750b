"""The chain commands of the real CLI, each in its own process: ``chain serve`` (the
embedded EVM over JSON-RPC) or anvil (1 s blocks), ``contract deploy``, ``rotation
show|set``, ``listen``/``send --via contract``, ``endpoint publish|list``; then every log
the run left on the chain is scanned for anything in clear. Real warp derivations."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from conftest_chain import Anvil
from eth_account import Account
from proc_lines import START_TIMEOUT
from pytest_helpers import anvil_or_skip

from hailing.chain import http_web3

HAILING = [sys.executable, "-m", "hailing"]
TIMEOUT = 60.0
WG_KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


@pytest.fixture(autouse=True)
def _default_data_dir_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Commands run without --data-dir use tmp_path/xdg/hailing, never the user's own."""
    monkeypatch.delenv("HAILING_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("HAILING_PASSPHRASE", "HAILING_GAS_KEY")}
    e["HAILING_ICE_HOSTS"] = "127.0.0.1"
    return e


def run(*args: str | Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*HAILING, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env(), stdin=subprocess.DEVNULL, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok(*args: str | Path) -> list[str]:
    done = run(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout.splitlines()


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for stream, sink in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream: IO[str] | None, sink: list[str]) -> None:
        assert stream is not None
        for line in stream:
            sink.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in {self.lines} / {self.errors}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextlib.contextmanager
def daemon(*args: str | Path) -> Iterator[Daemon]:
    proc = subprocess.Popen([*HAILING, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(),
                            stdin=subprocess.DEVNULL)
    d = Daemon(proc)
    try:
        yield d
    finally:
        d.stop()
        assert not any("Traceback" in line for line in d.errors), d.errors


@dataclass
class Chain:
    url: str
    keys: list[str]


@pytest.fixture(params=["serve", "anvil"])
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    if request.param == "serve":
        with daemon("chain", "serve", "--bind", "127.0.0.1:0", "--accounts", "3") as d:
            url = d.wait_for(r"chain listening on (http://127\.0\.0\.1:\d+)", START_TIMEOUT).group(1)
            deadline = time.monotonic() + 10
            while len([e for e in d.errors if e.startswith("account ")]) < 3:
                assert time.monotonic() < deadline, d.errors
                time.sleep(0.05)
            keys = [e.rsplit(" ", 1)[1] for e in d.errors if e.startswith("account ")]
            yield Chain(url, keys)
            # It refused connections mid-test once, and exited 0: stopped by a signal that
            # came from outside the test. Say so, should it happen again.
            assert d.proc.poll() is None, (
                f"chain serve exited during the test, code {d.proc.returncode} (0: stopped by "
                f"a SIGINT/SIGTERM from outside the test); stderr: {d.errors[-5:]}")
        assert d.proc.returncode == 0
        return
    with Anvil(anvil_or_skip(), block_time=1) as node:
        yield Chain(node.url, [bytes(node.funded_account().key).hex() for _ in range(2)])


@dataclass
class Friends:
    a: Path
    b: Path
    alice: str
    bob: str
    contract: str
    secrets: dict[Path, dict[str, str]]


def befriended(chain: Chain, tmp_path: Path) -> Friends:
    """alice deploys the contract (recorded in her chain.json); alice and bob become
    contacts and exchange their rotation secrets, all through the CLI."""
    a, b = tmp_path / "alice", tmp_path / "bob"
    [address] = ok("contract", "deploy", "--rpc", chain.url, "--gas-key", chain.keys[0],
                   "--data-dir", a)
    assert re.fullmatch(r"0x[0-9a-fA-F]{40}", address)
    assert json.loads((a / "chain.json").read_text())["contract"] == address
    alice, bob = ok("id", "new", "--data-dir", a)[0], ok("id", "new", "--data-dir", b)[0]
    ok("contact", "add", bob, "--name", "bob", "--data-dir", a)
    ok("contact", "add", alice, "--name", "alice", "--data-dir", b)
    secrets = {}
    for me, other, other_id in ((a, b, bob), (b, a, alice)):
        shared = json.loads(ok("rotation", "show", "--data-dir", other)[0])
        secrets[other] = shared
        ok("rotation", "set", other_id, "--user-id", shared["user_id"], "--prefix",
           shared["prefix"], "--data-dir", me)
    return Friends(a, b, alice, bob, address, secrets)


# Each flow runs on one chain, the two chains between them: this one on ``chain serve``
# (the embedded EVM, a block per transaction), the next on anvil (1 s blocks). Both
# listen and send through the contract; what else each does (endpoints and the log
# scan here, a paying wallet of the day there) is the same client code on either chain.
@pytest.mark.parametrize("chain", ["serve"], indirect=True)
def test_call_and_endpoints_through_the_contract(chain: Chain, tmp_path: Path) -> None:
    f = befriended(chain, tmp_path)
    a, b, alice, bob, address, secrets = f.a, f.b, f.alice, f.bob, f.contract, f.secrets

    with daemon("listen", "--data-dir", b, "--via", "contract", "--rpc", chain.url,
                "--contract", address, "--gas-key", chain.keys[1], "--poll", "0.2") as listener:
        listener.wait_for(r"listening as " + bob, START_TIMEOUT)
        # alice's RPC URL and contract come from her chain.json
        done = run("send", bob, "hello bob", "--data-dir", a, "--via", "contract",
                   "--gas-key", chain.keys[0], "--poll", "0.2", "--timeout", "40")
        # on a failure, the callee's side of the story is in the message too
        assert done.returncode == 0, (done.stderr, listener.lines, listener.errors)
        sent = json.loads(done.stdout.splitlines()[-1])
        assert sent["delivered"] is True
        listener.wait_for(r'"event": "message".*"text": "hello bob"')
        published = json.loads(ok(
            "endpoint", "publish", "--to", bob, "--kind", "wireguard", "--endpoint",
            "198.51.100.7:51820", "--extra", f"pubkey={WG_KEY}", "--extra",
            "allowed=10.0.0.2/32", "--data-dir", a, "--gas-key", chain.keys[0])[-1])
        assert published["stored"] == 1 and published["via"] == "contract"
        deadline = time.monotonic() + 20
        while (wg := run("endpoint", "list", "--data-dir", b, "--format", "wireguard")).returncode:
            assert time.monotonic() < deadline, wg.stderr
            time.sleep(0.3)
    assert listener.proc.returncode == 0
    assert wg.stdout == (f"[Peer]\n# alice {alice}\nPublicKey = {WG_KEY}\n"
                         "Endpoint = 198.51.100.7:51820\nAllowedIPs = 10.0.0.2/32\n")
    [line] = ok("endpoint", "list", "--data-dir", b)
    assert line.split()[:4] == [alice, "alice", "wireguard", "198.51.100.7:51820"]

    # nothing in clear on the chain: no SDP, IP, ICE credential, contact id or secret
    logs = http_web3(chain.url).eth.get_logs({"address": address, "fromBlock": 0,
                                              "toBlock": "latest"})
    assert len(logs) == 3  # offer, answer, endpoint
    needles = {b"127.0.0.1", b"198.51.100.7", b"a=ice", b"candidate", b"hello bob",
               alice.encode(), bob.encode(), WG_KEY.encode(),
               *(s[k].encode() for s in secrets.values() for k in ("user_id", "prefix"))}
    for log in logs:
        for blob in (bytes(log["data"]), *map(bytes, log["topics"])):
            for needle in needles:
                assert needle not in blob and needle.hex().encode() not in blob.hex().encode()


@pytest.mark.parametrize("chain", ["anvil"], indirect=True)
def test_paying_from_the_wallet_of_the_day_proves_the_sender(chain: Chain, tmp_path: Path) -> None:
    """``--gas-key rotating``: alice pays from her own wallet of the day (funded first, as
    a user would); bob listens with ``--require-wallet`` and takes the call. The same
    offer paid by a shared gas wallet is refused."""
    f = befriended(chain, tmp_path)
    [day_address] = ok("wallet", "rotating", "--data-dir", f.a)
    web3 = http_web3(chain.url)
    funder = Account.from_key(chain.keys[0])
    tx = {"to": day_address, "value": 10**18, "gas": 21_000, "chainId": web3.eth.chain_id,
          "nonce": web3.eth.get_transaction_count(funder.address, "pending"),
          "gasPrice": 2 * web3.eth.gas_price}
    web3.eth.wait_for_transaction_receipt(
        web3.eth.send_raw_transaction(funder.sign_transaction(tx).raw_transaction), timeout=30)
    with daemon("listen", "--data-dir", f.b, "--via", "contract", "--rpc", chain.url,
                "--contract", f.contract, "--gas-key", chain.keys[1], "--poll", "0.2",
                "--require-wallet") as listener:
        listener.wait_for(r"listening as " + f.bob, START_TIMEOUT)
        refused = run("send", f.bob, "paid by someone", "--data-dir", f.a, "--via", "contract",
                      "--gas-key", chain.keys[0], "--poll", "0.2", "--timeout", "4")
        assert refused.returncode == 1 and "nobody answered" in refused.stderr
        done = run("send", f.bob, "paid by me", "--data-dir", f.a, "--via", "contract",
                   "--gas-key", "rotating", "--poll", "0.2", "--timeout", "40")
        assert done.returncode == 0, (done.stderr, listener.lines, listener.errors)
        listener.wait_for(r'"event": "message".*"text": "paid by me"')
        assert not any("paid by someone" in line for line in listener.lines)
    senders = {log["topics"][2][-20:] for log in web3.eth.get_logs(
        {"address": f.contract, "fromBlock": 0, "toBlock": "latest"})}
    assert bytes.fromhex(day_address[2:]) in senders


def test_a_signal_right_after_the_first_line_of_chain_serve_is_a_clean_stop() -> None:
    """A script may stop ``chain serve`` as soon as it read its first line: exit 0, no
    traceback. Here its stderr is a full pipe, so the server blocks writing its accounts
    and the SIGTERM lands between its first stdout line and the rest."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for size in (4096, 1):  # fill the pipe: page by page, then byte by byte
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(write_end, b"x" * size)
    os.set_blocking(write_end, True)
    proc = subprocess.Popen([*HAILING, "chain", "serve", "--bind", "127.0.0.1:0", "--accounts",
                             "1"], stdout=subprocess.PIPE, stderr=write_end, text=True, env=env(),
                            stdin=subprocess.DEVNULL)
    os.close(write_end)
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.extend(iter(
        lambda: os.read(read_end, 65536), b"")), daemon=True)
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], START_TIMEOUT)[0], "no first line in time"
        assert proc.stdout.readline().startswith("chain listening on http://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        drain.start()  # the server may write its accounts now, and stop
        code = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join(10)
        os.close(read_end)
    stderr = b"".join(errors).lstrip(b"x").decode(errors="replace")
    assert code == 0, (code, stderr)
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (["contract", "deploy", "--rpc", "ftp://x"], 2, "http(s) URL"),
    (["contract", "deploy", "--rpc", "http://127.0.0.1:9", "--gas-key", "zz"], 2, "64 hex"),
    (["contract", "deploy", "--rpc", "http://127.0.0.1:9", "--gas-key", "00" * 31 + "01"], 1,
     "cannot reach"),
    (["endpoint", "publish", "--to", "CONTACT", "--kind", "sip", "--endpoint", "h:1",
      "--extra", "novalue", "--data-dir", "D"], 2, "KEY=VALUE"),
    (["endpoint", "publish", "--to", "CONTACT", "--kind", "sip", "--endpoint", "nohostport",
      "--data-dir", "D", "--rpc", "embedded"], 1, "HOST:PORT"),
    (["endpoint", "list", "--data-dir", "D", "--format", "wireguard"], 1, "no WireGuard"),
    (["endpoint", "publish", "--to", "CONTACT", "--kind", "sip", "--endpoint", "h:1",
      "--data-dir", "D", "--via", "dht"], 1, "--bootstrap"),
    (["send", "CONTACT", "hi", "--data-dir", "D", "--via", "contract"], 1, "give --rpc"),
    (["send", "CONTACT", "hi", "--data-dir", "D", "--via", "contract", "--rpc",
      "http://127.0.0.1:9"], 1, "contract address"),
    (["listen", "--data-dir", "D", "--via", "contract", "--rpc", "http://127.0.0.1:9",
      "--contract", "0x" + "11" * 20, "--gas-key", "00" * 31 + "01"], 1, "cannot reach"),
    (["rotation", "set", "CONTACT", "--user-id", "a b", "--prefix", "p", "--data-dir", "D"], 1,
     "spaces"),
    (["chain", "serve", "--bind", "127.0.0.1:0", "--accounts", "0"], 2, "invalid choice"),
])
def test_usage_and_operation_errors_are_one_line(tmp_path: Path, args: list[str], code: int,
                                                 message: str) -> None:
    contact = "hl" + "a" * 58
    if any(a == "CONTACT" for a in args):
        contact = ok("id", "new", "--data-dir", tmp_path / "other")[0]
    argv: list[Any] = [contact if a == "CONTACT" else tmp_path / "me" if a == "D" else a
                       for a in args]
    done = run(*argv)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
