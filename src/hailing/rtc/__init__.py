"""WebRTC peers (aiortc): ICE settings; connection management comes on top of this.

Importing this package applies ``HAILING_ICE_HOSTS`` (see ``hailing.rtc.ice``); the
first ``rtc_configuration()`` makes aioice prefer direct paths to relayed ones and answer
the other side's checks at once (``tune_aioice``).
"""

from __future__ import annotations

from hailing.rtc.ice import (
    ENV_VAR,
    answer_checks_at_once,
    apply_environment,
    current_host_addresses,
    host_addresses,
    prefer_direct_paths,
    rtc_configuration,
    set_host_addresses,
    tune_aioice,
)

__all__ = [
    "ENV_VAR",
    "answer_checks_at_once",
    "apply_environment",
    "current_host_addresses",
    "host_addresses",
    "prefer_direct_paths",
    "rtc_configuration",
    "set_host_addresses",
    "tune_aioice",
]

apply_environment()
