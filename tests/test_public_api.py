"""The public surface: the one error tree in hailing.errors, and ``import hailing``."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import hailing
from hailing import errors

SRC = Path(hailing.__file__).parent


def _module_names() -> list[str]:
    """Every module of the package except ``__main__`` ones (importing those runs them)."""
    names = []
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _import_everything() -> list[types.ModuleType]:
    return [importlib.import_module(name) for name in _module_names()]


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    sub: type[BaseException]
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


# -- the error tree -------------------------------------------------------------------


def parse_tree(doc: str) -> dict[str, tuple[str | None, str]]:
    """``{class name: (parent name or None, the entry's text)}`` from a drawn tree::

        Root
         +-- Child          text
         |    +-- Grandchild  text
         |                    more text (a continuation line)
    """
    block = doc.split("::", 1)[1]
    tree: dict[str, tuple[str | None, str]] = {}
    stack: list[str] = []
    root_col = -1
    last = ""
    for line in block.splitlines():
        if not line.strip():
            if tree:
                break  # the end of the literal block
            continue
        if root_col < 0:
            root_col = len(line) - len(line.lstrip())
            name = line.split()[0]
            tree[name] = (None, line)
            stack, last = [name], name
            continue
        col = line.find("+-- ")
        if col < 0:  # a continuation of the entry above
            parent, text = tree[last]
            tree[last] = (parent, text + " " + line.strip(" |"))
            continue
        offset = col - root_col - 1
        assert offset % 5 == 0, f"misaligned entry: {line!r}"
        depth = offset // 5 + 1
        assert 1 <= depth <= len(stack), f"entry deeper than its parent: {line!r}"
        name = line[col + 4:].split()[0]
        assert name not in tree, f"{name} drawn twice"
        tree[name] = (stack[depth - 1], line)
        stack[depth:] = [name]
        last = name
    return tree


def test_the_tree_parser_itself() -> None:
    doc = """x::

        A
         +-- B      b
         |    +-- C  c
         |           more c
         +-- D

    after"""
    assert {k: v[0] for k, v in parse_tree(doc).items()} == {"A": None, "B": "A", "C": "B", "D": "A"}
    assert "more c" in parse_tree(doc)["C"][1]


def _error_classes() -> dict[str, type[errors.HailingError]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.HailingError)
    }


def test_the_drawn_tree_matches_the_classes() -> None:
    assert errors.__doc__ is not None
    tree = parse_tree(errors.__doc__)
    classes = _error_classes()
    assert sorted(tree) == sorted(classes)
    for name, cls in classes.items():
        parent, text = tree[name]
        if cls is errors.HailingError:
            assert parent is None
            continue
        assert parent == cls.__bases__[0].__name__, f"{name} drawn under {parent}"
        for extra in cls.__bases__[1:]:  # a tree shows one parent: name the others
            assert f"also a {extra.__name__}" in text, f"{name}: say 'also a {extra.__name__}'"


def test_errors_all_lists_every_class() -> None:
    classes = {
        name for name, value in vars(errors).items()
        if isinstance(value, type) and value.__module__ == errors.__name__
    }
    assert classes <= set(errors.__all__)
    assert len(set(errors.__all__)) == len(errors.__all__)


def test_every_error_class_is_defined_in_errors() -> None:
    modules = _import_everything()
    outside = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _subclasses(errors.HailingError)
        if cls.__module__.startswith("hailing") and cls.__module__ != errors.__name__
    )
    assert outside == [], "define these in hailing/errors.py (and draw them in its tree)"
    # Public exception classes that are not HailingErrors do not exist either.
    stray = sorted(
        f"{module.__name__}.{name}"
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseException)
        and value.__module__ == module.__name__
        and module.__name__ != errors.__name__
        and not name.startswith("_")
    )
    assert stray == [], (
        "exception classes belong in hailing/errors.py (subclass HailingError, draw it in "
        "the tree); a purely internal one gets a leading underscore"
    )


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("hailing.rtc.connection", "AuthenticationError"),
        ("hailing.chain.client",
         "ChainError ChainUnavailable BadRpcAnswer TransactionFailed MalformedLog"),
        ("hailing.chain", "ChainError ChainUnavailable BadRpcAnswer TransactionFailed MalformedLog"),
        ("hailing.dht.bep44", "PutRejected"),
        ("hailing.krpc._codec", "MalformedMessage"),
        ("hailing.signaling.sdp", "SdpError"),
        ("hailing.signaling.endpoint", "EndpointError"),
        ("hailing.signaling.ws_relay", "RelayError RecipientOffline"),
        ("hailing.signaling.envelope",
         "EnvelopeError MalformedEnvelope UnknownEnvelopeVersion TamperedEnvelope WrongRecipient"
         " UnopenableEnvelope ForgedEnvelope ExpiredEnvelope FutureEnvelope ReplayedEnvelope"),
    ],
)
def test_old_homes_still_export_the_errors(module: str, names: str) -> None:
    mod = importlib.import_module(module)
    for name in names.split():
        assert getattr(mod, name) is getattr(errors, name)


def test_errors_imports_nothing_from_hailing() -> None:
    source = (SRC / "errors.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+(\.|hailing)", source, re.M)


# -- import hailing ------------------------------------------------------------------

#: Third-party packages that ``import hailing`` must not load (seconds of import time).
HEAVY = ("aiortc", "av", "web3", "eth_account", "eth_keys", "eth_abi", "eth_tester", "vyper",
         "aiohttp", "nacl", "websockets", "cryptography")


def _loaded_after(statement: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter holds after ``statement``."""
    code = f"{statement}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(SRC.parent)}).stdout
    return set(out.split())


def test_all_is_sorted_and_unique() -> None:
    assert hailing.__all__ == sorted(hailing.__all__)
    assert len(set(hailing.__all__)) == len(hailing.__all__)


def test_every_public_name_resolves() -> None:
    for name in hailing.__all__:
        value = getattr(hailing, name)
        assert value is not None
        if isinstance(value, type):
            assert value.__name__ == name
    assert set(hailing.__all__) <= set(dir(hailing))


def test_the_lazy_table_is_the_public_api() -> None:
    assert set(hailing._WHERE) | {"__version__"} == set(hailing.__all__)
    plumbing = {"annotations", "import_module", "TYPE_CHECKING"}  # of __init__ itself
    public = {
        name for name, value in vars(hailing).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - plumbing <= set(hailing.__all__), "a public name __all__ does not list"


def test_every_error_class_is_exported() -> None:
    for name, value in vars(errors).items():
        if isinstance(value, type) and issubclass(value, errors.HailingError):
            assert name in hailing.__all__, (
                f"add {name} to hailing/__init__.py: _ERRORS, the TYPE_CHECKING import "
                "from .errors, and __all__"
            )
            assert getattr(hailing, name) is value


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        hailing.Nope  # noqa: B018


def test_type_checking_imports_match_the_lazy_table() -> None:
    """Type checkers read the ``if TYPE_CHECKING:`` imports; they must say what
    ``__getattr__`` does at run time."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    block = next(
        node for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )
    imported = {
        alias.name: "." * node.level + (node.module or "")
        for node in block.body if isinstance(node, ast.ImportFrom) and node.level
        for alias in node.names
    }
    assert imported == hailing._WHERE


def test_import_hailing_loads_nothing_heavy() -> None:
    loaded = _loaded_after("import hailing")
    assert {m for m in loaded if m.startswith("hailing")} == {"hailing"}
    assert loaded.isdisjoint(HEAVY)


def test_peer_module_does_not_load_web3() -> None:
    """The contract backend (web3, eth-tester, vyper) loads only when a Peer uses it."""
    module = hailing._WHERE["Peer"]
    loaded = _loaded_after(f"import hailing{module}")
    assert loaded.isdisjoint({"web3", "eth_account", "eth_abi", "eth_tester", "vyper"})
