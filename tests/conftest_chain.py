"""Chain helpers for tests and benchmarks: find or install anvil, run it, fund wallets.

No pytest here (benchmarks import it too). :func:`anvil_binary` finds anvil
(``$HAILING_ANVIL``, then ``.tools/`` where ``scripts/install-anvil.sh`` puts it, installing
it there if npm can, then ``PATH``) or returns why not. :class:`Anvil` starts it on
127.0.0.1 with an OS-chosen port, waits until it answers JSON-RPC, and stops it.
:class:`ScriptedRpc` is a fake JSON-RPC endpoint that answers whatever a test scripts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from hailing.chain import http_web3

REPO = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = REPO / "scripts" / "install-anvil.sh"


def anvil_binary(install: bool = True) -> tuple[str | None, str]:
    """(path to anvil, "") or (None, the reason there is none)."""
    explicit = os.environ.get("HAILING_ANVIL")
    if explicit:
        ok = os.access(explicit, os.X_OK)
        return (explicit, "") if ok else (None, f"HAILING_ANVIL={explicit} is not executable")
    reason = "anvil is not installed (run scripts/install-anvil.sh)"
    if install:
        try:
            done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True,
                                  text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"scripts/install-anvil.sh failed: {exc}"
        else:
            path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            if done.returncode == 0 and os.access(path, os.X_OK):
                return path, ""
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            reason = f"scripts/install-anvil.sh failed: {tail}"
    on_path = shutil.which("anvil")
    return (on_path, "") if on_path else (None, reason)


class Anvil:
    """An anvil process on 127.0.0.1 (a free port chosen by the OS); a context manager.

    ``block_time`` None means automine (a block per transaction); otherwise anvil mines a
    block every ``block_time`` seconds, like a real chain. ``hardfork`` None is anvil's
    default (Prague for anvil 1.7).
    """

    def __init__(self, binary: str, block_time: int | None = 1, hardfork: str | None = None,
                 start_timeout: float = 30.0) -> None:
        self.binary = binary
        self.block_time = block_time
        self.hardfork = hardfork
        self.start_timeout = start_timeout
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="anvil-", suffix=".log")  # noqa: SIM115

    def __enter__(self) -> Anvil:
        args = [self.binary, "--host", "127.0.0.1", "--port", "0", "--accounts", "1"]
        if self.block_time is not None:
            args += ["--block-time", str(self.block_time)]
        if self.hardfork is not None:
            args += ["--hardfork", self.hardfork]
        self._proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"anvil exited with {self._proc.returncode}: {self.log()[-500:]}")
            if not self.url:
                found = re.search(r"Listening on 127\.0\.0\.1:(\d+)", self.log())
                if found:
                    self.url = f"http://127.0.0.1:{found.group(1)}"
            if self.url:
                with contextlib.suppress(Exception):
                    http_web3(self.url, timeout=2).eth.block_number  # noqa: B018
                    return
            time.sleep(0.05)
        raise RuntimeError(f"anvil did not answer within {self.start_timeout:g} s")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def web3(self) -> Web3:
        return http_web3(self.url)

    def funded_account(self, ether: int = 100) -> LocalAccount:
        """A fresh key whose address anvil credits with ``ether`` (anvil_setBalance)."""
        account: LocalAccount = Account.create()
        self.web3().provider.make_request("anvil_setBalance",  # type: ignore[arg-type]
                                          [account.address, hex(ether * 10**18)])
        return account


class ScriptedRpc:
    """A JSON-RPC endpoint on 127.0.0.1 that answers what ``answer(method, id)`` returns:
    ``(HTTP status, body bytes)``. For feeding garbage to a client; a context manager."""

    def __init__(self, answer: Callable[[str, Any], tuple[int, bytes]]) -> None:
        script = answer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                try:
                    request = json.loads(self.rfile.read(length))
                    method, ident = str(request.get("method")), request.get("id")
                except (ValueError, AttributeError):
                    method, ident = "", None
                status, body = script(method, ident)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedRpc:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def rpc_result(ident: Any, result: Any) -> tuple[int, bytes]:
    return 200, json.dumps({"jsonrpc": "2.0", "id": ident, "result": result}).encode()
