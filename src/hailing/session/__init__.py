"""The session layer: how two identities get a WebRTC connection (see ``docs/session.md``).

Commands flow down, events flow up::

    Peer (hailing.peer, the facade)
      |-- Dialer ............ tries couplers in ladder order, each with its own time
      |-- ConnectionManager . aiortc connections, the offer and answer state machines
      |-- SignalRouter ...... opens, de-duplicates (on disk), origin-checks, dispatches
      |-- Callee ............ decides on each offer (the call policy first), answers or rings
      |-- EndpointRecords ... contacts' SIP / WireGuard connection info; sends ours
      |-- Supervisor ........ owns every background task; failures become events
      '-- couplers .......... DhtCoupler | ContractCoupler | WsCoupler | LinkCoupler
                              | NetworkCoupler | TextCoupler (one Protocol; the default
                              ladder: ladder.py)

This package never imports the services layer (contacts, call policy): the facade hands
it plain callables.
"""

from .callee import Callee
from .connections import ConnectionManager
from .coupler import Capabilities, ContractCoupler, Coupler, DhtCoupler, Inlet, WsCoupler
from .dialer import Attempt, Dialer, Rung
from .endpoints import EndpointRecords
from .events import CallEvent
from .link_coupler import LinkCoupler
from .network_coupler import NetworkCoupler
from .node_ids import NodeIds
from .router import SignalRouter, Source
from .supervisor import Supervisor
from .text_coupler import TextCoupler

__all__ = [
    "Attempt",
    "CallEvent",
    "Callee",
    "Capabilities",
    "ConnectionManager",
    "ContractCoupler",
    "Coupler",
    "DhtCoupler",
    "Dialer",
    "EndpointRecords",
    "Inlet",
    "LinkCoupler",
    "NetworkCoupler",
    "NodeIds",
    "Rung",
    "SignalRouter",
    "Source",
    "Supervisor",
    "TextCoupler",
    "WsCoupler",
]
