"""Rule 1: the protocol core does no IO and reads no clock. Plus: the subpackages' ``__all__``
(``import hailing`` itself: tests/test_public_api.py)."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

import hailing
from hailing import dht, krpc

SRC = Path(hailing.__file__).parent
CORE_FILES = sorted(
    [SRC / "bencode.py", *(SRC / "dht").rglob("*.py"), *(SRC / "krpc").rglob("*.py")]
)
FORBIDDEN = {
    "asyncio", "os", "random", "secrets", "select", "selectors", "socket", "ssl",
    "subprocess", "threading", "time",
}


def forbidden_imports(source: str) -> list[str]:
    """Top-level module names from FORBIDDEN that ``source`` imports, in any form."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        found += [n for n in names if n.split(".")[0] in FORBIDDEN]
    return found


def test_core_files_are_found() -> None:
    names = {p.relative_to(SRC).as_posix() for p in CORE_FILES}
    assert {"bencode.py", "dht/protocol.py", "dht/routing.py", "krpc/_codec.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.relative_to(SRC).as_posix())
def test_core_module_does_no_io(path: Path) -> None:
    assert forbidden_imports(path.read_text()) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time", ["time"]),
        ("import os.path", ["os.path"]),
        ("import json, socket as s", ["socket"]),
        ("from asyncio import sleep", ["asyncio"]),
        ("from random import Random", ["random"]),
        ("from concurrent.futures import thread", []),
        ("from . import time", []),  # a relative import of a sibling module
        ("def f():\n    import secrets\n", ["secrets"]),
        ("try:\n    import selectors\nexcept ImportError:\n    pass\n", ["selectors"]),
        ("if True:\n    from ssl import SSLContext\n", ["ssl"]),
        ("x = __import__('subprocess')", ["subprocess"]),
        ("import threading.local", ["threading.local"]),
        ("import timeit, randomx, osmosis", []),
        ("import hashlib, heapq, ipaddress", []),
    ],
)
def test_the_checker_itself(source: str, expected: list[str]) -> None:
    assert forbidden_imports(source) == expected


def _public_names(module: types.ModuleType, dunders: tuple[str, ...] = ()) -> list[str]:
    return [
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name in dunders) and not isinstance(value, types.ModuleType)
    ]


@pytest.mark.parametrize("module", [dht, krpc], ids=["dht", "krpc"])
def test_subpackage_all_matches_public_names(module: types.ModuleType) -> None:
    assert sorted(_public_names(module)) == sorted(module.__all__)
    assert len(set(module.__all__)) == len(module.__all__)
