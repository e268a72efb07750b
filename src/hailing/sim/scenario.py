"""Workloads for the simulator and the metrics they report.

:func:`run_lookup_benchmark` is what ``python -m hailing.sim`` runs:

1. **join**: ``nodes`` hosts join one every ``join_interval`` seconds, each bootstrapping
   off a random host already in;
2. **put**: ``items`` owners (random hosts, kept out of churn: they stand for the users
   who keep their values alive) each store one item, immutable or mutable;
3. **churn**: ``once`` kills a fraction of the other hosts right after the puts;
   ``continuous`` gives every host a session length (exponential, mean chosen so that the
   fraction ``churn`` of the hosts is replaced every ``churn_period``) and replaces each
   host that leaves with a newcomer that bootstraps off a random live host;
4. **get**: ``lookups`` gets of random items from random live hosts, spread over the run.

A get succeeds when it returns the exact value put (and, for mutable items, its seq).
A get whose requesting host leaves before the answer (continuous churn; more likely the
longer lookups take) is counted as ``aborted`` and left out of the success rate: nobody
is there to use its result.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TextIO

from .. import bencode
from ..dht import DhtConfig, DhtProtocol, Event, ItemFound, NodesFound, StoreDone
from ..dht.bep44 import ImmutableItem, MutableItem
from .adversary import make_liars, sybil_attack
from .engine import HostLeft, SimNode, Simulator
from .network import NetworkModel


@dataclass
class SimParams:
    nodes: int = 1000
    lookups: int = 100
    churn: float = 0.0
    churn_mode: str = "once"
    loss: float = 0.0
    seed: int = 1
    strategy: str = "hailing"
    items: int = 0  # 0: lookups // 10, at least 10
    mutable_fraction: float = 0.0
    join_interval: float = 0.01
    get_interval: float = 0.02
    churn_period: float = 600.0
    duration: float = 3600.0  # continuous churn: how long the gets are spread over
    republish_interval: float = 600.0
    #: Adversaries (docs/simulator.md): this fraction of the nodes are colluding liars...
    liars: float = 0.0
    #: ... that lie in routing answers and drop values ("route") or only drop ("drop");
    liar_mode: str = "route"
    #: a Sybil attacker with this many ids near the first item's key (all gets ask for
    #: that key), on ``sybil_ips`` addresses;
    sybil_ids: int = 0
    sybil_ips: int = 10
    #: and which of issue 9's routing defences the nodes run: "all" (the default
    #: configuration), "none" (the core as it was before) or "no-bep42" (all but BEP42).
    defences: str = "all"

    def item_count(self) -> int:
        return self.items or max(10, self.lookups // 10)

    def validate(self) -> None:
        if self.nodes < 2:
            raise ValueError("--nodes must be at least 2")
        if self.lookups < 1:
            raise ValueError("--lookups must be at least 1")
        if not 0.0 <= self.churn < 1.0:
            raise ValueError("--churn must be in [0, 1)")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError("--loss must be in [0, 1)")
        if self.churn_mode not in ("once", "continuous"):
            raise ValueError("--churn-mode must be once or continuous")
        if self.strategy not in ("hailing", "lockstep"):
            raise ValueError("--strategy must be hailing or lockstep")
        if self.item_count() >= self.nodes:
            raise ValueError("more items than nodes")
        if not 0.0 <= self.liars < 0.5:
            raise ValueError("--liars must be in [0, 0.5)")
        if self.liar_mode not in ("route", "drop"):
            raise ValueError("--liar-mode must be route or drop")
        if self.sybil_ids < 0 or (self.sybil_ids and self.sybil_ips < 1):
            raise ValueError("--sybil needs at least one address")
        if self.defences not in DEFENCES:
            raise ValueError(f"--defences must be one of {', '.join(DEFENCES)}")
        if (self.liars or self.sybil_ids) and (self.churn or self.strategy != "hailing"):
            raise ValueError("adversaries run without churn, with the hailing strategy")


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for an empty list (valid JSON: null)."""
    if not values:
        return None
    s = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(s)))
    return s[rank - 1]


