"""The browser harness: a loopback DHT testnet, ``hailing up`` daemons and Chromium.

Shared by the browser tests (``tests/browser/``), ``scripts/screenshots.sh`` and
``benchmarks/browser_calls.py``; no pytest here. Everything binds 127.0.0.1 with ports
from the OS, so several daemons never collide.

Chromium is the Debian package (``$HAILING_CHROMIUM``, else ``chromium`` on PATH), driven
by Playwright through ``executable_path``: Playwright never downloads a browser. Chromium
gathers ICE candidates on every interface, so whatever drives it runs in a network
namespace that has only ``lo`` (``unshare --net``; :func:`only_loopback` tells), and
``--allow-loopback-in-peer-connection`` lets it use that one.

Each page gets :data:`INIT_SCRIPT` before any of the app's code: it records every
``RTCPeerConnection`` (``window.__pcs``) and every ``createAnswer``
(``window.__answers``), every ``Notification`` built (``window.__notifications``), and
lets a test hide the tab (``window.__setHidden(true)``: ``document.hidden`` and
``visibilityState`` follow, and ``visibilitychange`` fires). It also records every text
the call's state line (``[data-testid="call-state"]``) shows (``window.__callStates``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# tests/ (proc_lines) for the scripts and benchmarks that import this harness with only
# tests/browser on their path (scripts/screenshots.py, benchmarks/browser_calls.py, ...)
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from proc_lines import START_TIMEOUT, Lines

REPO = Path(__file__).resolve().parents[2]
HAILING = [sys.executable, "-m", "hailing"]

#: A host name Chromium resolves to 127.0.0.1 (the DNS-rebinding test).
REBIND_HOST = "rebind.test"

#: What Chromium needs here: fake camera/microphone, no permission prompts, loopback ICE,
#: nothing fetched from Google's services (see PLAN/ docs/ui.md).
CHROMIUM_ARGS = (
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--allow-loopback-in-peer-connection",
    # Pages of background contexts keep their timers and media running.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    # A name that resolves to 127.0.0.1, as DNS rebinding would make one.
    f"--host-resolver-rules=MAP {REBIND_HOST} 127.0.0.1",
)

UP_LINE = re.compile(r"up (hl[a-z2-7]{58}) dht (\S+) api (http://127\.0\.0\.1:(\d+))")
WEB_LINE = re.compile(r"web (http://127\.0\.0\.1:\d+/\S+)")

INIT_SCRIPT = """
(() => {
  if (window.__hailingHarness) return;
  window.__hailingHarness = true;
  window.__pcs = [];
  window.__answers = 0;
  window.__notifications = [];
  const PC = window.RTCPeerConnection;
  if (PC) {
    const Recording = function (...args) {
      const pc = new PC(...args);
      window.__pcs.push(pc);
      return pc;
    };
    Recording.prototype = PC.prototype;
    Object.setPrototypeOf(Recording, PC);
    window.RTCPeerConnection = Recording;
    const createAnswer = PC.prototype.createAnswer;
    PC.prototype.createAnswer = function (...args) {
      window.__answers += 1;
      return createAnswer.apply(this, args);
    };
    const setLocal = PC.prototype.setLocalDescription;
    PC.prototype.setLocalDescription = function (...args) {
      const d = args[0];
      if ((!d && this.signalingState === "have-remote-offer") || (d && d.type === "answer")) {
        window.__answers += 1;
      }
      return setLocal.apply(this, args);
    };
  }
  const N = window.Notification;
  if (N) {
    const Recording = function (title, options) {
      window.__notifications.push({ title: String(title), body: (options && options.body) || "" });
      return new N(title, options);
    };
    Recording.prototype = N.prototype;
    Object.defineProperty(Recording, "permission", { get: () => N.permission });
    Recording.requestPermission = (...a) => N.requestPermission(...a);
    window.Notification = Recording;
  }
  // Every text the call's state line shows, in order (repeats collapsed).
  window.__callStates = [];
  const watchStates = () => {
    new MutationObserver(() => {
      const line = document.querySelector('[data-testid="call-state"]');
      const text = line ? line.textContent.trim() : "";
      const seen = window.__callStates;
      if (text && seen[seen.length - 1] !== text) seen.push(text);
    }).observe(document.documentElement, { childList: true, subtree: true, characterData: true });
  };
  if (document.documentElement) watchStates();
  else document.addEventListener("DOMContentLoaded", watchStates);
  let hidden = false;
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(Document.prototype, "visibilityState", {
    configurable: true, get: () => (hidden ? "hidden" : "visible") });
  const hasFocus = Document.prototype.hasFocus;
  Document.prototype.hasFocus = function () { return hidden ? false : hasFocus.call(this); };
  window.__setHidden = (value) => {
    hidden = Boolean(value);
    document.dispatchEvent(new Event("visibilitychange"));
    window.dispatchEvent(new Event(hidden ? "blur" : "focus"));
  };
})();
"""

#: JS: frames decoded so far by the page's inbound video streams (all its connections).
FRAMES_DECODED = """
async () => {
  let total = 0;
  for (const pc of window.__pcs || []) {
    if (pc.connectionState === "closed") continue;
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") total += s.framesDecoded || 0;
    });
  }
  return total;
}
"""

#: JS: audio received so far (inbound audio samples/packets, all connections).
AUDIO_RECEIVED = """
async () => {
  let total = 0;
  for (const pc of window.__pcs || []) {
    if (pc.connectionState === "closed") continue;
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") total += s.packetsReceived || 0;
    });
  }
  return total;
}
"""


def chromium_path() -> tuple[str | None, str]:
    """(path to Chromium, "") or (None, why there is none)."""
    explicit = os.environ.get("HAILING_CHROMIUM")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit, ""
        return None, f"HAILING_CHROMIUM={explicit} is not executable"
    found = shutil.which("chromium")
    if found:
        return found, ""
    return None, ("no chromium on PATH: install the Debian package (as root: "
                  "scripts/install-chromium.sh) or set HAILING_CHROMIUM")


def only_loopback() -> bool:
    """True in a network namespace whose only interface is ``lo`` (and it is up)."""
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
    except OSError:
        return False
    return True


def bring_lo_up() -> None:
    """Bring ``lo`` up, in a fresh network namespace whose only interface it is (what
    ``ip link set lo up`` does); anywhere else, nothing."""
    import fcntl
    import struct

    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        return
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, siocgifflags, req))[1]
        if not flags & iff_up:
            fcntl.ioctl(s, siocsifflags, struct.pack("16sh14x", b"lo", flags | iff_up))


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of the hailing subprocesses: this checkout's sources first, ICE host
    candidates on loopback only, no passphrase."""
    e = {k: v for k, v in os.environ.items() if k != "HAILING_PASSPHRASE"}
    src = str(REPO / "src")
    e["PYTHONPATH"] = os.pathsep.join(p for p in (src, e.get("PYTHONPATH", "")) if p)
    e["HAILING_ICE_HOSTS"] = "127.0.0.1"
    e["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    e.update(extra)
    return e


@dataclass
class Proc:
    """A long-running ``hailing`` subprocess with its output pumped."""

    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] = field(init=False)
    out: Lines = field(init=False)
    err: Lines = field(init=False)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=self.env, start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def line(self, index: int, timeout: float = 60.0) -> str:
        try:
            self.out.wait_for(lambda _: True, index, timeout)
        except AssertionError:
            raise AssertionError(f"no line {index} in {timeout:.0f} s (exit code "
                                 f"{self.proc.poll()}):\n{self.output()}") from None
        return self.out.lines[index]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait; kill it if it lingers. Its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self.out.thread.join(5)
        self.err.thread.join(5)
        return code

    def output(self) -> str:
        return f"{' '.join(self.argv)}\n-- stdout\n{self.out.text()}\n-- stderr\n{self.err.text()}"


