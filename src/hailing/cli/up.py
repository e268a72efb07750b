"""``hailing up``: run the daemon, the node a person keeps running, in the foreground.

Output contract (scripts and tests rely on it): the first stdout line is exactly
``up <contact id> dht HOST:PORT api http://127.0.0.1:PORT`` (``dht -`` when the daemon
signals through a relay or the contract only), printed once everything listens; the second
is ``web http://127.0.0.1:PORT/open?code=CODE``, a one-time sign-in link for the web app
(valid 10 minutes; ``hailing open`` makes a fresh one); then one JSON object per line per
event, as ``hailing listen`` prints them (see
:mod:`hailing.daemon.events`). SIGINT or SIGTERM stops it cleanly with exit 0 (a call's
recording is finalized first); a second ``hailing up`` on the same data directory fails
with one line (exit 1). ``--auto-answer`` (``--play``, ``--loop``, ``--record``): the daemon
answers media calls itself (docs/connection.md, "Media"). ``--serve-relay``: it also
volunteers a TURN relay (coturn; :mod:`hailing.cli._relay_opts`, docs/nat.md "Relays"),
and the first event is ``{"event": "relay", "serving": "IP:PORT", "urls": [...]}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LocalProtocolError, UsageError
from ._common import _bootstrap, _hostport, _ice_ip, _stop_on_signal
from ._config import DATA_DIR_ENV, default_data_dir
from ._relay_opts import add_relay_options, relay_config
from ._shared import NETWORK_SETTINGS, add_contract_options, contract_peer_kwargs

if TYPE_CHECKING:
    from ..node import Addr

PASSPHRASE_ENV = "HAILING_PASSPHRASE"
#: Seconds a link to a contact may stay unused before it is hung up (0: never).
DEFAULT_IDLE_CLOSE = 600.0
#: Seconds a call placed from the web app rings before it gives up (the daemon's default).
DEFAULT_RING_TIMEOUT = 30.0


def _api_addr(text: str) -> Addr:
    from ..node import parse_hostport

    try:
        host, port = parse_hostport(text, default_host="127.0.0.1")
    except LocalProtocolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if host not in ("127.0.0.1", "localhost"):
        raise argparse.ArgumentTypeError("the API listens on 127.0.0.1 only "
                                         f"(got {host!r}): give 127.0.0.1:PORT")
    return "127.0.0.1", port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds (0 or more), got {text!r}")
    return value


def _ring_seconds(text: str) -> float:
    value = _seconds(text)
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"expected more than 0 and at most 300 seconds, got {text!r}")
    return value


def _links(text: str) -> int:
    from ._config import MAX_LINKS

    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_LINKS:
        raise argparse.ArgumentTypeError(f"expected a number of links, 0 to {MAX_LINKS} "
                                         f"(0: no data-channel overlay), got {text!r}")
    return value


def _command(text: str) -> list[str]:
    """``--on-call CMD``: split as a shell would (no shell runs it)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split the command {text!r}: {exc}") from None
    if not argv:
        raise argparse.ArgumentTypeError("--on-call needs a command")
    return argv


