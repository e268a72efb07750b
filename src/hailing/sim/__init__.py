"""A deterministic discrete-event simulator that drives thousands of real DHT cores.

``python -m hailing.sim --help`` runs it from the command line; see
:mod:`hailing.sim.scenario` for the workload and :mod:`hailing.sim.network` for the
latency/loss model.
"""

from .engine import SimNode, Simulator, host_address
from .network import NetworkModel
from .scenario import SimParams, percentile, run_lookup_benchmark

__all__ = [
    "NetworkModel",
    "SimNode",
    "SimParams",
    "Simulator",
    "host_address",
    "percentile",
    "run_lookup_benchmark",
]