@dataclass
class _Get:
    ok: bool
    latency: float
    messages: int
    hops: int


@dataclass
class _Run:
    params: SimParams
    sim: Simulator
    progress: Callable[[str], None]
    joined: int = 0
    join_messages: list[int] = field(default_factory=list)
    items: list[tuple[SimNode, ImmutableItem | MutableItem]] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    gets: list[_Get] = field(default_factory=list)
    joins_during_churn: int = 0
    departures: int = 0
    #: Gets whose requesting host left (continuous churn) before the answer came.
    aborted: int = 0
    #: Why the failed gets failed (see _failure_kind).
    failure_kinds: Counter[str] = field(default_factory=Counter)
    #: Adversarial hosts: never owners, never requesters.
    adversaries: set[Any] = field(default_factory=set)
    sybils: list[SimNode] = field(default_factory=list)


def run_lookup_benchmark(params: SimParams, progress: TextIO | None = None) -> dict[str, Any]:
    """Run the workload of the module docstring and return the result dictionary."""
    params.validate()
    wall0 = time.perf_counter()
    run = _joined_run(params, progress)
    t_joined = run.sim.now
    if params.liars:
        _liar_phase(run)
    _put_phase(run)
    if params.churn_mode == "once" and params.churn > 0:
        _churn_once(run)
    elif params.churn_mode == "continuous" and params.churn > 0:
        _start_continuous_churn(run)
    _get_phase(run)
    wall = time.perf_counter() - wall0
    return _result(run, wall, t_joined)


def run_failure_fractions(
    params: SimParams, fractions: list[float], progress: TextIO | None = None
) -> list[dict[str, Any]]:
    """The ``once`` workload for several failing fractions on one network: join and put
    once, then each fraction runs on its own copy of the network as it stood after the
    puts. Each result (and its ``trace_sha256``) is the one ``run_lookup_benchmark``
    gives for that fraction alone; ``wall_s`` counts the shared join and puts in each."""
    params = replace(params, churn_mode="once", churn=0.0)
    params.validate()
    wall0 = time.perf_counter()
    run = _joined_run(params, progress)
    t_joined = run.sim.now
    _put_phase(run)
    shared = time.perf_counter() - wall0
    results = []
    for i, fraction in enumerate(fractions):
        t0 = time.perf_counter()
        r = run if i == len(fractions) - 1 else _copy_run(run)
        r.params = replace(r.params, churn=fraction)
        r.params.validate()
        if fraction > 0:
            _churn_once(r)
        _get_phase(r)
        results.append(_result(r, shared + time.perf_counter() - t0, t_joined))
    return results


def _joined_run(
    params: SimParams, progress: TextIO | None, setup: Callable[[Simulator], None] | None = None
) -> _Run:
    say: Callable[[str], None] = (
        (lambda msg: print(msg, file=progress, flush=True)) if progress else (lambda msg: None)
    )
    config = DhtConfig(
        lookup_strategy=params.strategy,
        republish_interval=params.republish_interval,
        # The lock-step strategy is the kademlia package's algorithm with its alpha (3).
        alpha=3 if params.strategy == "lockstep" else DhtConfig().alpha,
    )
    config = defended(config, params.defences)
    net_rng_seed = params.seed * 7919 + 17
    network = NetworkModel(random.Random(net_rng_seed), loss=params.loss, seed=params.seed)
    sim = Simulator(params.seed, network, config)
    if setup is not None:
        setup(sim)  # e.g. the data-channel overlay (overlay_run.py) attaches its links
    run = _Run(params, sim, say)
    _join_phase(run)
    return run


def _copy_run(run: _Run) -> _Run:
    """A deep copy of a run between phases (every core, table, store, queued packet and
    generator state); the running trace hash is copied by hand (it cannot be pickled)."""
    sim = run.sim
    trace, sim._trace = sim._trace, None
    try:
        new = copy.deepcopy(run)
    finally:
        sim._trace = trace
    new.sim._trace = trace.copy() if trace is not None else None
    return new