@contextlib.contextmanager
def testnet(nodes: int = 8) -> Iterator[str]:
    """A ``hailing testnet`` subprocess; yields its bootstrap address."""
    p = Proc([*HAILING, "testnet", "--nodes", str(nodes)], subprocess_env())
    try:
        m = re.fullmatch(r"bootstrap (127\.0\.0\.1:\d+)", p.line(0, START_TIMEOUT))
        assert m, p.output()
        yield m.group(1)
    finally:
        p.stop()


@contextlib.contextmanager
def relay() -> Iterator[str]:
    """A ``hailing relay`` subprocess (the WebSocket baseline); yields its URL."""
    p = Proc([*HAILING, "relay", "--bind", "127.0.0.1:0"], subprocess_env())
    try:
        m = re.fullmatch(r"relay listening on (ws://127\.0\.0\.1:\d+/\S*)", p.line(0, START_TIMEOUT))
        assert m, p.output()
        yield m.group(1)
    finally:
        p.stop()


def make_friends(base: Path, *names: str) -> dict[str, str]:
    """Identities base/NAME, each with every other one as a contact (named as given).
    Returns name -> contact id."""
    from hailing.identity import load_or_create_identity
    from hailing.services.contacts import ContactBook

    ids = {n: load_or_create_identity(base / n, None).contact_id for n in names}
    for n in names:
        with ContactBook(base / n) as book:
            book.set_name(n)
            for other in names:
                if other != n:
                    book.add(ids[other], other)
    return ids


