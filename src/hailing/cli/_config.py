"""Where a node keeps its data, and the settings file that spares the flags.

The data directory (identity key, contacts, DHT state, settings) is, first match wins:

1. ``--data-dir DIR``;
2. ``$HAILING_DATA_DIR``;
3. ``$XDG_DATA_HOME/hailing``, i.e. ``~/.local/share/hailing`` when ``XDG_DATA_HOME`` is
   unset (the XDG base directory specification).

The settings live in ``DATA_DIR/config.toml``, one file per identity (so two identities
on one machine, e.g. in the README's walkthrough, keep their own), read with
:mod:`tomllib`. Every key is optional; a flag given on the command line wins::

    bootstrap = ["192.0.2.1:6881", "198.51.100.7:6881"]   # --bootstrap
    bind = "0.0.0.0:6881"                                  # --bind (peer commands, up)
    ice_hosts = ["192.0.2.10"]                             # --ice-host (HAILING_ICE_HOSTS wins)
    relay = "ws://192.0.2.1:8765/ws"                       # --relay
    via = "contract"                                       # --via
    downloads = "/home/me/Downloads"                       # --downloads (relative: to DATA_DIR)
    links = 32                                             # up --links (0: no overlay)

``hailing config set KEY VALUE...`` / ``unset KEY`` rewrite the file (comments are not
kept); ``hailing config show`` prints the data directory, the file and the settings. A
file that is not valid TOML, an unknown key or a value of the wrong kind is one
:class:`~hailing.errors.StorageError` line naming the file and the line.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LocalProtocolError, StorageError

if TYPE_CHECKING:  # the DHT (hailing.node) is imported only when a setting is parsed
    from ..node import Addr

__all__ = [
    "CONFIG_FILE",
    "DATA_DIR_ENV",
    "SETTINGS",
    "Config",
    "config_path",
    "default_data_dir",
    "load_config",
    "resolve_data_dir",
    "set_setting",
    "unset_setting",
]

DATA_DIR_ENV = "HAILING_DATA_DIR"
CONFIG_FILE = "config.toml"
_MAX_CONFIG_BYTES = 64 * 1024
_HEADER = ("# hailing settings of this data directory (see 'hailing config --help').\n"
           "# 'hailing config set' and 'hailing config unset' rewrite this file.\n")


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$HAILING_DATA_DIR``, else ``$XDG_DATA_HOME/hailing`` (``~/.local/share/hailing``)."""
    env = os.environ if environ is None else environ
    if env.get(DATA_DIR_ENV):
        return Path(env[DATA_DIR_ENV])
    xdg = env.get("XDG_DATA_HOME")
    # The spec says a relative XDG_DATA_HOME is invalid and to be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "hailing"


def resolve_data_dir(given: str | os.PathLike[str] | None) -> Path:
    """``given`` if not None, else :func:`default_data_dir`."""
    return Path(given) if given is not None else default_data_dir()


def config_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / CONFIG_FILE


# -- settings ------------------------------------------------------------------------------


def _hostport_value(text: str) -> Addr:
    from ..node import parse_hostport

    return parse_hostport(text)


def _bootstrap_value(text: str) -> list[Addr]:
    from ..node import bootstrap_list  # "public": the public DHT's routers

    return bootstrap_list([text])


def _ip_value(text: str) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise LocalProtocolError(f"not an IP address: {text!r}") from None
    if ip.is_unspecified or ip.is_multicast:
        raise LocalProtocolError(f"not a usable ICE host address: {text!r}")
    return str(ip)


def _relay_value(text: str) -> str:
    if not text.startswith(("ws://", "wss://")):
        raise LocalProtocolError(f"a relay is a ws:// or wss:// URL, not {text!r}")
    return text


def _via_value(text: str) -> str:
    if text not in ("dht", "contract"):
        raise LocalProtocolError(f"via is 'dht' or 'contract', not {text!r}")
    return text


def _ladder_value(text: str) -> str:
    from ..session.ladder import describe, ladder_from_text

    return describe(ladder_from_text(text))


#: ``hailing.daemon.dhtnode.MAX_LINKS`` (not imported: the DHT stays out of a command's
#: start; tests/test_friend_links_overlay.py checks they agree).
MAX_LINKS = 256


