"""WebRTC peers (aiortc): ICE settings; connection management comes on top of this.

Importing this package applies ``HAILING_ICE_HOSTS`` and makes ICE prefer direct paths
to relayed ones (see ``hailing.rtc.ice``).
"""

from __future__ import annotations

from hailing.rtc.ice import (
    ENV_VAR,
    apply_environment,
    current_host_addresses,
    host_addresses,
    prefer_direct_paths,
    rtc_configuration,
    set_host_addresses,
)

__all__ = [
    "ENV_VAR",
    "apply_environment",
    "current_host_addresses",
    "host_addresses",
    "rtc_configuration",
    "set_host_addresses",
]

apply_environment()
prefer_direct_paths()
