"""The README's command-line walkthrough runs as written.

Its shell blocks are taken from README.md and run by bash, line for line, with a
``hailing`` on PATH that runs this checkout. Three things are changed, and only these:
the testnet's port is left to the OS (``--base-port 16881`` dropped; the address it
prints replaces ``127.0.0.1:16881`` in the later lines), ``/tmp/`` becomes a temporary
directory, and the default data directory is inside it (``XDG_DATA_HOME``). The long
running commands (the testnet, ``listen``) run in the background; ``chat`` reads two lines
from stdin.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMEOUT = 60.0
PORT = "16881"


def walkthrough_blocks() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Walkthrough"):]
    section = section[: section.index("\n### ", 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [[line for line in block.splitlines() if line.strip()] for block in blocks]


def test_the_walkthrough_has_its_four_terminal_blocks() -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) == 4, blocks
    assert blocks[0][0] == blocks[1][0] == blocks[2][0] == "source .venv/bin/activate"
    assert blocks[0][1].startswith(f"hailing testnet --nodes 20 --base-port {PORT}")
    assert blocks[2][-1].startswith("hailing listen")
    assert blocks[3][-1].startswith("hailing chat bob")


class Background:
    """A bash running one block in its own process group, stdout read by a thread."""

    def __init__(self, script: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(["bash", "-ec", script], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while True:
                for line in self.lines:
                    if m := re.match(pattern, line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.poll() is not None and \
                        self.proc.stderr else ""
                    raise AssertionError(f"no line like {pattern!r}: {self.lines} {err}")
                self.cond.wait(min(left, 0.5))

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate(timeout=10)
        assert "Traceback" not in err, err
        return err


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    terminal1, alice1, bob, alice2 = walkthrough_blocks()
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "hailing").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hailing "$@"\n')
    (shim / "hailing").chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if k not in ("HAILING_DATA_DIR", "HAILING_PASSPHRASE", "HAILING_ICE_HOSTS")}
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"),
                                                    env.get("PYTHONPATH")) if p)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    bootstrap = ""

    def script(lines: list[str]) -> str:
        body = [line for line in lines if line != "source .venv/bin/activate"]
        text = "\n".join(body).replace(f" --base-port {PORT}", "").replace("/tmp/",
                                                                          f"{scratch}/")
        return text.replace(f"127.0.0.1:{PORT}", bootstrap) if bootstrap else text

    def run(lines: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["bash", "-ec", script(lines)], cwd=ROOT, env=env, text=True,
                              input=stdin, capture_output=True, timeout=TIMEOUT)
        assert done.returncode == 0, (lines, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    testnet = Background(script(terminal1), env)
    listener: Background | None = None
    try:
        bootstrap = testnet.wait_for(r"bootstrap (127\.0\.0\.1:\d+)$").group(1)
        alice_id = run(alice1).stdout.splitlines()[0]
        assert re.fullmatch(r"hl[a-z2-7]{58}", alice_id)
        assert (scratch / "alice.card").read_text().startswith("hlcard")
        assert (tmp_path / "xdg" / "hailing" / "identity.key").exists()  # the default dir

        listener = Background(script(bob), env)
        listener.wait_for(r"listening as hl[a-z2-7]{58}$")
        assert (scratch / "hailing-bob" / "identity.key").exists()

        done = run(alice2[:-1])
        sends = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert len(sends) == 2 and all(s["delivered"] for s in sends), done.stdout
        chat = run(alice2[-1:], stdin="hello from chat\n/quit\n")
        assert "Traceback" not in chat.stderr
        listener.wait_for(r'\{"event": "message".*"text": "hello from chat"')
        listener.wait_for(r'\{"event": "message".*"text": "hi bob"')
        listener.wait_for(r'\{"event": "file".*"name": "README.md"')
    finally:
        if listener is not None:
            listener.stop()
        testnet.stop()


@pytest.mark.parametrize("script", ["scripts/setup.sh", "scripts/demo.sh"])
def test_setup_installs_the_qr_extra_and_demo_says_how_to_get_hailing(script: str) -> None:
    text = (ROOT / script).read_text()
    if script.endswith("setup.sh"):
        assert 'extras="qr${1:+,$1}"' in text
    else:
        assert "source .venv/bin/activate" in text
        assert "bash scripts/setup.sh" in text