class Up:
    """A running ``hailing up``: its first line, its API (bearer), its events, its web app."""

    def __init__(self, name: str, data_dir: Path, net: list[str], *extra: str,
                 env: dict[str, str] | None = None, wait: bool = True) -> None:
        self.name = name
        self.data_dir = data_dir
        #: The environment of ``hailing up`` and ``hailing open`` (default:
        #: :func:`subprocess_env`, ICE on loopback; the NAT lab gives its own).
        self.env = env if env is not None else subprocess_env()
        self.p = Proc([*HAILING, "up", "--data-dir", str(data_dir), *net, *extra], self.env)
        if wait:
            self.wait_up()

    def wait_up(self) -> None:
        """Until its first line (``up ...``) is out; reads its API details (the
        constructor does it unless given ``wait=False``: several daemons then start side
        by side)."""
        first = self.p.line(0, START_TIMEOUT)
        m = UP_LINE.fullmatch(first)
        if not m:
            self.p.stop()
            raise AssertionError(f"unexpected first line {first!r}\n{self.p.output()}")
        self.contact_id, self.dht, self.url, port = m.groups()
        self.port = int(port)
        info = json.loads((self.data_dir / "api.json").read_text())
        self.token: str = info["token"]
        self._web_url: str | None = None
        with contextlib.suppress(AssertionError):
            i = self.p.out.wait_for(lambda s: s.startswith("web "), 1, timeout=5.0)
            w = WEB_LINE.fullmatch(self.p.out.lines[i])
            self._web_url = w.group(1) if w else None

    # -- the API, as a script would use it -----------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *,
                headers: dict[str, str] | None = None, auth: bool = True,
                timeout: float = 60.0) -> tuple[int, Any]:
        """One request to the API (bearer token unless ``auth`` is false): (status, JSON)."""
        h = {"Authorization": f"Bearer {self.token}"} if auth else {}
        h.update(headers or {})
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.request(method, path, body)
        assert 200 <= status < 300, (method, path, status, answer)
        return answer

    def history(self, contact: str | None = None) -> list[dict[str, Any]]:
        query = f"?limit=500&contact={contact}" if contact else "?limit=500"
        messages: list[dict[str, Any]] = self.ok("GET", "/api/history" + query)["messages"]
        return messages

    # -- the web app ---------------------------------------------------------------------

    def login_url(self) -> str:
        """A URL that opens the app signed in: the ``web`` line's one-time URL the first
        time, then a fresh one from ``hailing open --print``."""
        if self._web_url is not None:
            url, self._web_url = self._web_url, None
            return url
        done = subprocess.run([*HAILING, "open", "--print", "--data-dir", str(self.data_dir)],
                              capture_output=True, text=True, timeout=60,
                              env=self.env, check=False)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise AssertionError(f"hailing open --print failed ({done.returncode}): "
                                 f"{done.stderr.strip()}")
        url = lines[-1].split()[-1]
        assert url.startswith(self.url + "/"), url
        return url

    # -- events --------------------------------------------------------------------------

    def mark(self) -> int:
        """The number of output lines so far (a start for :meth:`wait_event`)."""
        return len(self.p.out)

    def events(self, start: int = 1) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.p.out.lines[max(start, 1):]
                if line.startswith("{")]

    def wait_event(self, start: int = 1, timeout: float = 60.0, **match: Any) -> dict[str, Any]:
        """The first event (from output line ``start``) whose fields include ``match``."""
        def pred(line: str) -> bool:
            if not line.startswith("{"):
                return False
            ev = json.loads(line)
            return all(ev.get(k) == v for k, v in match.items())

        i = self.p.out.wait_for(pred, max(start, 1), timeout)
        event: dict[str, Any] = json.loads(self.p.out.lines[i])
        return event

    def stop(self) -> int:
        return self.p.stop()


