"""The signaling contract: its Vyper source, compiled on demand, cached by content.

Why Vyper: the compiler is the ``vyper`` package from PyPI, a pure-Python wheel that the
project's Python toolchain installs like any other dependency. Solidity would need the npm
``solc`` package (a second language runtime and package manager in every build just for
the compiler). The contract is three functions that each emit one event, which Vyper
expresses with no inheritance, no assembly and bounded types (``Bytes[MAX_PAYLOAD]``: the
ABI decoder itself rejects a longer payload, no hand-written check needed).

Source and bytecode cannot drift: no bytecode is committed. :func:`compile_vyper` compiles
``contract.vy`` (or any Vyper source) with the installed ``vyper`` and caches the ABI and
bytecode in ``<cache>/vyper/<key>.json``, where the key hashes the source, the vyper
version, the EVM version and the optimization mode. A changed source or compiler is a new
key, hence a fresh compile. A cache entry that does not parse or does not match its key is
ignored and rewritten. The cache directory is ``$HAILING_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/hailing``, else ``~/.cache/hailing``.

Why 512 bytes at most per payload (:data:`MAX_PAYLOAD`): a sealed offer is 175-300 bytes
(105 bytes of envelope, a 32-byte DTLS fingerprint, a compact SDP of 40-160 bytes) and an
endpoint record is smaller. 512 leaves room for a few more ICE candidates and bounds what a
stranger can make a watcher download per event (a 512-byte message costs ~40,000 gas).

Call :func:`signaling_contract` to get the compiled signaling contract, then deploy it with
:meth:`hailing.chain.client.SignalingContract.deploy`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..errors import LocalProtocolError

__all__ = [
    "EVM_VERSION",
    "MAX_PAYLOAD",
    "SOURCE_PATH",
    "CompiledContract",
    "cache_dir",
    "compile_vyper",
    "signaling_contract",
]

SOURCE_PATH = Path(__file__).with_name("contract.vy")
MAX_PAYLOAD = 512  # bytes; must equal MAX_PAYLOAD in contract.vy (a test checks it)
# Cancun (PUSH0, MCOPY, transient storage) runs on anvil, on eth-tester's py-evm and on
# every mainnet-like chain since 2024; a newer default would shut out slower chains.
EVM_VERSION = "cancun"
_OPTIMIZE = "gas"
_CACHE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class CompiledContract:
    """A compiled contract: ``abi`` as the compiler gave it, ``bytecode`` the init code
    (what a deployment transaction carries), ``runtime`` the code a node holds for it."""

    abi: list[dict[str, Any]]
    bytecode: bytes
    runtime: bytes
    vyper_version: str
    key: str  # sha256 of (cache format, vyper version, EVM version, optimizer, source)


def cache_dir() -> Path:
    """The directory compiled contracts are cached in (see the module docstring)."""
    explicit = os.environ.get("HAILING_CACHE_DIR")
    if explicit:
        return Path(explicit) / "vyper"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "hailing" / "vyper"


def _vyper_version() -> str:
    try:
        return version("vyper")
    except Exception as exc:  # PackageNotFoundError, or broken metadata
        raise LocalProtocolError(
            "compiling the contract needs the 'vyper' package (pip install vyper)"
        ) from exc


def _cache_key(source: str, vyper_version: str) -> str:
    material = "\0".join((str(_CACHE_FORMAT), vyper_version, EVM_VERSION, _OPTIMIZE, source))
    return hashlib.sha256(material.encode()).hexdigest()


def _load_cached(path: Path, key: str, vyper_version: str) -> CompiledContract | None:
    """The cached entry at ``path`` if it is well-formed and made for ``key``, else None."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        abi = entry["abi"]
        if not isinstance(abi, list) or not all(isinstance(item, dict) for item in abi):
            return None
        bytecode = bytes.fromhex(entry["bytecode"])
        runtime = bytes.fromhex(entry["runtime"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not bytecode or not runtime:
        return None
    return CompiledContract(abi, bytecode, runtime, vyper_version, key)


def _store_cached(path: Path, compiled: CompiledContract) -> None:
    """Write the entry atomically; a read-only or full cache just means no caching."""
    entry = {
        "key": compiled.key,
        "vyper_version": compiled.vyper_version,
        "evm_version": EVM_VERSION,
        "abi": compiled.abi,
        "bytecode": compiled.bytecode.hex(),
        "runtime": compiled.runtime.hex(),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass


def _compile(source: str) -> dict[str, Any]:
    import vyper
    from vyper.compiler.settings import OptimizationLevel, Settings

    settings = Settings(evm_version=EVM_VERSION, optimize=OptimizationLevel.from_string(_OPTIMIZE))
    try:
        out = vyper.compile_code(
            source, output_formats=["abi", "bytecode", "bytecode_runtime"], settings=settings
        )
    except Exception as exc:  # vyper raises its own VyperException tree (and a few others)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LocalProtocolError(f"the Vyper source does not compile: {first}") from exc
    return dict(out)


def compile_vyper(source: str, *, cache: Path | None = None) -> CompiledContract:
    """Compile Vyper ``source`` with the installed vyper, through the content-keyed cache.

    ``cache`` overrides :func:`cache_dir`. Raises :class:`LocalProtocolError` if vyper is
    missing or the source does not compile.
    """
    vyper_version = _vyper_version()
    key = _cache_key(source, vyper_version)
    path = (cache if cache is not None else cache_dir()) / f"{key}.json"
    cached = _load_cached(path, key, vyper_version)
    if cached is not None:
        return cached
    out = _compile(source)
    compiled = CompiledContract(
        abi=list(out["abi"]),
        bytecode=bytes.fromhex(str(out["bytecode"]).removeprefix("0x")),
        runtime=bytes.fromhex(str(out["bytecode_runtime"]).removeprefix("0x")),
        vyper_version=vyper_version,
        key=key,
    )
    _store_cached(path, compiled)
    return compiled


@functools.cache
def signaling_contract() -> CompiledContract:
    """The compiled ``contract.vy`` (compiled or loaded from the cache once per process)."""
    return compile_vyper(SOURCE_PATH.read_text(encoding="utf-8"))
