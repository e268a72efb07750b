"""coturn (``turnserver``, RFC 8656) as a supervised child process of the node.

Theory of operation
-------------------
:class:`TurnServer` owns one ``turnserver`` process for one relay directory
(``DATA_DIR/relay``): it writes ``turnserver.conf`` there (mode 0600: it holds the
secret) from a :class:`TurnConfig`, starts ``turnserver -c`` on that file only (so no
system-wide ``/etc/turnserver.conf`` is read; its SQLite file and pid file are in the
relay directory too, nothing under ``/var``), and waits until it answers a STUN Binding
request on its port. The process then runs until :meth:`TurnServer.stop` (SIGTERM,
then SIGKILL); if it dies before, the supervisor starts it again after a bounded
backoff (1 s doubling to 30 s, reset after a minute of good health), counted in
``stats["restarts"]``. ``setpriv --pdeathsig KILL`` (util-linux) makes the kernel kill
it should the node die without stopping it, and a process left by a node killed before
that (found by its pid file) is killed at start.

Authentication is coturn's TURN REST API scheme (``use-auth-secret``): the node keeps a
per-node secret (``DATA_DIR/relay/secret``, 0600, made once) and mints time-limited
credentials nobody else can (:func:`rest_credentials`): username
``"<expiry unix time>:<random>"``, password ``base64(HMAC-SHA1(secret, username))``.
coturn checks both, and refuses a username past its expiry.

The service is UDP only (no TCP, TLS or DTLS listeners, no TCP relays), answers no CLI
or web admin, and enforces the caps of :class:`TurnConfig`: bytes per second per
allocation (``max-bps``) and in all (``bps-capacity``), allocations per credential
(``user-quota``) and in all (``total-quota``: past either, 486 Allocation Quota
Reached), the longest allocation lifetime a refresh may ask for, and peers that are
never relayed to (loopback, multicast, the private ranges of ``DENIED_PEERS``).

Call :meth:`TurnServer.start`, then :meth:`TurnServer.stop`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from .._secrets import private_dir, read_secret, write_secret
from ..errors import LocalProtocolError, StorageError

log = logging.getLogger("hailing.nat.turnserver")

#: The TURN/STUN port (RFC 8656 section 4).
DEFAULT_PORT = 3478
#: Bytes per second one allocation may relay (both directions counted apart by
#: coturn): 1 MB/s, 8 Mbit/s, well above what a call's audio and HD video need.
DEFAULT_MAX_BPS = 1_000_000
#: Bytes per second every allocation together may take (0: no limit): 16 MB/s.
DEFAULT_CAPACITY_BPS = 16_000_000
#: Concurrent allocations one credential may hold (a call takes one per peer).
DEFAULT_USER_QUOTA = 4
#: Concurrent allocations in all.
DEFAULT_TOTAL_QUOTA = 32
#: The longest lifetime an allocation may ask for; it must be refreshed before (s).
DEFAULT_MAX_LIFETIME = 600
#: How long a nonce stays valid (s).
DEFAULT_STALE_NONCE = 600
#: The relay ports (RFC 8656's dynamic range, coturn's default).
DEFAULT_PORTS = (49152, 65535)
REALM = "hailing"
#: Peers a volunteer never relays to: its own networks and other private ranges (so a
#: relay cannot be used to reach into the LAN it stands in). Loopback and multicast
#: peers are refused by coturn itself (unless ``allow_loopback_peers``, for tests).
DENIED_PEERS = (
    "0.0.0.0-0.255.255.255", "10.0.0.0-10.255.255.255", "100.64.0.0-100.127.255.255",
    "169.254.0.0-169.254.255.255", "172.16.0.0-172.31.255.255",
    "192.168.0.0-192.168.255.255", "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)

#: Files in the relay directory.
CONFIG_FILE = "turnserver.conf"
SECRET_FILE = "secret"
PID_FILE = "turnserver.pid"
DB_FILE = "turndb"

#: Supervision: restart backoff bounds (s), health time after which it resets (s).
BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0
#: How long a start waits for the first STUN answer, and SIGTERM for an exit (s).
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
#: Log lines of the process kept for error messages.
LOG_TAIL = 40


@dataclass(frozen=True)
class TurnConfig:
    """What coturn is told. ``address``: the IP it listens and relays on (a local
    address of this host); ``external_ip``: the address clients reach it at when that
    is not ``address`` (a 1:1 NAT), else None."""

    address: str
    port: int = DEFAULT_PORT
    external_ip: str | None = None
    min_port: int = DEFAULT_PORTS[0]
    max_port: int = DEFAULT_PORTS[1]
    max_bps: int = DEFAULT_MAX_BPS
    capacity_bps: int = DEFAULT_CAPACITY_BPS
    user_quota: int = DEFAULT_USER_QUOTA
    total_quota: int = DEFAULT_TOTAL_QUOTA
    max_lifetime: int = DEFAULT_MAX_LIFETIME
    stale_nonce: int = DEFAULT_STALE_NONCE
    realm: str = REALM
    #: Relay to loopback peers (a loopback test's peers are there; never for real).
    allow_loopback_peers: bool = False

    def check(self) -> None:
        """Raise LocalProtocolError (one line) on a setting coturn cannot use."""
        for name in ("address", "external_ip"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise LocalProtocolError(f"relay {name.replace('_', ' ')} {value!r} is not "
                                         "an IP address") from None
        if not 0 < self.port < 65536:
            raise LocalProtocolError(f"relay port {self.port} is not 1..65535")
        if not 1024 <= self.min_port <= self.max_port < 65536:
            raise LocalProtocolError(f"relay ports {self.min_port}-{self.max_port}: give "
                                     "LO-HI within 1024-65535")
        if self.min_port <= self.port <= self.max_port:
            raise LocalProtocolError(f"the relay port {self.port} is inside the relay "
                                     f"ports {self.min_port}-{self.max_port}")
        for name in ("max_bps", "capacity_bps", "user_quota", "total_quota"):
            if getattr(self, name) < 0:
                raise LocalProtocolError(f"relay {name.replace('_', ' ')} must be 0 or more")
        if self.max_lifetime < 60:
            raise LocalProtocolError("the relay's allocation lifetime is 60 s or more")

    @property
    def advertised(self) -> str:
        """The IP clients reach the relay at."""
        return self.external_ip or self.address

    def render(self, secret: str, relay_dir: Path) -> str:
        """The ``turnserver.conf`` text."""
        lines = [
            "# Written by hailing (hailing.nat.turnserver) at every start: edits are lost.",
            f"listening-ip={self.address}",
            f"relay-ip={self.address}",
            f"external-ip={self.advertised}" if self.external_ip is None
            else f"external-ip={self.external_ip}/{self.address}",
            f"listening-port={self.port}",
            f"min-port={self.min_port}",
            f"max-port={self.max_port}",
            "use-auth-secret",
            f"static-auth-secret={secret}",
            f"realm={self.realm}",
            f"max-bps={self.max_bps}",
            f"bps-capacity={self.capacity_bps}",
            f"user-quota={self.user_quota}",
            f"total-quota={self.total_quota}",
            f"max-allocate-lifetime={self.max_lifetime}",
            f"stale-nonce={self.stale_nonce}",
            "no-tcp", "no-tls", "no-dtls", "no-tcp-relay",
            "no-cli", "no-multicast-peers", "no-rfc5780", "no-software-attribute",
            "fingerprint",
            "log-file=stdout", "simple-log",
            f"pidfile={relay_dir / PID_FILE}",
            f"userdb={relay_dir / DB_FILE}",
        ]
        lines += [f"denied-peer-ip={r}" for r in DENIED_PEERS]
        if self.allow_loopback_peers:
            lines.append("allow-loopback-peers")
        return "\n".join(lines) + "\n"


def rest_credentials(secret: str, expires: int, nonce: str | None = None) -> tuple[str, str]:
    """TURN REST API credentials (coturn ``use-auth-secret``): ``(username, password)``
    with username ``"<expires>:<nonce>"`` and password
    ``base64(HMAC-SHA1(secret, username))``."""
    username = f"{int(expires)}:{nonce if nonce is not None else secrets.token_urlsafe(9)}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode()


def load_secret(relay_dir: Path) -> str:
    """The node's relay secret (``relay_dir/secret``, 0600), made once; StorageError
    (one line) when the file is not private or not readable."""
    private_dir(relay_dir)
    path = relay_dir / SECRET_FILE
    data = read_secret(path, missing_ok=True)
    if data is None:
        write_secret(path, secrets.token_hex(32).encode() + b"\n", overwrite=False)
        data = read_secret(path)  # whoever wrote first won
    text = data.decode("ascii", errors="replace").strip()
    if len(text) < 32 or not text.isalnum():
        raise StorageError(f"{path}: not a relay secret (delete it to make a new one)")
    return text


def port_free(address: str, port: int) -> bool:
    """Whether a UDP socket can bind ``address:port`` (coturn's own sockets use
    SO_REUSEPORT, so a second coturn would start on a taken port without a word)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


