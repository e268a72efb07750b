"""The NAT lab: network namespaces, home routers of each NAT kind, hosts behind them.

::

    from natlab import Lab, natlab_available        # tests (tests/ is on sys.path)
    from tests.natlab import Lab                      # benchmarks (the repo root on sys.path)

    with Lab() as lab:
        pub = lab.public_host("dht1")
        h = lab.host_behind("alice", "symmetric")
        h.popen([...]); h.run([...], timeout=10)
        with h.capture("udp") as cap: ...
        cap.packets()  # [(src, sport, dst, dport), ...]

Pytest fixtures ``natlab`` (a Lab per test) and ``natlab_module`` (per module) are in
:mod:`natlab.fixtures`; they skip where the lab cannot run and fail under CI=true.
See docs/nat.md, "The lab".

The package has one copy of its state whichever name imports it: imported as
``tests.natlab``, it puts ``tests/`` on ``sys.path`` and stands for ``natlab`` (two copies
would number their labs independently and keep two registries of open labs).
"""

from __future__ import annotations

import sys

__all__ = ["NAT_KINDS", "Host", "Lab", "LabUnavailable", "NatKind", "Packet", "UdpAgent",
           "natlab_available"]

if __name__ == "natlab":
    from .capture import Packet
    from .lab import Host, Lab, LabUnavailable
    from .probe import natlab_available
    from .rules import NAT_KINDS, NatKind
    from .udp import UdpAgent
else:  # imported as tests.natlab: become the one ``natlab``
    import os

    _tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _tests not in sys.path:
        sys.path.append(_tests)
    import natlab as _natlab

    for _name, _module in list(sys.modules.items()):
        if _name == "natlab" or _name.startswith("natlab."):
            sys.modules[__name__ + _name[len("natlab"):]] = _module
    sys.modules[__name__] = _natlab
