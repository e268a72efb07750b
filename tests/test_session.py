"""The session layer's parts one by one: supervisor, dialer, router, couplers' data.

No DHT, no aiortc here: envelopes are sealed by hand and handed to the router; the
dialer drives fake attempts on a fake clock.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from session_doubles import PipeCoupler, Switchboard

from hailing.errors import HailingError, LocalProtocolError, QueryTimeout
from hailing.identity import Identity
from hailing.rtc.connection import AuthenticationError
from hailing.session import (
    Capabilities,
    ContractCoupler,
    Coupler,
    DhtCoupler,
    Dialer,
    Rung,
    SignalRouter,
    Source,
    Supervisor,
    WsCoupler,
)
from hailing.session.dialer import parse_ladder
from hailing.signaling import envelope
from hailing.signaling.envelope import CLOCK_SKEW, KIND_ANSWER, KIND_OFFER
from hailing.signaling.store import SignalStore
from hailing.signaling.ws_relay import MAX_PAYLOAD as WS_MAX_PAYLOAD

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))
CAROL = Identity.from_seed(bytes(range(2, 34)))
SRC = Path(__file__).resolve().parent.parent / "src" / "hailing"


# -- supervisor ----------------------------------------------------------------------------


async def test_a_failing_task_is_counted_and_its_hook_runs() -> None:
    stats: Counter[str] = Counter()
    sup = Supervisor(stats)
    hooked: list[BaseException] = []

    async def boom() -> None:
        raise ValueError("remote garbage")

    task = sup.spawn(boom(), name="answer x", on_error=hooked.append)
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert [type(e) for e in hooked] == [ValueError]
    assert stats["task_errors"] == 1 and stats["task_errors_answer"] == 1
    assert len(sup) == 0
    await sup.aclose()


async def test_a_supervised_loop_is_restarted_and_aclose_cancels_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import hailing.session.supervisor as supervisor_mod

    monkeypatch.setattr(supervisor_mod, "RESTART_DELAYS", (0.0,))
    stats: Counter[str] = Counter()
    sup = Supervisor(stats)
    runs = 0
    forever = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"crash {runs}")
        await forever.wait()

    sup.loop(flaky, name="pump")
    for _ in range(50):
        await asyncio.sleep(0.01)
        if runs == 3:
            break
    assert runs == 3 and stats["task_errors"] == 2 and stats["task_restarts"] == 2
    await sup.aclose()
    assert len(sup) == 0
    with pytest.raises(RuntimeError):
        sup.spawn(asyncio.sleep(0), name="late")
    sup.reopen()
    await sup.spawn(asyncio.sleep(0), name="again")


async def test_aclose_ends_a_task_that_swallowed_its_cancellation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A task may swallow one cancellation (Python 3.11's asyncio.wait_for does when what
    it awaits ends in the same loop iteration): aclose cancels it again, and ends."""
    import hailing.session.supervisor as supervisor_mod

    monkeypatch.setattr(supervisor_mod, "RECANCEL_AFTER", 0.05, raising=False)
    stats: Counter[str] = Counter()
    sup = Supervisor(stats)
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # and carries on, as if nothing happened
        await asyncio.Event().wait()

    sup.spawn(stubborn(), name="watcher")
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await sup.aclose()
    assert swallowed.is_set() and len(sup) == 0 and stats["cancel_repeated"] == 1


def test_no_asyncio_wait_for_in_the_source() -> None:
    """Python 3.11's asyncio.wait_for swallows a cancellation that arrives as what it
    awaits ends: a task cancelled then (by a Peer.stop) runs on. asyncio.timeout does not."""
    offenders = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in sorted(SRC.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "wait_for"
        and isinstance(node.value, ast.Name) and node.value.id == "asyncio"
    ]
    assert offenders == []


# -- couplers: capabilities are data -------------------------------------------------------


def test_capabilities_are_frozen_data() -> None:
    caps = {c.name: c.capabilities for c in (DhtCoupler, WsCoupler)}
    assert caps["dht"] == Capabilities(needs_wallet=False, typical_latency_s=0.05, private=True,
                                       reach="anyone", max_blob=1000)
    assert caps["ws"].private is False and caps["ws"].max_blob == WS_MAX_PAYLOAD
    assert dataclasses.asdict(caps["dht"]) == {
        "needs_wallet": False, "typical_latency_s": 0.05, "private": True, "reach": "anyone",
        "max_blob": 1000}
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps["dht"].private = False  # type: ignore[misc]
    # The contract coupler's depend on its poll interval: data made from configuration.
    fake_rdv: Any = type("R", (), {"poll_interval": 2.0})()
    contract = ContractCoupler(fake_rdv)
    assert contract.capabilities.needs_wallet and contract.capabilities.reach == "friends"
    assert contract.capabilities.typical_latency_s == 4.0
    assert contract.capabilities.max_blob == 512


