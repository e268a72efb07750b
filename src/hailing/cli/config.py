"""The ``config`` commands of the ``hailing`` CLI: ``config show``, ``set`` and ``unset``.

The settings are ``DATA_DIR/config.toml`` (see :mod:`hailing.cli._config`). Output
contracts: ``config show`` prints valid TOML: two comment lines naming the data directory
and the file, the settings in force, and one comment per setting not set; ``config set``
prints the line it wrote (``KEY = VALUE`` as TOML); ``config unset`` prints ``unset KEY``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._config import SETTINGS, load_config, set_setting, unset_setting
from ._shared import add_data_dir


async def cmd_config_show(args: argparse.Namespace) -> int:
    config = load_config(args.data_dir)
    state = "" if config.path.exists() else " (not created yet)"
    print(f"# data directory: {args.data_dir} (from {args._data_dir_from})")
    print(f"# settings file: {config.path}{state}")
    print(config.to_toml(), end="")
    for name, setting in SETTINGS.items():
        if name not in config.raw:
            print(f"# {name} (not set): {setting.help}")
    return 0


async def cmd_config_set(args: argparse.Namespace) -> int:
    config = set_setting(args.data_dir, args.key, args.values)
    prefix = args.key.replace("-", "_") + " = "
    print(next(line for line in config.to_toml().splitlines() if line.startswith(prefix)),
          flush=True)
    return 0


async def cmd_config_unset(args: argparse.Namespace) -> int:
    _, was_set = unset_setting(args.data_dir, args.key)
    print(f"unset {args.key.replace('-', '_')}" + ("" if was_set else " (it was not set)"))
    return 0


def add_config_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    keys = "\n".join(f"  {name:10} {s.help}" for name, s in SETTINGS.items())
    cp = sub.add_parser(
        "config", help="show or change the settings (bootstrap nodes, bind, ICE hosts, ...)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The settings of a data directory live in DATA_DIR/config.toml (TOML). "
        "A flag given on the command line wins over the file.\n\nSettings:\n" + keys)
    cs = cp.add_subparsers(dest="config_command", required=True, parser_class=parser_class,
                           metavar="COMMAND")
    p = cs.add_parser("show", help="print the data directory, the file and the settings")
    add_data_dir(p)
    p.set_defaults(func=cmd_config_show)
    p = cs.add_parser("set", help="set KEY to VALUE (several values for a list setting)",
                      description="Set a setting and rewrite config.toml (comments in it are "
                      "not kept). Keys: " + ", ".join(SETTINGS) + ". Example: hailing config "
                      "set bootstrap 192.0.2.1:6881 198.51.100.7:6881")
    p.add_argument("key", metavar="KEY")
    p.add_argument("values", nargs="+", metavar="VALUE")
    add_data_dir(p)
    p.set_defaults(func=cmd_config_set)
    p = cs.add_parser("unset", help="remove KEY from config.toml")
    p.add_argument("key", metavar="KEY")
    add_data_dir(p)
    p.set_defaults(func=cmd_config_unset)


__all__ = ["add_config_commands"]
