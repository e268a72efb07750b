"""The public surface: the one error tree in hailing.errors, and ``import hailing``."""

from __future__ import annotations

import importlib
import re
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
    assert stray == []


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
