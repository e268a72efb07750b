"""The browser suite (``tests/browser/``), run in a network namespace that has only ``lo``.

Chromium gathers ICE candidates on every interface; in a namespace of its own
(``unshare --net``, as root) loopback is the only address a browser, a daemon or the
testnet can use. This test starts ``python -m pytest tests/browser`` there as a
subprocess, prints its output, and fails when it fails, including when it collects no
test at all (pytest's exit code 5).

A run that is in such a namespace already (a container with only ``lo``) runs
``tests/browser`` directly; this test then skips, so the suite does not run twice.

Required under ``CI=true`` (or ``HAILING_REQUIRE_BROWSER=1``): a missing ``unshare``
(or no right to use it), Chromium or Playwright is then a failure, not a skip. Elsewhere
the test is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "tests" / "browser"
sys.path.insert(0, str(SUITE))

from browser_harness import chromium_path, only_loopback, subprocess_env  # noqa: E402

#: The whole browser suite's budget (it takes a few minutes on 2 busy cores).
SUITE_TIMEOUT = 1500.0


def _required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or bool(
        os.environ.get("HAILING_REQUIRE_BROWSER"))


def _unavailable(why: str) -> None:
    if _required():
        pytest.fail(f"the browser tests are required here (CI=true) but {why}", pytrace=False)
    pytest.skip(why)


def _check_prerequisites() -> None:
    path, why = chromium_path()
    if path is None:
        _unavailable(why)
    if importlib.util.find_spec("playwright") is None:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    if shutil.which("unshare") is None:
        _unavailable("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "--net", "--", sys.executable, "-c", "pass"],
                           capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        _unavailable("cannot make a network namespace (unshare --net needs root): "
                     + (probe.stderr.strip().splitlines() or ["no output"])[-1])


def run_suite(suite: Path, timeout: float = SUITE_TIMEOUT) -> None:
    """``python -m pytest SUITE`` in a new network namespace (lo only); pytest.fail with
    its summary when it does not exit 0 (exit 5, no test collected, included)."""
    argv = ["unshare", "--net", "--", sys.executable, "-m", "pytest", str(suite),
            "-p", "no:cacheprovider", "-q", "-rA", "--timeout", "600"]
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), str(REPO / "tests"),
                                                    env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            print(line, end="", flush=True)  # shown live with -s, in the report on failure

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
        reader.join(10)
        pytest.fail(f"the browser suite ran past {timeout:.0f} s:\n" + "".join(lines[-200:]),
                    pytrace=False)
    reader.join(30)
    code = proc.returncode
    if code == 5:
        pytest.fail("the browser suite collected no test (pytest exit 5):\n" + "".join(lines),
                    pytrace=False)
    if code != 0:
        # The whole output is in the captured stdout above; the summary here.
        start = next((i for i in range(len(lines) - 1, -1, -1)
                      if "short test summary info" in lines[i]), max(0, len(lines) - 60))
        pytest.fail(f"the browser suite failed (pytest exit {code}):\n" + "".join(lines[start:]),
                    pytrace=False)


@pytest.mark.timeout(SUITE_TIMEOUT + 60)
def test_browser_suite_in_a_loopback_only_network_namespace() -> None:
    if only_loopback():
        pytest.skip("this run is in a loopback-only network namespace already: the tests "
                    "of tests/browser run in it directly")
    _check_prerequisites()
    run_suite(SUITE)


def test_a_suite_that_collects_nothing_fails(tmp_path: Path) -> None:
    """pytest's exit 5 (no test collected: a renamed folder, a bad -k) is a failure of
    the runner, not a pass."""
    if only_loopback():
        pytest.skip("in a loopback-only namespace the runner is not used")
    _check_prerequisites()
    (tmp_path / "test_nothing_here.py").write_text('"""No test in here."""\n')
    with pytest.raises(pytest.fail.Exception, match=r"collected no test \(pytest exit 5\)"):
        run_suite(tmp_path, timeout=120)


def test_outside_such_a_namespace_the_browser_tests_are_skipped_with_the_reason() -> None:
    """The main run collects tests/browser in the host's namespace: skips, never failures
    (and no Chromium is started)."""
    if only_loopback():
        pytest.skip("this run is in a loopback-only namespace: the browser tests run here")
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), str(REPO / "tests"),
                                                    env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider",
                           "-q", "-rs"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" not in done.stdout and "failed" not in done.stdout, done.stdout
    assert "network namespace with only lo" in done.stdout, done.stdout
