"""Settings of a loopback-only libtorrent DHT session: no routers, no LSD/UPnP/NAT-PMP,
and the per-IP limits off (every node is 127.0.0.1).

Plain Python (no pytest): the interop tests' fixtures (``conftest.py`` beside it), the
NAT lab's libtorrent nodes and the benchmarks (``benchmarks/bep44_fallback.py``) share it.
"""

from __future__ import annotations

from typing import Any

LOOPBACK = "127.0.0.1"


def lt_settings(**overrides: Any) -> dict[str, Any]:
    """Settings for a loopback-only libtorrent session whose DHT accepts loopback peers."""
    import libtorrent as lt  # here: importing this module needs no libtorrent

    cat = lt.alert.category_t
    settings: dict[str, Any] = {
        # Loopback only. An IP literal, not a device name: a listen socket on a device
        # like "lo" (or with the "l" suffix) is flagged local-network and gets no DHT.
        "listen_interfaces": f"{LOOPBACK}:0",
        "outgoing_interfaces": LOOPBACK,
        # No public routers, no local discovery, no port mapping.
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # Every node shares 127.0.0.1: allow many nodes per IP in the routing table and
        # in lookups.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        # BEP42: libtorrent's verify_id() accepts any id from local/loopback addresses
        # anyway; set explicitly so a change in that rule does not break the tests.
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        "dht_ignore_dark_internet": False,
        # libtorrent bans a source IP for 5 minutes after 10 * dht_block_ratelimit packets
        # within 10 s. All test nodes are 127.0.0.1, so the default (5 -> 50 packets) is
        # hit within seconds. Same for the 8000 B/s DHT upload limit.
        "dht_block_ratelimit": 1_000_000,
        "dht_upload_rate_limit": 100_000_000,
        "dht_privacy_lookups": False,
        "dht_read_only": False,
        "alert_queue_size": 100_000,
        "alert_mask": (
            cat.dht_notification
            | cat.dht_operation_notification
            | cat.dht_log_notification  # dht_pkt_alert + dht_log_alert
            | cat.error_notification
            | cat.status_notification
            | cat.stats_notification
        ),
    }
    settings.update(overrides)
    return settings