async def stun_ping(addr: tuple[str, int], timeout: float = 0.5) -> bool:
    """Whether ``addr`` answers a STUN Binding request within ``timeout``."""
    from aioice import stun

    loop = asyncio.get_running_loop()
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    got: asyncio.Future[bool] = loop.create_future()

    class _Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, src: tuple[str, int]) -> None:
            with contextlib.suppress(ValueError):
                msg = stun.parse_message(data)
                if msg.transaction_id == request.transaction_id and not got.done():
                    got.set_result(True)

    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    transport, _ = await loop.create_datagram_endpoint(_Proto, family=family)
    try:
        transport.sendto(bytes(request), addr)
        async with asyncio.timeout(timeout):
            return await got
    except TimeoutError:
        return False
    finally:
        transport.close()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has closed its sockets: it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


class TurnServer:
    """One supervised ``turnserver`` process (see the module docstring)."""

    def __init__(self, relay_dir: str | os.PathLike[str], config: TurnConfig, *,
                 binary: str = "turnserver") -> None:
        config.check()
        self.relay_dir = Path(relay_dir)
        self.config = config
        self.binary = binary
        #: starts, restarts, exits (unexpected), stale_killed.
        self.stats: Counter[str] = Counter()
        self.secret = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._tail: deque[str] = deque(maxlen=LOG_TAIL)
        self._stopping = False
        self._ready = False

    @property
    def address(self) -> tuple[str, int]:
        """Where clients reach it."""
        return self.config.advertised, self.config.port

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def ready(self) -> bool:
        """It runs and has answered STUN since its last start."""
        return self._ready and self.pid is not None

    def log_tail(self) -> list[str]:
        return list(self._tail)

    async def start(self) -> TurnServer:
        """Write the config, start the process and wait until it answers STUN; raise
        LocalProtocolError (one line) when turnserver is missing, the port is taken or
        it does not come up, StorageError when the relay directory is unusable."""
        if self._supervisor is not None:
            raise LocalProtocolError("the relay is already started")
        path = shutil.which(self.binary)
        if path is None:
            raise LocalProtocolError(f"--serve-relay needs coturn's {self.binary!r}, which is "
                                     "not installed (Debian/Ubuntu: apt-get install coturn)")
        self.binary = path
        self.secret = load_secret(self.relay_dir)
        write_secret(self.relay_dir / CONFIG_FILE,
                     self.config.render(self.secret, self.relay_dir).encode())
        await self._kill_stale()
        self._stopping = False
        await self._launch()
        self._supervisor = asyncio.ensure_future(self._supervise())
        return self

    async def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after STOP_TIMEOUT) and its supervisor."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._terminate()
        with contextlib.suppress(OSError):
            (self.relay_dir / PID_FILE).unlink()

    async def __aenter__(self) -> TurnServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- process -------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        argv = [self.binary, "-c", str(self.relay_dir / CONFIG_FILE)]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:  # the kernel kills it if we die without stopping it
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        return argv

    async def _launch(self) -> None:
        cfg = self.config
        if not port_free(cfg.address, cfg.port):
            raise LocalProtocolError(f"the relay port {cfg.address}:{cfg.port} is taken "
                                     "(another TURN server?): give --relay-port")
        self._tail.clear()
        self._ready = False
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=self.relay_dir, start_new_session=True)
        self.stats["starts"] += 1
        self._reader = asyncio.ensure_future(self._read_log(self._proc))
        target = ("127.0.0.1" if cfg.address == "0.0.0.0" else cfg.address, cfg.port)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                break
            if await stun_ping(target, 0.25):
                self._ready = True
                log.info("turnserver %d answers on %s:%d", self._proc.pid, *target)
                return
        await self._terminate()
        last = next((line for line in reversed(self._tail) if "error" in line.lower()),
                    self._tail[-1] if self._tail else "no output")
        raise LocalProtocolError(f"turnserver did not start on {cfg.address}:{cfg.port}: "
                                 f"{last.strip()}")

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                self._tail.append(text)
                log.debug("turnserver: %s", text)

    async def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        self._ready = False
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            reader, self._reader = self._reader, None
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _kill_stale(self) -> None:
        """A turnserver left by a node of this directory killed without stopping it
        (no setpriv to have the kernel do it): killed, and waited for (bounded)."""
        pidfile = self.relay_dir / PID_FILE
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"turnserver" not in cmdline or str(self.relay_dir / CONFIG_FILE).encode() not in cmdline:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.stats["stale_killed"] += 1
        log.warning("killed turnserver %d left by an earlier run", pid)
        cfg = self.config
        for _ in range(100):  # its leader is a zombie before its threads close the sockets
            if not _alive(pid) and port_free(cfg.address, cfg.port):
                return
            await asyncio.sleep(0.05)

    async def _supervise(self) -> None:
        """Restart the process whenever it dies, with a bounded backoff; never raises."""
        backoff = BACKOFF_MIN
        while not self._stopping:
            proc = self._proc
            started = time.monotonic()
            if proc is not None:
                code = await proc.wait()
                if self._stopping:
                    return
                self.stats["exits"] += 1
                self._ready = False
                log.warning("turnserver %d exited (%s); restarting in %.0f s",
                            proc.pid, code, backoff)
                if time.monotonic() - started >= HEALTHY_AFTER:
                    backoff = BACKOFF_MIN
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            try:
                await self._launch()
                self.stats["restarts"] += 1
            except Exception as exc:  # the port taken meanwhile, the binary gone, ...
                self.stats["restart_failures"] += 1
                log.warning("turnserver restart failed: %s", exc)
                self._proc = None


__all__ = [
    "DEFAULT_CAPACITY_BPS", "DEFAULT_MAX_BPS", "DEFAULT_MAX_LIFETIME", "DEFAULT_PORT",
    "DEFAULT_PORTS", "DEFAULT_TOTAL_QUOTA", "DEFAULT_USER_QUOTA", "DENIED_PEERS", "TurnConfig",
    "TurnServer", "load_secret", "port_free", "rest_credentials", "stun_ping",
]
