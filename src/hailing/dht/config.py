"""Tunables of the DHT core, each with the BEP or measurement it comes from."""

from __future__ import annotations

from dataclasses import dataclass

#: KRPC ``v`` field of hailing nodes: two-letter client id + two-byte version (BEP20 style).
HAILING_VERSION = b"HL\x00\x01"


@dataclass(frozen=True, slots=True)
class DhtConfig:
    """Protocol parameters. The defaults are Mainline's where a BEP fixes them."""

    #: Bucket size (BEP5: K = 8).
    k: int = 8
    #: Parallel requests per lookup (Kademlia's alpha; libtorrent's search_branching is
    #: also 5). Measured in the simulator: with 30 % of nodes dead, alpha 5 keeps the p95
    #: of gets within 1.6x of a healthy network's, alpha 3 only within 2.4x.
    alpha: int = 5
    #: Replacement-cache entries kept per bucket.
    replacement_cache: int = 8
    #: A node not heard from in this long is "questionable" (BEP5: 15 minutes).
    questionable_after: float = 15 * 60.0
    #: Buckets untouched this long are refreshed with a lookup (BEP5: 15 minutes).
    bucket_refresh: float = 15 * 60.0
    #: Consecutive timeouts after which a node is dropped from the table.
    max_fail_count: int = 2
    #: Bounds of the adaptive "soft" timeout after which a lookup stops waiting on a request.
    min_soft_timeout: float = 0.15
    max_soft_timeout: float = 1.5
    #: A request that got no answer by this time is failed for good.
    query_timeout: float = 4.0
    #: Nodes a BEP44 put stores on: the closest that answer (a put's closest set). BEP44
    #: clients (libtorrent) store on k = 8; hailing stores on 2k. Measured in the
    #: simulator (docs/benchmarks.md, the sweep): with half the nodes failing at once, 8
    #: copies lose an item now and then (0.5^8 = 0.4 % of the items have every copy on a
    #: node that died, so a run of 100 items can lose two or three), 16 copies none.
    put_copies: int = 16
    #: Candidates a lookup keeps (closest first); bounds memory against poisoning.
    max_lookup_candidates: int = 96
    #: Disjoint paths of a get (S/Kademlia, issue 9): each path asks only the nodes it
    #: learned itself, so liars that name only each other capture one path, not the
    #: get. Measured in the simulator (docs/benchmarks.md, adversaries).
    lookup_paths: int = 3
    #: Candidates a lookup takes from one IPv4 /24 (IPv6 /64) (libtorrent's
    #: restrict_search_ips); local addresses are exempt with ``exempt_loopback``.
    lookup_max_per_net: int = 1
    #: Token secret rotation (BEP5: tokens accepted for up to ten minutes -> rotate at 5).
    token_rotation: float = 5 * 60.0
    #: Stored peers expire after this long without re-announce (libtorrent: 30 min).
    peer_ttl: float = 30 * 60.0
    #: Stored BEP44 items expire this long after their last put (BEP44: about 2 hours).
    item_ttl: float = 2 * 60 * 60.0
    #: Our own puts and announces are repeated this often (BEP44: at least every hour).
    republish_interval: float = 60 * 60.0
    #: Period of the housekeeping tick (expiry, rotation, refresh, republish).
    maintenance_interval: float = 10.0
    #: Storage bounds: BEP44 items held, info-hashes tracked, peers per info-hash.
    max_items: int = 10_000
    max_torrents: int = 10_000
    max_peers_per_torrent: int = 200
    # -- per-source accounting (dht/quota.py; docs/protocol.md "Storage", issue 9) --------
    #: A source is an IPv4 address or an IPv6 /64; a full store evicts the heaviest
    #: source's oldest entry, and a source over its own quota its own oldest entry.
    #: Peer entries held in all info-hashes together (memory: about 200 bytes each).
    max_peer_entries: int = 100_000
    #: Peer entries one source holds in all, and in one info-hash (several BitTorrent
    #: clients behind one NAT).
    max_peers_per_source: int = 10_000
    max_peers_per_source_torrent: int = 8
    #: BEP44 items one source holds (a tenth of max_items).
    max_items_per_source: int = 1_000
    #: Work budget per source for announce_peer, put and hailing_listen: a token bucket
    #: of source_burst requests refilled at source_rate a second; past it error 202
    #: (BEP5 methods) or 241 (hailing methods). hailing_post has its own, stricter one.
    source_rate: float = 10.0
    source_burst: float = 100.0
    #: Loopback senders are exempt from rate limits and each loopback socket is its own
    #: source (every process of a loopback testnet is 127.0.0.1). False: 127.0.0.1 is one
    #: source like any address, so tests can exercise the real limits. The routing
    #: table's and lookups' per-IP limits exempt all of BEP42's local blocks (loopback,
    #: private, link-local: LAN testnets share one /24) unless this is False.
    exempt_loopback: bool = True
    #: Datagrams per second one source (an IPv4 address, an IPv6 /64) may send to a
    #: node on UDP, and the burst it may send at once; the rest are dropped unread and
    #: counted (``udp_rate_limited``). Checked by the UDP driver before decoding
    #: (transport/_ingress.py, harden); 0 turns it off. Loopback sources follow
    #: ``exempt_loopback``.
    source_datagram_rate: float = 100.0
    source_datagram_burst: float = 400.0
    #: BEP42: refuse routing-table entries whose id does not match their public IP
    #: (local addresses are exempt, as BEP42 says); our own id is made compliant once
    #: the ``ip`` votes of our peers agree on a public address (issue 9, item 6).
    enforce_node_id: bool = True
    #: Per-IP limits of the routing table (issue 9, item 6; libtorrent's
    #: restrict_routing_ips): entries per IPv4 address / IPv6 /64 in the whole table,
    #: and per IPv4 /24 / IPv6 /64 in one bucket (replacement caches included).
    routing_max_per_ip: int = 1
    routing_max_per_net: int = 1
    #: A node that only queried us enters the table after it answered a ping of ours:
    #: at most ``verify_rate`` such pings a second (bursts of ``verify_burst``), and
    #: ``verify_pending`` awaited at once, so that queries (from spoofed sources, say)
    #: cannot make us send more than that.
    verify_senders: bool = True
    verify_rate: float = 20.0
    verify_burst: int = 40
    verify_pending: int = 256
    #: BEP43: read-only node: answers nothing, flags its queries with ``ro``.
    read_only: bool = False
    #: Lookup algorithm: "hailing" (no rounds, RTT-adapted soft timeouts) or "lockstep"
    #: (the ``kademlia`` package's rounds of alpha requests with a fixed timeout), the
    #: latter for side-by-side comparison in the simulator.
    lookup_strategy: str = "hailing"
    #: The fixed per-request timeout of the lock-step strategy (``kademlia``: 5 s).
    lockstep_timeout: float = 5.0
    #: The ``v`` field put in every message (None to omit it).
    version: bytes | None = HAILING_VERSION
    #: hailing's extensions (inbox methods, ``hailing_k``, the sub-overlay marker).
    #: False makes a plain Mainline node, as libtorrent is to hailing: its methods get
    #: 204 and its arguments are ignored (the simulator's foreign nodes).
    extensions: bool = True
    #: Inbox lookups run inside the hailing sub-overlay (dht/suboverlay.py): hailing
    #: nodes announce under HAILING_INFOHASH and keep a table of hailing nodes, so an
    #: inbox lives on hailing nodes where they are 1 % of the DHT. False: inbox lookups
    #: walk the whole DHT (as before the sub-overlay; for comparison).
    suboverlay: bool = True
