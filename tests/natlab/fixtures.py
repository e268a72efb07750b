"""Pytest fixtures of the NAT lab, registered for the whole suite by tests/conftest.py.

``natlab``: a started :class:`~natlab.lab.Lab` for one test; ``natlab_module``: one Lab
shared by a test module (build the topology once, in a module fixture of your own).
Both SKIP with the reason where the lab cannot run (not root, no namespaces, no iptables),
and FAIL under ``CI=true``, where the lab is required (scripts/test.sh installs what it
needs with scripts/install-natlab.sh).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .lab import Lab
from .probe import natlab_available

__all__ = ["natlab", "natlab_module", "require_natlab"]


def require_natlab() -> None:
    """Skip the calling test where the lab cannot run; fail it under CI=true."""
    ok, why = natlab_available()
    if ok:
        return
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"the NAT lab is required under CI=true: {why}", pytrace=False)
    pytest.skip(f"NAT lab unavailable: {why}")


@pytest.fixture
def natlab() -> Iterator[Lab]:
    """A started Lab, torn down after the test (whatever its outcome)."""
    require_natlab()
    with Lab() as lab:
        yield lab


@pytest.fixture(scope="module")
def natlab_module() -> Iterator[Lab]:
    """A started Lab shared by the tests of one module."""
    require_natlab()
    with Lab() as lab:
        yield lab