def _bootstrap_from(seed: SimNode) -> Callable[[DhtProtocol, float], int]:
    addr = seed.addr

    def start(core: DhtProtocol, now: float) -> int:
        return core.bootstrap([addr], now)

    return start


def _put_mutable(item: MutableItem, core: DhtProtocol, now: float) -> int:
    return core.put_mutable(item, now)


def _put_immutable(value: bytes, core: DhtProtocol, now: float) -> int:
    return core.put_immutable(value, now)[0]


def _ignore(ev: Event) -> None:
    return None


def _join_phase(run: _Run) -> None:
    sim, p = run.sim, run.params
    sim.add_node()
    target = p.nodes - 1
    step = max(1, target // 10)

    def joined(ev: Any, node: SimNode, attempt: int) -> None:
        if (not isinstance(ev, NodesFound) or len(node.proto.table) < 2) and attempt < 3:
            # Like a real client: no answer, try again a little later through another node.
            sim.call_later(5.0, retry, node, attempt + 1)
            return
        run.joined += 1
        if isinstance(ev, NodesFound):
            run.join_messages.append(ev.stats.messages)
        if run.joined % step == 0:
            run.progress(f"  joined {run.joined}/{target} (virtual {sim.now:.0f} s)")

    def retry(node: SimNode, attempt: int) -> None:
        if node.alive:
            seed = sim.random_live(exclude=node)
            sim.command(node, _bootstrap_from(seed), functools.partial(joined, node=node, attempt=attempt))

    def join_one() -> None:
        seed = sim.random_live()
        node = sim.add_node()
        sim.command(node, _bootstrap_from(seed), functools.partial(joined, node=node, attempt=1))

    for i in range(target):
        sim.call_at((i + 1) * p.join_interval, join_one)
    run.progress(f"join: {p.nodes} nodes, one every {p.join_interval * 1000:.0f} ms")
    sim.run(stop=lambda: run.joined >= target)
    sim.run(until=sim.now + 30.0)  # let the last joins' refreshes settle


def _put_phase(run: _Run) -> None:
    sim, p = run.sim, run.params
    n_items = p.item_count()
    n_mutable = round(n_items * p.mutable_fraction)
    owners: list[SimNode] = []
    while len(owners) < n_items:
        node = sim.random_live()
        if not node.protected and node.addr not in run.adversaries:
            node.protected = True
            owners.append(node)

    def stored(ev: Any) -> None:
        run.stored.append(ev.stored if isinstance(ev, StoreDone) else 0)

    puts: list[Callable[[DhtProtocol, float], int]] = []
    for i, owner in enumerate(owners):
        value = b"hailing sim item %d " % i + bytes(sim.rng.getrandbits(8) for _ in range(64))
        if i < n_mutable:
            seed = sim.rng.getrandbits(256).to_bytes(32, "big")
            mitem = MutableItem.create(seed, value, salt=b"sim", seq=1)
            puts.append(functools.partial(_put_mutable, mitem))
            item: ImmutableItem | MutableItem = mitem
        else:
            item = ImmutableItem(bencode.encode(value))
            puts.append(functools.partial(_put_immutable, value))
        run.items.append((owner, item))
    if p.sybil_ids:
        # The attacker knows the key in advance (as anyone knows a public inbox key) and
        # takes its place near it before the value is put.
        _sybil_phase(run)
    for (owner, _), put in zip(run.items, puts, strict=True):
        sim.command(owner, put, stored)
    run.progress(f"put: {n_items} items ({n_mutable} mutable) from {n_items} owners")
    sim.run(stop=lambda: len(run.stored) >= n_items)


DEFENCES = ("all", "none", "no-bep42")


def defended(config: DhtConfig, defences: str) -> DhtConfig:
    """``config`` with issue 9's routing defences: "all" as configured; "none": no BEP42
    enforcement, no per-IP limits, query senders straight into the table, one lookup
    path, no per-network limit in lookups; "no-bep42": all but BEP42."""
    if defences == "all":
        return config
    if defences == "no-bep42":
        return replace(config, enforce_node_id=False)
    unlimited = 1 << 30
    return replace(config, enforce_node_id=False, routing_max_per_ip=unlimited,
                   routing_max_per_net=unlimited, verify_senders=False, lookup_paths=1,
                   lookup_max_per_net=unlimited)


def _liar_phase(run: _Run) -> None:
    sim, p = run.sim, run.params
    liars = make_liars(sim, p.liars, p.liar_mode, list(sim.live))
    run.adversaries.update(n.addr for n in liars)
    run.progress(f"liars: {len(liars)} of {len(sim.live)} nodes ({p.liar_mode})")


def _sybil_phase(run: _Run) -> None:
    sim, p = run.sim, run.params
    honest = [n for n in sim.live if n.addr not in run.adversaries]

    def bootstrap(node: SimNode, seed: SimNode) -> None:
        sim.command(node, _bootstrap_from(seed), _ignore)

    target = run.items[0][1].target
    run.sybils = sybil_attack(sim, target, p.sybil_ids, p.sybil_ips, honest, bootstrap)
    run.adversaries.update(n.addr for n in run.sybils)
    run.progress(f"sybil: {p.sybil_ids} ids on {p.sybil_ips} addresses near {target.hex()[:8]}")
    sim.run(until=sim.now + 60.0)  # the joins and pings settle


def _sybil_reach(run: _Run) -> dict[str, float]:
    """How far the Sybil ids got into the honest routing tables."""
    sybils = {n.proto.node_id for n in run.sybils}
    honest = [n for n in run.sim.live if n.addr not in run.adversaries]
    counts = [sum(1 for e in n.proto.table if e.id in sybils) for n in honest]
    return {
        "tables_with_sybils": sum(1 for c in counts if c) / max(1, len(counts)),
        "sybil_entries_mean": sum(counts) / max(1, len(counts)),
        "sybil_entries_max": max(counts, default=0),
    }


def _churn_once(run: _Run) -> None:
    sim, p = run.sim, run.params
    victims = [n for n in sim.live if not n.protected]
    sim.rng.shuffle(victims)
    count = round(p.churn * len(sim.live))
    for node in victims[:count]:
        sim.kill(node)
    run.departures = count
    run.progress(f"churn: {count} of {p.nodes} nodes failed at once")


def _start_continuous_churn(run: _Run) -> None:
    sim, p = run.sim, run.params
    # Exponential sessions: the fraction replaced in a period T is 1 - exp(-T/mean).
    mean = -p.churn_period / math.log(1.0 - p.churn)

    def schedule_leave(node: SimNode) -> None:
        sim.call_later(sim.rng.expovariate(1.0 / mean), leave, node)

    def leave(node: SimNode) -> None:
        if not node.alive or sim.now > p.duration + run_start:
            return
        sim.kill(node)
        run.departures += 1
        seed = sim.random_live()
        newcomer = sim.add_node()
        run.joins_during_churn += 1
        sim.command(newcomer, _bootstrap_from(seed), _ignore)
        schedule_leave(newcomer)

    run_start = sim.now
    for node in list(sim.live):
        if not node.protected:
            schedule_leave(node)
    run.progress(
        f"churn: continuous, {p.churn:.0%} of the nodes replaced every {p.churn_period:.0f} s"
        f" (mean session {mean:.0f} s), for {p.duration:.0f} s"
    )


def _get_phase(run: _Run) -> None:
    sim, p = run.sim, run.params
    n = p.lookups
    interval = p.duration / n if p.churn_mode == "continuous" and p.churn > 0 else p.get_interval
    step = max(1, n // 10)

    def start_get() -> None:
        owner, item = run.items[0 if p.sybil_ids else sim.rng.randrange(len(run.items))]
        node = sim.random_live(exclude=owner)
        while node.addr in run.adversaries:
            node = sim.random_live(exclude=owner)
        t0 = sim.now

        def done(ev: Any) -> None:
            if isinstance(ev, HostLeft):
                run.aborted += 1
                return
            ok = False
            if isinstance(ev, ItemFound) and ev.item is not None:
                if isinstance(item, MutableItem):
                    ok = isinstance(ev.item, MutableItem) and ev.item.value_bencoded == item.value_bencoded
                else:
                    ok = ev.item.value_bencoded == item.value_bencoded
            if not ok:
                run.failure_kinds[_failure_kind(run, ev, item)] += 1
            stats = getattr(ev, "stats", None)
            run.gets.append(_Get(ok, sim.now - t0, stats.messages if stats else 0, stats.hops if stats else 0))
            if len(run.gets) % step == 0:
                okc = sum(g.ok for g in run.gets)
                run.progress(f"  gets {len(run.gets)}/{n}, {okc} found (virtual {sim.now:.0f} s)")

        if isinstance(item, MutableItem):
            sim.command(node, lambda core, now: core.get_mutable(item.pubkey, now, item.salt), done)
        else:
            sim.command(node, lambda core, now: core.get(item.target, now), done)

    base = sim.now
    for i in range(n):
        sim.call_at(base + (i + 1) * interval, start_get)
    run.progress(f"get: {n} gets, one every {interval * 1000:.0f} ms")
    sim.run(stop=lambda: len(run.gets) + run.aborted >= n)


def _failure_kind(run: _Run, ev: Any, item: ImmutableItem | MutableItem) -> str:
    """Why a get failed: ``error`` (no ItemFound), ``isolated`` (nobody answered the
    requester), ``value_lost`` (no live node stores the item any more) or ``missed`` (live
    nodes store it, the lookup did not reach them). Reads state only: the run is unchanged."""
    if not isinstance(ev, ItemFound):
        return "error"
    if ev.stats.responses == 0:
        return "isolated"
    now = run.sim.now
    if any(n.proto.items.get(item.target, now) is not None for n in run.sim.live):
        return "missed"
    return "value_lost"


def _result(run: _Run, wall: float, t_joined: float) -> dict[str, Any]:
    p, sim = run.params, run.sim
    gets = run.gets
    lat = [g.latency * 1000 for g in gets if g.ok]
    msgs = [float(g.messages) for g in gets]
    hops = [float(g.hops) for g in gets if g.ok]
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "nodes": p.nodes,
        "lookups": p.lookups,
        "success_rate": sum(g.ok for g in gets) / max(1, len(gets)),
        "failures": sum(not g.ok for g in gets),
        "aborted": run.aborted,
        "failure_kinds": dict(sorted(run.failure_kinds.items())),
        "latency_ms": {
            "p50": percentile(lat, 50), "p95": percentile(lat, 95), "p99": percentile(lat, 99),
        },
        "messages_per_lookup": {"mean": sum(msgs) / len(msgs), "p95": percentile(msgs, 95)},
        "hops": {"p50": percentile(hops, 50), "p95": percentile(hops, 95)},
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(rss_kb / 1024, 1),
        "seed": p.seed,
        "params": asdict(p),
        "items": p.item_count(),
        "stored_per_put": {
            "mean": sum(run.stored) / max(1, len(run.stored)),
            "min": min(run.stored, default=0),
        },
        "join_messages_per_node": sum(run.join_messages) / max(1, len(run.join_messages)),
        "departures": run.departures,
        "joins_during_churn": run.joins_during_churn,
        "virtual_s": {"joined": round(t_joined, 1), "end": round(sim.now, 1)},
        "packets": {"sent": sim.network.sent, "dropped": sim.network.dropped},
        "network_rtt_ms": {k: round(v, 1) for k, v in sim.network.stats(5000).items()},
        "adversaries": {
            "liars": round(p.liars * p.nodes), "liar_mode": p.liar_mode, "sybil_ids": p.sybil_ids,
            "sybil_ips": p.sybil_ips, "defences": p.defences,
            **(_sybil_reach(run) if run.sybils else {}),
        },
        "trace_sha256": sim.trace,
        "python": sys.version.split()[0],
    }
