"""How to recover from a storage error: the CLI ends every :class:`StorageError` line
with what to do about the file it names, unless the message already says so.

Each file of a data directory has its own answer: the identity key cannot be rebuilt
(restore a backup), the contact book can be started afresh at the cost of the contacts,
the DHT state is a cache, and so on. The table below is the one place that says it.
"""

from __future__ import annotations

import re

from ..errors import HailingError, StorageError

__all__ = ["with_recovery"]

_FILES: dict[str, str] = {
    "identity.key": "restore it from a backup: the key cannot be rebuilt, and without it "
                    "this identity (its contact id) is lost",
    "peer.sqlite3": "move it aside (mv {path} {path}.bad) and an empty one is started: your "
                    "contacts, their rotation secrets and endpoint records, your presence "
                    "and display name are lost; or restore it from a backup",
    "rotation.json": "restore it from a backup, or move it aside: a new rotation secret is "
                     "made, and friends who reach you through the contract need your new "
                     "card ('hailing id card')",
    "chain.json": "fix it, or move it aside and record the chain again: 'hailing contract "
                  "deploy --rpc URL'",
    "dht.sqlite3": "it is a cache: move it aside and it is rebuilt",
    "history.sqlite3": "move it aside: the message history is lost, nothing else",
    "api.json": "if no 'hailing up' runs for this data directory, remove it",
    "daemon.lock": "if no 'hailing up' runs for this data directory, remove it",
    "config.toml": "fix it, or see 'hailing config show' and 'hailing config set'",
}
_PATH = re.compile(r"(?P<path>(?:[^\s:'\"]*/)?(?P<name>" + "|".join(
    re.escape(name) for name in _FILES) + r"))(?![\w.-])")
_DATA_DIR = re.compile(r"cannot create data directory ")
#: Words that show a message already says how to recover.
_ALREADY = ("to recover", "restore it", "chmod", "hailing config", "move it aside",
            "hailing id new", "HAILING_PASSPHRASE")


def recovery_hint(message: str) -> str | None:
    """What to do about the file ``message`` names, or None."""
    if any(word in message for word in _ALREADY):
        return None
    if _DATA_DIR.search(message):
        return "choose another directory with --data-dir or HAILING_DATA_DIR"
    m = _PATH.search(message)
    if m is None:
        if "Permission denied" in message:
            return "check that you own the file and may read and write it"
        return None
    return _FILES[m.group("name")].format(path=m.group("path"))


def with_recovery(exc: HailingError) -> str:
    """``str(exc)``, ending with how to recover when it is a storage error."""
    message = str(exc)
    if isinstance(exc, StorageError):
        hint = recovery_hint(message)
        if hint:
            return f"{message}; to recover: {hint}"
    return message