@contextlib.contextmanager
def daemons(base: Path, names: tuple[str, ...], net: list[str], *extra: str,
            offline: tuple[str, ...] = (),
            per_name: dict[str, list[str]] | None = None) -> Iterator[dict[str, Up]]:
    """``hailing up`` for each of ``names``, joined through ``net`` (``--bootstrap ADDR``
    or ``--relay URL``). They and the ``offline`` identities (made, not started) are all
    friends of each other, with data directories under ``base``."""
    make_friends(base, *names, *offline)
    running: dict[str, Up] = {}
    try:
        for n in names:  # started side by side: each one's start is mostly CPU of its own
            running[n] = Up(n, base / n, net, *extra, *(per_name or {}).get(n, []), wait=False)
        for up in running.values():
            up.wait_up()
        yield running
    finally:
        for up in reversed(list(running.values())):
            up.stop()


# -- Chromium ------------------------------------------------------------------------------


@contextlib.contextmanager
def chromium(headless: bool = True, args: tuple[str, ...] = CHROMIUM_ARGS) -> Iterator[Any]:
    """A Playwright Chromium (the system one) started with ``args``; yields the Browser."""
    from playwright.sync_api import sync_playwright

    path, why = chromium_path()
    if path is None:
        raise RuntimeError(why)
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=headless,
                                     args=list(args))
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: Any, up: Up, *, viewport: tuple[int, int] = (1100, 720)) -> Any:
    """A browser context for ``up``'s web app (camera, microphone and notifications
    granted, the harness's init script installed)."""
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    ctx.grant_permissions(["camera", "microphone", "notifications"], origin=up.url)
    ctx.add_init_script(INIT_SCRIPT)
    return ctx


def open_app(ctx: Any, up: Up, timeout_ms: float = 60_000) -> Any:
    """A page of ``ctx`` signed in to ``up``'s app, once its event stream is open (so no
    event is missed from then on) and the call module is loaded."""
    page = ctx.new_page()
    page.goto(up.login_url())
    page.wait_for_url(up.url + "/**", timeout=timeout_ms)
    wait_ready(page, timeout_ms)
    return page


def wait_ready(page: Any, timeout_ms: float = 60_000) -> None:
    """The app is signed in, its event stream open and its call module loaded."""
    page.locator('[data-testid="conn-state"][data-state="open"]').wait_for(
        state="attached", timeout=timeout_ms)
    page.wait_for_function("() => window.hailingCalls !== undefined", timeout=timeout_ms)


def contact_row(page: Any, name: str) -> Any:
    return page.locator(f'[data-testid="contact"][data-name="{name}"]')