def _daemon_parts(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """What ``args`` describe: (make_peer(node) -> Peer, DhtSettings or None,
    MediaOptions or None, the relay's TurnConfig or None)."""
    from ..daemon.dhtnode import DEFAULT_LINKS, DhtSettings
    from ..rtc import set_host_addresses

    media = _media_options(args)  # wrong media arguments first, before the network ones
    if args.ice_host:
        set_host_addresses(args.ice_host)
    common: dict[str, Any] = {
        "passphrase": os.environ.get(PASSPHRASE_ENV) or None,
        "accept_any": True if args.accept_any else None, "downloads": args.downloads,
        "text": True}  # the text coupler: 'hailing couple ...' and the web app's panel
    dht: DhtSettings | None = None
    available: dict[str, bool] = {}
    if args.via == "contract":
        common.update(contract_peer_kwargs(args))
        available["contract"] = True
    elif args.relay:
        common.update(backend="ws", relay_url=args.relay)
        available["ws"] = True
    else:
        if not args.bootstrap and not (Path(args.data_dir) / "dht").exists():
            raise LocalProtocolError("give --bootstrap HOST:PORT, or set it once: 'hailing "
                                     "config set bootstrap HOST:PORT' (needed the first time; "
                                     "a restarted daemon joins through the nodes it knew)")
        loopback = args.bootstrap and all(h.startswith("127.") for h, _ in args.bootstrap)
        bind = args.bind or (("127.0.0.1", 0) if loopback else ("0.0.0.0", 0))
        links = DEFAULT_LINKS if args.links is None else args.links
        dht = DhtSettings(bind, tuple(args.bootstrap), args.read_only, links)
        available.update(dht=True, mainline=not args.no_bep44_fallback, network=links > 0)
    common["ladder"] = _ladder(args, available)
    relay = relay_config(args, dht.bind if dht is not None else None)

    if media is not None:
        common["answer_tracks"] = media.answer_tracks

    def make_peer(node: Any) -> Any:
        from ..peer import Peer

        return Peer(args.data_dir, node=node, **common)

    return make_peer, dht, media, relay


def _ladder(args: argparse.Namespace, available: dict[str, bool]) -> Any:
    """``--ladder`` (or config.toml's ``ladder``), else the default ladder of what is
    available (:func:`hailing.session.ladder.default_ladder`)."""
    from ..session.ladder import default_ladder, ladder_from_text

    if args.ladder:
        ladder = ladder_from_text(args.ladder)
        if any(r.name == "network" for r in ladder) and not available.get("network"):
            raise UsageError("the network coupler forwards through the data-channel "
                             "overlay, which is off here (--links 0, --relay or --via "
                             "contract): leave 'network' out of the ladder")
        return ladder
    return default_ladder(**available)


def _media_options(args: argparse.Namespace) -> Any:
    """``--auto-answer`` and its media files, checked now: MediaOptions, or None."""
    if not args.auto_answer:
        for flag, value in (("--play", args.play), ("--record", args.record),
                            ("--loop", args.loop)):
            if value:
                raise UsageError(f"{flag} needs --auto-answer (without it, media calls "
                                 "are for the web app to answer)")
        return None
    if args.loop and args.play is None:
        raise UsageError("--loop needs --play FILE")
    from ..rtc.media import MediaOptions

    media = MediaOptions(play=Path(args.play) if args.play else None,
                         record=Path(args.record).absolute() if args.record else None,
                         loop=args.loop)
    media.check()
    return media


class _Printer:
    """The stdout sink: one JSON line per event; a reader that went away is ignored.
    Events that come before the ``up`` and ``web`` lines are out (a friend's call while
    the daemon starts) wait until :meth:`release`: the output contract holds."""

    def __init__(self) -> None:
        self.held: list[dict[str, Any]] | None = []
        self._emit = _stdout_printer()

    def __call__(self, event: dict[str, Any]) -> None:
        if self.held is not None:
            self.held.append(event)
        else:
            self._emit(event)

    def release(self) -> None:
        held, self.held = self.held or [], None
        for event in held:
            self._emit(event)


def _stdout_printer() -> Any:
    gone = False

    def emit(event: dict[str, Any]) -> None:
        nonlocal gone
        if gone:
            return
        try:
            print(json.dumps(event), flush=True)
        except (BrokenPipeError, ValueError):
            gone = True
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())

    return emit


