"""The CLI package's shape: one module per command group, no import cycle.

Command modules (``hailing.cli.dht``, ``identity``, ``calls``, ...) may import the shared
private modules (``hailing.cli._common``, ``_shared``, ...) but never each other; shared
modules import no command module; only the package's ``__init__`` gathers them. Imports
are read from the source (every ``import``, also those inside functions), so a lazy import
that would close a cycle is caught too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import hailing.cli

PACKAGE = "hailing.cli"
CLI_DIR = Path(hailing.cli.__file__).parent
MODULES = sorted(p.stem for p in CLI_DIR.glob("*.py"))


def _imports(name: str) -> set[str]:
    """The ``hailing.cli`` modules that module ``name`` imports (as bare module names)."""
    return _imports_in(name, (CLI_DIR / f"{name}.py").read_text(encoding="utf-8"))


def _imports_in(name: str, source: str) -> set[str]:
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module or ""
            elif node.level == 0 and node.module and node.module.startswith(PACKAGE + "."):
                base = node.module[len(PACKAGE) + 1:]
            elif node.level == 0 and node.module == PACKAGE:
                base = ""
            else:
                continue
            if base:
                found.add(base.split(".")[0])
            else:  # from . import x
                found.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name[len(PACKAGE) + 1:].split(".")[0])
    found.discard(name)
    return {m for m in found if m in MODULES}


GRAPH = {m: _imports(m) for m in MODULES}


def _is_command_module(name: str) -> bool:
    return not name.startswith("_")


def test_there_are_command_modules() -> None:
    commands = {m for m in MODULES if _is_command_module(m)}
    assert {"dht", "identity", "calls", "chain", "wallet", "config"} <= commands, commands


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name: str) -> None:
    if name == "__main__":
        return  # running it would run the CLI
    importlib.import_module(f"{PACKAGE}.{name}" if name != "__init__" else PACKAGE)


def test_no_import_cycle() -> None:
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for dep in sorted(GRAPH[m]):
            if state.get(dep) == "open":
                cycle = [*path[path.index(dep):], dep] if dep in path else [m, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[m] = "done"

    for m in MODULES:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("name", [m for m in MODULES if m not in ("__init__", "__main__")])
def test_command_modules_do_not_import_each_other(name: str) -> None:
    commands = {dep for dep in GRAPH[name] if _is_command_module(dep)}
    assert not commands, f"hailing.cli.{name} imports command module(s) {sorted(commands)}: " \
        "move what they share into a hailing.cli._ module"


def test_the_checker_sees_lazy_imports() -> None:
    source = ("import hailing.cli.wallet\n"
              "def f():\n    from .calls import x\n    from hailing.cli import chain\n"
              "    from ._common import y\n    from ..identity import z\n")
    assert _imports_in("dht", source) == {"wallet", "calls", "chain", "_common"}