def test_every_adapter_implements_the_protocol() -> None:
    def methods(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    wanted = {"name", "capabilities", "start", "expect_from", "send", "refresh", "admit",
              "aclose"}
    for cls in (DhtCoupler, WsCoupler, ContractCoupler, PipeCoupler):
        assert wanted <= methods(cls) | {"name", "capabilities"}, cls
    assert wanted <= set(Coupler.__dict__) | {"name", "capabilities"}


def test_no_isinstance_on_couplers_or_backends() -> None:
    """Capabilities are data: nothing in the session layer or the facade asks what class
    a coupler or a signaling backend is."""
    names = {"DhtCoupler", "WsCoupler", "ContractCoupler", "DhtRendezvous", "WsRendezvous",
             "ContractRendezvous", "Coupler"}
    files = [*sorted((SRC / "session").glob("*.py")), SRC / "peer.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2):
                used = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                assert not used & names, f"{path.name}:{node.lineno} isinstance on a coupler"


# -- dialer --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def couplers(*names: str) -> list[Coupler]:
    board = Switchboard()
    return [board.coupler(b"o" * 32, n) for n in names]


async def test_dialer_falls_back_to_the_next_coupler_and_reports_it() -> None:
    clock = FakeClock()
    dialer = Dialer(couplers("dht", "contract", "ws"),
                    parse_ladder([("dht", 2.0), "contract", "ws"]), clock=clock)
    waits: list[tuple[str, float]] = []

    async def attempt(c: Coupler, wait: float) -> str:
        waits.append((c.name, wait))
        clock.now += wait if c.name == "dht" else 0.5
        if c.name == "dht":
            raise QueryTimeout("nobody answered within 2 s")
        if c.name == "contract":
            raise LocalProtocolError("no rotation secret for hl...")
        return f"carried by {c.name}"

    result, used = await dialer.dial(10.0, attempt)
    assert (result, used.name) == ("carried by ws", "ws")
    # dht its own 2 s; then the 8 s left shared by the two rungs left; ws what is left.
    assert waits == [("dht", 2.0), ("contract", 4.0), ("ws", 7.5)]
    assert [(a.coupler, a.error, a.timed_out) for a in dialer.last] == [
        ("dht", "nobody answered within 2 s", True),
        ("contract", "no rotation secret for hl...", False),
        ("ws", None, False)]


async def test_dialer_raises_one_clear_timeout_listing_what_was_tried() -> None:
    clock = FakeClock()
    dialer = Dialer(couplers("dht", "ws"), clock=clock)

    async def attempt(c: Coupler, wait: float) -> str:
        clock.now += wait
        if c.name == "ws":
            raise HailingError("recipient hlX is not connected to the relay\nsecond line")
        raise TimeoutError

    with pytest.raises(QueryTimeout) as info:
        await dialer.dial(6.0, attempt)
    message = str(info.value)
    assert message == ("nobody answered within 6 s (offline, busy, or not accepting calls); "
                       "tried dht: no answer in 3 s; ws: recipient hlX is not connected to "
                       "the relay")


async def test_dialer_with_one_rung_keeps_its_error_and_stops_on_a_failed_proof() -> None:
    dialer = Dialer(couplers("contract"))

    async def unreachable(c: Coupler, wait: float) -> str:
        raise HailingError("cannot reach the chain endpoint")

    with pytest.raises(HailingError, match=r"^cannot reach the chain endpoint$"):
        await dialer.dial(5.0, unreachable)

    async def silent(c: Coupler, wait: float) -> str:
        raise TimeoutError

    with pytest.raises(QueryTimeout, match=r"^nobody answered within 5 s \(offline"):
        await dialer.dial(5.0, silent)

    tried: list[str] = []
    two = Dialer(couplers("dht", "ws"))

    async def impostor(c: Coupler, wait: float) -> str:
        tried.append(c.name)
        raise AuthenticationError("the peer could not prove its identity")

    with pytest.raises(AuthenticationError):
        await two.dial(5.0, impostor)
    assert tried == ["dht"]  # never call the impostor again elsewhere


async def test_dialer_only_and_ladder_checks() -> None:
    dialer = Dialer(couplers("dht", "ws"))

    async def attempt(c: Coupler, wait: float) -> str:
        return c.name

    assert (await dialer.dial(1.0, attempt, only="ws"))[0] == "ws"
    with pytest.raises(LocalProtocolError, match="no coupler named 'sms'"):
        await dialer.dial(1.0, attempt, only="sms")
    with pytest.raises(LocalProtocolError, match="no coupler named 'sms'"):
        Dialer(couplers("dht"), [Rung("sms")])
    for bad in ([], ["dht", "dht"], [("dht", 0.0)], [42]):
        with pytest.raises(LocalProtocolError):
            parse_ladder(bad)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        await dialer.dial(0.0, attempt)


# -- router --------------------------------------------------------------------------------


class Router:
    """A router for BOB over a store in ``tmp``, recording what its handlers got."""

    def __init__(self, tmp: Path, now: float, *, once_ever_answers: bool = True) -> None:
        self.clock = FakeClock()
        self.clock.now = now
        self.stats: Counter[str] = Counter()
        self.supervisor = Supervisor(self.stats)
        self.store = SignalStore(tmp)
        self.router = SignalRouter(BOB, self.store, supervisor=self.supervisor,
                                   stats=self.stats, clock=self.clock)
        self.got: list[tuple[int, bytes, str]] = []
        self.router.on(KIND_OFFER, self.record, name="offer", strict_expiry=True)
        self.router.on(KIND_ANSWER, self.record, name="answer", once_ever=once_ever_answers)

    def record(self, opened: envelope.Opened, source: Source) -> None:
        self.got.append((opened.kind, opened.sender, source.name))

    async def close(self) -> None:
        await self.supervisor.aclose()
        self.store.close()


@pytest.fixture
async def routers(tmp_path: Path) -> AsyncIterator[list[Router]]:
    made: list[Router] = []
    yield made
    for r in made:
        await r.close()


async def test_router_dedup_survives_a_restart(tmp_path: Path, routers: list[Router]) -> None:
    blob = envelope.seal(ALICE, BOB.public_key, KIND_ANSWER, b"answer", now=1000.0, ttl=30)
    first = Router(tmp_path, 1010.0)
    routers.append(first)
    await first.router.handle(blob, Source())
    await first.router.handle(blob, Source())  # the same bytes again: a duplicate
    assert first.got == [(KIND_ANSWER, ALICE.public_key, "channel")]
    assert first.stats["duplicates"] == 1
    await first.close()
    routers.remove(first)

    # A restart (new replay cache, same data directory) past the envelope's expiry but
    # within the clock-skew allowance: the envelope still opens, the record stops it.
    again = Router(tmp_path, 1000.0 + 30 + CLOCK_SKEW - 1)
    routers.append(again)
    await again.router.handle(blob, Source())
    assert again.got == [] and again.stats["already_handled"] == 1


async def test_two_processes_of_one_identity_both_hear_an_answer_but_ring_once(
        tmp_path: Path, routers: list[Router]) -> None:
    """A daemon and a one-shot ``send --no-daemon`` on the same data directory: the
    answer to the one-shot's offer reaches both (both listen on the key); the daemon,
    which made no offer, must not record it as handled, or the caller drops it as
    ``already_handled`` and the call times out. An offer still rings only once."""
    daemon = Router(tmp_path, 1010.0, once_ever_answers=False)
    one_shot = Router(tmp_path, 1010.0, once_ever_answers=False)
    routers += [daemon, one_shot]
    answer = envelope.seal(ALICE, BOB.public_key, KIND_ANSWER, b"answer", now=1000.0, ttl=30)
    offer = envelope.seal(ALICE, BOB.public_key, KIND_OFFER, b"offer", now=1000.0, ttl=30)
    for blob in (answer, offer):
        await daemon.router.handle(blob, Source())
        await one_shot.router.handle(blob, Source())
    assert daemon.got == [(KIND_ANSWER, ALICE.public_key, "channel"),
                          (KIND_OFFER, ALICE.public_key, "channel")]
    assert one_shot.got == [(KIND_ANSWER, ALICE.public_key, "channel")]
    assert one_shot.stats["already_handled"] == 1


def test_handled_records_are_kept_until_expiry_plus_clock_skew(tmp_path: Path) -> None:
    """Issue 8 item 2: the record of a handled envelope was dropped at its expiry,
    although the envelope opens up to CLOCK_SKEW later: a restart then handled it again."""
    with SignalStore(tmp_path) as store:
        assert store.record_handling(b"n" * 32, expires=1000.0, now=900.0) is None
        # Any later handling prunes old records; this one is CLOCK_SKEW - 1 s past expiry.
        assert store.record_handling(b"m" * 32, expires=2000.0,
                                     now=1000.0 + CLOCK_SKEW - 1) is None
        assert store.record_handling(b"n" * 32, expires=1000.0,
                                     now=1000.0 + CLOCK_SKEW - 1) == "already_handled"
        # Past expiry + skew the envelope no longer opens; its record may go.
        assert store.record_handling(b"o" * 32, expires=3000.0,
                                     now=1000.0 + CLOCK_SKEW + 1) is None
        rows = store._query("SELECT nonce FROM replay_seen ORDER BY nonce")
        assert [r[0] for r in rows] == [b"m" * 32, b"o" * 32]


async def test_an_offer_past_its_own_deadline_does_not_ring(
        tmp_path: Path, routers: list[Router]) -> None:
    """The caller's wait is the offer's ttl: once it passed, the caller has given up.
    The envelope still opens within the clock skew, but an offer is not acted on."""
    r = Router(tmp_path, 1000.0 + 30 + 5)
    routers.append(r)
    stale = envelope.seal(ALICE, BOB.public_key, KIND_OFFER, b"offer", now=1000.0, ttl=30)
    fresh = envelope.seal(ALICE, BOB.public_key, KIND_OFFER, b"offer", now=1020.0, ttl=30)
    late_answer = envelope.seal(ALICE, BOB.public_key, KIND_ANSWER, b"a", now=1000.0, ttl=30)
    for blob in (stale, fresh, late_answer):
        await r.router.handle(blob, Source())
    assert r.got == [(KIND_OFFER, ALICE.public_key, "channel"),
                     (KIND_ANSWER, ALICE.public_key, "channel")]  # answers keep the skew
    assert r.stats["stale_offers"] == 1


async def test_router_origin_check_and_coupler_admission(
        tmp_path: Path, routers: list[Router]) -> None:
    r = Router(tmp_path, 1000.0)
    routers.append(r)
    from_alice = envelope.seal(ALICE, BOB.public_key, KIND_ANSWER, b"x", now=1000.0)
    carol_channel: Any = type("Conn", (), {"peer": CAROL.public_key})()
    alice_channel: Any = type("Conn", (), {"peer": ALICE.public_key})()
    # Alice's envelope arriving over Carol's channel: someone else's signal, dropped.
    await r.router.handle(from_alice, Source(channel=carol_channel))
    assert r.got == [] and r.stats["misrouted_signals"] == 1
    # A coupler that refuses (the contract's wallet check) has the last word on its own.
    pipe = Switchboard().coupler(BOB.public_key, "contract")
    pipe.refuse = "wallet"
    second = envelope.seal(ALICE, BOB.public_key, KIND_ANSWER, b"y", now=1000.0)
    await r.router.handle(second, Source(coupler=pipe))
    assert r.got == [] and r.stats["refused_wallet"] == 1
    third = envelope.seal(ALICE, BOB.public_key, KIND_ANSWER, b"z", now=1000.0)
    await r.router.handle(third, Source(channel=alice_channel))
    assert r.got == [(KIND_ANSWER, ALICE.public_key, "channel")]


async def test_router_drops_garbage_and_survives_a_broken_handler(
        tmp_path: Path, routers: list[Router]) -> None:
    r = Router(tmp_path, 1000.0)
    routers.append(r)

    def broken(opened: envelope.Opened, source: Source) -> None:
        raise KeyError("a bug")

    r.router.on(77, broken, name="x")
    for blob in (b"", b"\x01" + bytes(200), envelope.seal(CAROL, ALICE.public_key, 1, b"",
                                                          now=1000.0)):
        await r.router.handle(blob, Source())
    assert r.stats["bad_envelopes"] == 3
    await r.router.handle(envelope.seal(ALICE, BOB.public_key, 99, b"", now=1000.0), Source())
    assert r.stats["unknown_kind"] == 1
    await r.router.handle(envelope.seal(ALICE, BOB.public_key, 77, b"", now=1000.0), Source())
    assert r.stats["receive_errors"] == 1
    # Through an inlet, as a coupler delivers: handled by the supervised consumer.
    pipe = Switchboard().coupler(BOB.public_key)
    inlet = r.router.attach(pipe)
    inlet.put_nowait(envelope.seal(ALICE, BOB.public_key, KIND_ANSWER, b"q", now=1000.0))
    await asyncio.wait_for(inlet.queue.join(), 5)
    assert r.got == [(KIND_ANSWER, ALICE.public_key, "pipe")]