async def cmd_up(args: argparse.Namespace) -> int:
    import asyncio

    from ..daemon.service import Daemon
    from ..identity import KEY_FILE

    args.data_dir = str(Path(args.data_dir or default_data_dir()).absolute())
    # A first run creates the identity; say so (a mistyped HAILING_DATA_DIR under a
    # service manager would otherwise quietly become somebody new).
    new_identity = not (Path(args.data_dir) / KEY_FILE).exists()
    stop = _stop_on_signal()  # before the first line: a signal right after it is a clean stop
    make_peer, dht, media, relay = _daemon_parts(args)
    daemon = Daemon(args.data_dir, make_peer, dht=dht, api_bind=args.api,
                    idle_close=args.idle_close, on_call=args.on_call, media=media, relay=relay,
                    ring_timeout=args.ring_timeout)
    printer = _Printer()
    daemon.events.add_sink(printer)
    try:
        await daemon.start()
        assert daemon.api_info is not None
        if new_identity:
            print(f"hailing: no identity was in {args.data_dir}: created a new one, "
                  f"{daemon.peer.contact_id} (show it with 'hailing id card')",
                  file=sys.stderr, flush=True)
        print(f"up {daemon.peer.contact_id} dht {daemon.dht_address or '-'} "
              f"api {daemon.api_info.url}", flush=True)
        print(f"web {daemon.login_url()}", flush=True)
        printer.release()
        if daemon.relay is not None:
            daemon.events.emit({"event": "relay", "serving": daemon.relay.status()["address"],
                                "urls": list(daemon.relay.urls)})
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(daemon.failed.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
    finally:
        await daemon.stop()
    return 1 if daemon.failed.is_set() and not stop.is_set() else 0


def add_up_command(sub: Any) -> None:
    p = sub.add_parser(
        "up", help="run the node: DHT, listening for calls, local API (until Ctrl-C)",
        description="Run this identity's node in the foreground until SIGINT/SIGTERM: its DHT "
        "node, listening for calls, links kept open to contacts, and a control API on "
        "127.0.0.1 (token in DATA_DIR/api.json). First line: 'up <contact id> dht HOST:PORT "
        "api http://127.0.0.1:PORT'; second: 'web URL', a one-time sign-in link for the web "
        "app; then one JSON object per line per event. While it "
        "runs, send/chat/contact/status/endpoint on the same data directory go through it.")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help=f"the identity's directory (default ${DATA_DIR_ENV}, else "
                   "$XDG_DATA_HOME/hailing)")
    p.add_argument("--bootstrap", type=_bootstrap, action="extend", default=[],
                   metavar="HOST:PORT", help="a DHT node to join through (repeatable; "
                   "'public': the public DHT's routers; needed "
                   "the first time unless set in config.toml: 'hailing config set bootstrap "
                   "HOST:PORT')")
    p.add_argument("--bind", type=_hostport, default=None, metavar="HOST:PORT",
                   help="UDP address of the DHT node")
    p.add_argument("--api", type=_api_addr, default=("127.0.0.1", 0), metavar="HOST:PORT",
                   help="address of the control API, 127.0.0.1 only (default: a free port)")
    p.add_argument("--read-only", action="store_true",
                   help="BEP43 read-only DHT node: answers no queries (for a node others "
                   "cannot reach, e.g. behind NAT); still listens for calls")
    p.add_argument("--no-bep44-fallback", action="store_true",
                   help="signal through hailing's DHT inboxes only: no BEP44 items on "
                   "other Mainline nodes where no hailing node is reachable (by default "
                   "a call falls back to them, and the contacts' items are polled)")
    p.add_argument("--relay", default=None, metavar="URL",
                   help="signal through this WebSocket relay instead of the DHT")
    p.add_argument("--links", type=_links, default=None, metavar="P",
                   help="run the DHT over WebRTC data-channel links too, at most P open "
                   "(the overlay, docs/overlay.md): friend links carry its channel and "
                   "calls can be forwarded through it (the 'network' coupler); default "
                   "32 (also config.toml's links); 0: UDP only, no overlay")
    p.add_argument("--ladder", default=None, metavar="NAMES",
                   help="the couplers a call tries, in order, comma-separated, each with "
                   "an optional wait in seconds (NAME:S): link (an open link to the "
                   "contact), network (forwarded through the data-channel overlay), dht, "
                   "mainline (the BEP44 fallback; right after dht, only when dht failed), "
                   "contract, ws (default: link:5,network:10,dht,mainline,contract, each "
                   "where available; also config.toml's ladder)")
    p.add_argument("--accept-any", action="store_true",
                   help="accept calls from anyone not blocked (not only contacts)")
    p.add_argument("--ice-host", type=_ice_ip, action="append", default=[], metavar="IP",
                   help="only gather ICE host candidates on this address (repeatable; also "
                   "HAILING_ICE_HOSTS)")
    p.add_argument("--downloads", default=None, metavar="DIR",
                   help="where received files go (default DATA_DIR/downloads)")
    p.add_argument("--idle-close", type=_seconds, default=DEFAULT_IDLE_CLOSE, metavar="S",
                   help="hang up a link to a contact unused for S seconds (0: never; "
                   f"default {DEFAULT_IDLE_CLOSE:.0f})")
    p.add_argument("--ring-timeout", type=_ring_seconds, default=DEFAULT_RING_TIMEOUT,
                   metavar="S", help="how long a call placed from the web app rings before "
                   f"it gives up (more than 0, at most 300; default {DEFAULT_RING_TIMEOUT:.0f})")
    p.add_argument("--on-call", type=_command, default=None, metavar="CMD",
                   help="run CMD (split like a shell command, but no shell) for each "
                   "incoming call that rings, with the ring event as one JSON line on its "
                   "stdin (e.g. a notify-send wrapper); at most 10 s, 4 at once")
    p.add_argument("--auto-answer", action="store_true",
                   help="answer media calls here (aiortc) instead of ringing the web app: "
                   "play --play FILE to the caller, record the caller to --record FILE")
    p.add_argument("--play", default=None, metavar="FILE",
                   help="(--auto-answer) send this file's audio and video to each caller "
                   "(default: send nothing)")
    p.add_argument("--loop", action="store_true",
                   help="(--auto-answer) play the file again and again")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="(--auto-answer) record each call: FILE's name with the caller and "
                   "the time added (calls.mkv -> calls-NAME-YYYYmmdd-HHMMSS.mkv; the "
                   "container is the extension's: .mp4 .mov .mkv .webm .wav .ogg .mp3)")
    add_relay_options(p)
    add_contract_options(p)
    # The data directory's config.toml fills the network options not given (cli._shared.prepare).
    p.set_defaults(func=cmd_up, _default_data_dir=True,
                   _settings=(*NETWORK_SETTINGS, "ladder", "links"))


__all__ = ["add_up_command", "cmd_up", "default_data_dir"]