def wait_js(page: Any, expression: str, arg: Any = None, *, timeout_s: float = 60.0,
            interval_s: float = 0.25) -> Any:
    """Evaluate ``expression`` (a JS function, maybe async) until it returns something
    truthy; that value. Fails with the last value after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = page.evaluate(expression, arg)
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{expression.strip()[:200]} stayed {last!r}")
        time.sleep(interval_s)


def wait_until(pred: Callable[[], Any], timeout_s: float = 60.0, what: str = "") -> Any:
    """Call ``pred`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout_s:.0f} s: {what or pred}")
        time.sleep(0.25)


def frames_decoded(page: Any) -> int:
    return int(page.evaluate(FRAMES_DECODED))


def audio_packets(page: Any) -> int:
    return int(page.evaluate(AUDIO_RECEIVED))


def wait_frames_increase(page: Any, above: int = 0, *, timeout_s: float = 60.0) -> int:
    """Wait until the page has decoded more than ``above`` remote video frames."""
    deadline = time.monotonic() + timeout_s
    n = frames_decoded(page)
    while n <= above:
        if time.monotonic() > deadline:
            raise AssertionError(f"remote video frames decoded stayed at {n} (> {above} wanted)")
        time.sleep(0.25)
        n = frames_decoded(page)
    return n


# -- calls, as a person makes them in the app ------------------------------------------------

#: JS: true once every RTCPeerConnection the page made is closed (or it made none).
ALL_CLOSED = """
() => (window.__pcs || []).every(
  (pc) => pc.connectionState === "closed" || pc.signalingState === "closed")
"""

#: JS: how many RTCPeerConnections the page made, and answers it created.
PC_COUNTS = """
() => ({ pcs: (window.__pcs || []).length, answers: window.__answers || 0,
         calls: window.hailingCalls === undefined ? null : window.hailingCalls })
"""


def start_call(page: Any, name: str, media: str = "video") -> None:
    """Click the contact's call button (``media``: "audio" or "video")."""
    button = contact_row(page, name).locator(f'[data-testid="call-{media}"]')
    button.click()


def accept_call(page: Any, timeout_ms: float = 60_000) -> None:
    """Wait for the incoming-call panel and accept."""
    panel = page.locator('[data-testid="incoming-call"]')
    panel.wait_for(state="visible", timeout=timeout_ms)
    panel.locator('[data-testid="accept"]').click()


def hang_up(page: Any) -> None:
    page.locator('[data-testid="hang-up"]').click()


def call_view(page: Any) -> str:
    """What the page's call view says (its state and, once ended, why): for a failure's
    message."""
    try:
        line = page.locator('[data-testid="call-state"]')
        if not line.count():
            return "no call view"
        return f"{line.first.get_attribute('data-state')}: {line.first.text_content()}"
    except Exception as exc:  # the page or the browser is gone: say so, do not hide the failure
        return f"unreadable ({type(exc).__name__})"


def wait_call_over(page: Any, timeout_s: float = 60.0) -> None:
    """The page shows no call any more: no hang-up button, every connection closed."""
    page.locator('[data-testid="hang-up"]').wait_for(state="hidden",
                                                      timeout=timeout_s * 1000)
    wait_js(page, ALL_CLOSED, timeout_s=timeout_s)


def make_clip(path: Path, seconds: float = 6.0, size: tuple[int, int] = (320, 240),
              fps: int = 15) -> Path:
    """A small MP4 (H.264 moving bars + AAC tone) for ``--play``; written with PyAV."""
    import array
    import math

    import av

    w, h = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame(w, h, "gray")
            stride = frame.planes[0].line_size
            row = bytes(((x + 4 * i) % 256) for x in range(w)) + bytes(stride - w)
            frame.planes[0].update(row * h)
            frame = frame.reformat(format="yuv420p")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        n = 1024
        for i in range(int(seconds * 48000 / n)):
            tone = array.array("h", (int(6000 * math.sin(2 * math.pi * 440 * (k + i * n) / 48000))
                                     for k in range(n)))
            aframe = av.AudioFrame(format="s16", layout="mono", samples=n)
            aframe.planes[0].update(tone.tobytes())
            aframe.sample_rate = 48000
            aframe.pts = i * n
            for packet in audio.encode(aframe):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    return path


def count_frames(path: Path) -> dict[str, int]:
    """Decoded frames per stream kind of a recording (PyAV)."""
    import av

    counts = {"video": 0, "audio": 0}
    with av.open(str(path)) as f:
        for stream in f.streams:
            if stream.type not in counts:
                continue
            for _ in f.decode(stream):
                counts[stream.type] += 1
            f.seek(0)
    return counts


def run_in_loopback_netns() -> None:
    """Make sure this process runs in a network namespace with only ``lo``: if it does not,
    re-run it (same argv) under ``unshare --net`` (root only) and exit with its code."""
    bring_lo_up()
    if only_loopback():
        return
    if os.environ.get("HAILING_IN_NETNS"):
        raise SystemExit("error: still not in a loopback-only network namespace after unshare")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit("error: Chromium must run in a network namespace with only lo: run "
                         "as root (unshare --net), or inside such a namespace already")
    env = dict(os.environ, HAILING_IN_NETNS="1")
    argv = ["unshare", "--net", "--", sys.executable, *sys.argv]
    raise SystemExit(subprocess.call(argv, env=env))


@contextlib.contextmanager
def static_page(html: bytes = b"<!doctype html><title>hailing</title>",
                host: str = "127.0.0.1") -> Iterator[str]:
    """An HTTP server on ``host`` serving ``html`` at every path; yields its origin.
    (http://127.0.0.1 is a secure context: getUserMedia works there.)"""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