def _links_value(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_LINKS:
        raise LocalProtocolError(f"links is a number of links, 0 to {MAX_LINKS} (0: no "
                                 f"data-channel overlay), not {text!r}")
    return value


def _path_value(text: str) -> str:
    if not text:
        raise LocalProtocolError("a path cannot be empty")
    return text


@dataclass(frozen=True, slots=True)
class Setting:
    """One key of ``config.toml``: a string, or a list of strings (``many``); an
    ``integer`` one is also written and read as a TOML integer."""

    name: str
    many: bool
    parse: Callable[[str], Any]
    example: str
    help: str
    integer: bool = False


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("bootstrap", True, _bootstrap_value, "192.0.2.1:6881",
            "DHT nodes to join through (--bootstrap; 'public': the public DHT's routers)"),
    Setting("bind", False, _hostport_value, "0.0.0.0:6881",
            "local UDP address of the DHT node of peer commands and 'up' (--bind)"),
    Setting("ice_hosts", True, _ip_value, "192.0.2.10",
            "the only addresses ICE gathers host candidates on (--ice-host; "
            "HAILING_ICE_HOSTS wins)"),
    Setting("relay", False, _relay_value, "ws://192.0.2.1:8765/ws",
            "signal through this WebSocket relay (--relay)"),
    Setting("via", False, _via_value, "contract", "the rendezvous: dht or contract (--via)"),
    Setting("downloads", False, _path_value, "/home/me/Downloads",
            "where received files go; relative to the data directory (--downloads)"),
    Setting("ladder", False, _ladder_value, "link,dht,mainline",
            "the couplers 'up' tries a call through, in order (--ladder)"),
    Setting("links", False, _links_value, "32",
            "data-channel links 'up' keeps at most, the overlay (--links; 0: off)",
            integer=True),
)}


@dataclass(frozen=True, slots=True)
class Config:
    """The settings of one data directory. ``raw`` holds the file's strings, ``values``
    the parsed values (``bootstrap`` and ``bind`` as ``(host, port)``)."""

    path: Path
    raw: dict[str, str | list[str]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def bootstrap(self) -> list[Addr]:
        return [a for addrs in self.values.get("bootstrap", ()) for a in addrs]

    @property
    def bind(self) -> Addr | None:
        bind: Addr | None = self.values.get("bind")
        return bind

    @property
    def ice_hosts(self) -> list[str]:
        return list(self.values.get("ice_hosts", ()))

    @property
    def relay(self) -> str | None:
        relay: str | None = self.values.get("relay")
        return relay

    @property
    def via(self) -> str | None:
        via: str | None = self.values.get("via")
        return via

    @property
    def ladder(self) -> str | None:
        ladder: str | None = self.values.get("ladder")
        return ladder

    @property
    def links(self) -> int | None:
        links: int | None = self.values.get("links")
        return links

    @property
    def downloads(self) -> str | None:
        value: str | None = self.values.get("downloads")
        if value is None:
            return None
        return str(self.path.parent / Path(value).expanduser())

    def to_toml(self) -> str:
        """The settings as the file holds them (without the header)."""
        return "".join(f"{k} = {_toml_value(self.raw[k], SETTINGS[k].integer)}\n"
                       for k in SETTINGS if k in self.raw)


def _toml_value(value: str | list[str], integer: bool = False) -> str:
    # A JSON string with ASCII escapes is a valid TOML basic string.
    if integer and isinstance(value, str) and value.isdigit():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)


def _line_of(text: str, key: str) -> int | None:
    k = re.escape(key)
    # key = ..., key.sub = ..., [key], [key.sub], [[key]]
    pattern = re.compile(rf"^\s*(?:\[\[?\s*)?(?:{k}|\"{k}\"|'{k}')\s*[=.\]]")
    for i, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return i
    return None


def _where(path: Path, line: int | None) -> str:
    return f"{path}, line {line}" if line else str(path)


_RECOVER = "fix it, or see 'hailing config show' and 'hailing config set'"


