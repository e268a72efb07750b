"""The browser suite: real Chromium (the Debian package) driven by Playwright against
``hailing up`` daemons on a loopback testnet.

It runs only inside a network namespace whose one interface is ``lo`` (Chromium gathers
ICE candidates on every interface): ``tests/test_browser.py`` starts it that way
(``unshare --net``), so ``bash scripts/test.sh`` runs it. Collected anywhere else (the main
run, in the host's namespace), every test here is skipped with that reason.

Fixtures: ``browser`` (one Chromium for the session), ``net`` (one testnet for the session),
``trio`` (alice, bob and carol, ``hailing up`` each, friends of each other and of the
offline dave and bot; one set per module) and ``app(up)`` (a signed-in page of that daemon's web app in its own context).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import (
    Up,
    bring_lo_up,
    chromium,
    chromium_path,
    daemons,
    new_context,
    only_loopback,
    open_app,
    testnet,
)

bring_lo_up()  # in a fresh namespace (unshare --net) lo starts down; elsewhere: nothing

#: The trio's ``--ring-timeout``: how long a page's call to a callee that does not answer
#: (offline, refusing, declining) waits, instead of the default 30 s; the tests check
#: that these all end alike, not how long it takes, and an accepted call is answered in
#: a few seconds.
RING_TIMEOUT_S = 10

NOT_IN_NETNS = ("the browser tests run only in a network namespace with only lo "
                "(tests/test_browser.py starts them with unshare --net)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if only_loopback():
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=NOT_IN_NETNS)
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path, why = chromium_path()
    if path is None:
        pytest.fail(why)  # the outer test skipped or failed already when there is none
    with chromium() as b:
        yield b


@pytest.fixture(scope="session")
def net() -> Iterator[str]:
    """The bootstrap address of the suite's testnet."""
    with testnet(8) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="module")
def trio(net: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Up]]:
    """alice, bob and carol: ``hailing up`` each, all friends of each other and of dave
    (never online) and bot (a Python peer a test may start, data dir beside theirs)."""
    base = tmp_path_factory.mktemp("trio")
    with daemons(base, ("alice", "bob", "carol"), ["--bootstrap", net],
                 "--ring-timeout", str(RING_TIMEOUT_S), offline=("dave", "bot")) as ups:
        yield ups


@pytest.fixture
def app(browser: Any) -> Iterator[Callable[[Up], Any]]:
    """app(up): a new context signed in to ``up``'s web app; its page. Closed after the test."""
    contexts: list[Any] = []

    def open_(up: Up) -> Any:
        ctx = new_context(browser, up)
        contexts.append(ctx)
        return open_app(ctx, up)

    yield open_
    for ctx in contexts:
        ctx.close()