def _parse(path: Path, text: str) -> Config:
    import tomllib

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r" \(at line (\d+), column \d+\)$", msg)
        if m:
            line: int | None = int(m.group(1))
            msg = msg[: m.start()]
        else:
            line = max(1, len(text.splitlines()))
            msg = msg.replace(" (at end of document)", " at the end")
        raise StorageError(f"{_where(path, line)}: not valid TOML: {msg}; {_RECOVER}") from None
    raw: dict[str, str | list[str]] = {}
    values: dict[str, Any] = {}
    for key, value in doc.items():
        where = _where(path, _line_of(text, key))
        setting = SETTINGS.get(key)
        if setting is None:
            raise StorageError(f"{where}: unknown setting {key!r} (known: "
                               f"{', '.join(SETTINGS)}); {_RECOVER}")
        items: list[str]
        if setting.integer and type(value) is int:
            value = str(value)
        if setting.many and isinstance(value, str):
            items = [value]
        elif setting.many and isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = list(value)
        elif not setting.many and isinstance(value, str):
            items = [value]
        else:
            shape = (f'a list of strings, e.g. {key} = ["{setting.example}"]' if setting.many
                     else f"a number, e.g. {key} = {setting.example}" if setting.integer
                     else f'a string, e.g. {key} = "{setting.example}"')
            raise StorageError(f"{where}: {key} must be {shape}; {_RECOVER}")
        try:
            parsed = [setting.parse(v) for v in items]
        except LocalProtocolError as exc:
            raise StorageError(f"{where}: {key}: {exc}; {_RECOVER}") from None
        raw[key] = items if setting.many else items[0]
        values[key] = parsed if setting.many else parsed[0]
    return Config(path, raw, values)


def load_config(data_dir: str | os.PathLike[str]) -> Config:
    """The settings of ``data_dir`` (empty when it has no ``config.toml``)."""
    path = config_path(data_dir)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_CONFIG_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return Config(path)
    except IsADirectoryError:
        raise StorageError(f"{path} is a directory, not a settings file; move it aside") from None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > _MAX_CONFIG_BYTES:
        raise StorageError(f"{path} is larger than {_MAX_CONFIG_BYTES} bytes; {_RECOVER}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise StorageError(f"{_where(path, line)}: not UTF-8 text; {_RECOVER}") from None
    return _parse(path, text)


def _write(config: Config) -> None:
    path = config.path
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(_HEADER + config.to_toml())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None


def set_setting(data_dir: str | os.PathLike[str], key: str, values: list[str]) -> Config:
    """Set ``key`` to ``values`` (one value unless the setting is a list) and rewrite the
    file; :class:`LocalProtocolError` for an unknown key or a bad value."""
    setting = SETTINGS.get(key.replace("-", "_"))
    if setting is None:
        raise LocalProtocolError(f"unknown setting {key!r} (known: {', '.join(SETTINGS)})")
    if not values:
        raise LocalProtocolError(f"give a value for {setting.name}")
    if not setting.many and len(values) > 1:
        raise LocalProtocolError(f"{setting.name} takes one value, not {len(values)}")
    parsed = [setting.parse(v) for v in values]
    if setting.name == "bootstrap":
        from ..node import PUBLIC, format_hostport

        values = [PUBLIC if v.strip().lower() == PUBLIC else format_hostport(a[0])
                  for v, a in zip(values, parsed, strict=True)]
    elif setting.name == "bind":
        from ..node import format_hostport

        values = [format_hostport(parsed[0])]
    elif setting.name == "ice_hosts":
        values = list(parsed)
    elif setting.integer:
        values = [str(parsed[0])]
    config = load_config(data_dir)
    raw = dict(config.raw)
    raw[setting.name] = list(values) if setting.many else values[0]
    new = _parse(config.path, _HEADER + Config(config.path, raw).to_toml())
    _write(new)
    return new


def unset_setting(data_dir: str | os.PathLike[str], key: str) -> tuple[Config, bool]:
    """Remove ``key`` from the file; the new settings and whether it was set."""
    name = key.replace("-", "_")
    if name not in SETTINGS:
        raise LocalProtocolError(f"unknown setting {key!r} (known: {', '.join(SETTINGS)})")
    config = load_config(data_dir)
    if name not in config.raw:
        return config, False
    raw = {k: v for k, v in config.raw.items() if k != name}
    new = _parse(config.path, Config(config.path, raw).to_toml())
    _write(new)
    return new, True
