"""Tests for hailing.signaling.envelope: round trips, the byte layout, every refusal,
the replay cache, sizes, and the transcript proof over the data channel."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import struct
from collections.abc import Callable

import nacl.encoding
import nacl.hash
import nacl.public
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailing.errors import LocalProtocolError, RemoteProtocolError
from hailing.identity import Identity, x25519_public_key
from hailing.signaling import envelope as env
from hailing.signaling.envelope import (
    CLOCK_SKEW,
    KIND_OFFER,
    OVERHEAD,
    EnvelopeError,
    ExpiredEnvelope,
    ForgedEnvelope,
    FutureEnvelope,
    MalformedEnvelope,
    ReplayCache,
    ReplayedEnvelope,
    TamperedEnvelope,
    UnknownEnvelopeVersion,
    UnopenableEnvelope,
    WrongRecipient,
    open_envelope,
    seal,
    transcript_proof,
    verify_transcript,
)

NOW = 1_700_000_000.0
ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(32, 64)))
CAROL = Identity.from_seed(bytes(range(64, 96)))
FP_A = hashlib.sha256(b"alice's DTLS certificate").digest()
FP_B = hashlib.sha256(b"bob's DTLS certificate").digest()


def _counter_rng(start: int = 0) -> Callable[[int], bytes]:  # deterministic "rng" for reproducible blobs
    counter = itertools.count(start)

    def rng(n: int) -> bytes:
        return hashlib.sha512(next(counter).to_bytes(8, "big")).digest()[:n]

    return rng


def _open(blob: bytes, recipient: Identity = BOB, now: float = NOW,
          replay: ReplayCache | None = None) -> env.Opened:
    return open_envelope(recipient, blob, now=now,
                         replay=ReplayCache() if replay is None else replay)


# --- an independent builder from the documented layout (docs/envelope.md) -------------


def _h(tag: bytes, *parts: bytes) -> bytes:
    return nacl.hash.blake2b(b"".join(parts), digest_size=24, person=tag,
                             encoder=nacl.encoding.RawEncoder)


def build(claimed_sender: bytes, sender_x: nacl.public.PrivateKey, recipient: Identity,
          inner_plain: bytes, eph_seed: bytes = b"\x07" * 32, version: int = 1) -> bytes:
    """An envelope made by hand from docs/envelope.md, with any sender claim and inner
    plaintext, so tests can forge, mis-encode and cross-check the implementation."""
    v = bytes([version])
    eph = nacl.public.PrivateKey(eph_seed)
    e_pub = bytes(eph.public_key)
    r_x = nacl.public.PublicKey(x25519_public_key(recipient.public_key))
    inner = nacl.public.Box(sender_x, r_x).encrypt(
        inner_plain, _h(b"hailing-env-in", v, e_pub, claimed_sender, recipient.public_key)
    ).ciphertext
    outer = nacl.public.Box(eph, r_x).encrypt(
        claimed_sender + inner, _h(b"hailing-env-out", v, e_pub, bytes(r_x))
    ).ciphertext
    return v + e_pub + outer


def fields(kind: int = 1, ts: int = int(NOW), ttl: int = 120, fp: bytes = b"",
           body: bytes = b"hi", fp_len: int | None = None) -> bytes:
    return struct.pack(">BIHB", kind, ts, ttl, len(fp) if fp_len is None else fp_len) + fp + body


# --- round trips and the layout --------------------------------------------------------


@pytest.mark.parametrize("fingerprint", [None, FP_A, b"\x01", bytes(255)])
@pytest.mark.parametrize("body", [b"", b"x", bytes(range(256)) * 4])
def test_round_trip(fingerprint: bytes | None, body: bytes) -> None:
    blob = seal(ALICE, BOB.public_key, KIND_OFFER, body, now=NOW, ttl=30, fingerprint=fingerprint)
    opened = _open(blob, now=NOW + 10)
    assert opened.sender == ALICE.public_key
    assert opened.kind == KIND_OFFER
    assert opened.body == body
    assert opened.fingerprint == fingerprint
    assert opened.timestamp == int(NOW) and opened.expires == int(NOW) + 30
    assert opened.nonce == blob[1:33]
    assert len(blob) == OVERHEAD + len(body) + (len(fingerprint) if fingerprint else 0)


@settings(max_examples=150, deadline=None)
@given(kind=st.integers(0, 255), body=st.binary(max_size=600),
       fp=st.none() | st.binary(min_size=1, max_size=255),
       now=st.floats(0, 2**32 - 1), ttl=st.floats(0.001, 65535))
def test_round_trip_property(kind: int, body: bytes, fp: bytes | None, now: float,
                             ttl: float) -> None:
    blob = seal(ALICE, BOB.public_key, kind, body, now=now, ttl=ttl, fingerprint=fp)
    opened = _open(blob, now=now)
    assert (opened.sender, opened.kind, opened.body, opened.fingerprint) == (
        ALICE.public_key, kind, body, fp)
    assert opened.expires - opened.timestamp >= ttl


def test_independent_builder_matches_the_implementation() -> None:
    plain = fields(kind=9, fp=FP_A, body=b"payload")
    blob = build(ALICE.public_key, ALICE.x25519_private_key, BOB, plain)
    opened = _open(blob)
    assert (opened.kind, opened.fingerprint, opened.body) == (9, FP_A, b"payload")
    # and the implementation, given the same ephemeral key, writes the same bytes
    own = seal(ALICE, BOB.public_key, 9, b"payload", now=NOW, fingerprint=FP_A,
               rng=lambda n: b"\x07" * n)
    assert own == blob


def test_rng_makes_the_ephemeral_key_and_nonce() -> None:
    a = seal(ALICE, BOB.public_key, 1, b"x", now=NOW, rng=_counter_rng())
    b = seal(ALICE, BOB.public_key, 1, b"x", now=NOW, rng=_counter_rng())
    c = seal(ALICE, BOB.public_key, 1, b"x", now=NOW)
    d = seal(ALICE, BOB.public_key, 1, b"x", now=NOW)
    assert a == b
    assert len({a, c, d}) == 3 and len({a[1:33], c[1:33], d[1:33]}) == 3


def test_sizes_reported() -> None:
    body = bytes(180)  # a compact SDP offer with 4 candidates is ~150-200 bytes
    plain = seal(ALICE, BOB.public_key, KIND_OFFER, body, now=NOW)
    with_fp = seal(ALICE, BOB.public_key, KIND_OFFER, body, now=NOW, fingerprint=FP_A)
    print(f"\nenvelope overhead {OVERHEAD} B; sealed 180-byte body: {len(plain)} B, "
          f"with a 32-byte DTLS fingerprint field: {len(with_fp)} B")
    assert OVERHEAD == 105
    assert len(plain) == 285 <= 300
    assert len(with_fp) == 317
    assert len(seal(ALICE, BOB.public_key, 1, bytes(895), now=NOW)) == 1000  # BEP44 max v


def test_observers_do_not_see_the_sender() -> None:
    blobs = [seal(ALICE, BOB.public_key, 1, b"same body", now=NOW) for _ in range(5)]
    for blob in blobs:
        for secretish in (ALICE.public_key, ALICE.x25519_public_key, BOB.public_key,
                          BOB.x25519_public_key, b"same body"):
            for i in range(len(secretish) - 7):
                assert secretish[i:i + 8] not in blob
    # nothing but the version byte is shared between two envelopes of the same content
    a, b = blobs[0], blobs[1]
    assert a[0] == b[0] and sum(x == y for x, y in zip(a[1:], b[1:], strict=True)) < 10


# --- refusals --------------------------------------------------------------------------


def test_forged_by_another_key_claiming_alice() -> None:
    blob = build(ALICE.public_key, CAROL.x25519_private_key, BOB, fields())
    replay = ReplayCache()
    with pytest.raises(ForgedEnvelope):
        _open(blob, replay=replay)
    assert replay.stats["forged"] == 1 and replay.stats["opened"] == 0
    # the same bytes under Carol's own name are fine: the MAC, not the claim, decides
    assert _open(build(CAROL.public_key, CAROL.x25519_private_key, BOB, fields())).sender \
        == CAROL.public_key


@pytest.mark.parametrize("claimed", [bytes(32), b"\xff" * 32, bytes([1]) + bytes(31)])
def test_forged_invalid_sender_point(claimed: bytes) -> None:
    with pytest.raises(ForgedEnvelope):
        _open(build(claimed, CAROL.x25519_private_key, BOB, fields()))


def _reseal(blob: bytes, opener: Identity, to: Identity, relabel: bytes | None = None,
            e_seed: bytes = b"\x09" * 32) -> bytes:
    """What a recipient can do: open the outer box and seal its content to anyone,
    optionally naming another sender."""
    eph = blob[1:33]
    plain = nacl.public.Box(opener.x25519_private_key, nacl.public.PublicKey(eph)).decrypt(
        blob[33:], _h(b"hailing-env-out", b"\x01", eph, opener.x25519_public_key))
    if relabel is not None:
        plain = relabel + plain[32:]
    e = nacl.public.PrivateKey(e_seed)
    e_pub = bytes(e.public_key)
    to_x = nacl.public.PublicKey(to.x25519_public_key)
    return b"\x01" + e_pub + nacl.public.Box(e, to_x).encrypt(
        plain, _h(b"hailing-env-out", b"\x01", e_pub, bytes(to_x))).ciphertext


def test_resealing_unchanged_needs_the_original_ephemeral_key() -> None:
    blob = seal(ALICE, BOB.public_key, 1, b"x", now=NOW)
    with pytest.raises(ForgedEnvelope):  # new outer key: the inner nonce no longer fits
        _open(_reseal(blob, BOB, BOB))


def test_forged_sign_bit_twin_of_alice() -> None:
    # -A maps to the same X25519 key as A; the inner nonce binds the exact ed25519 bytes,
    # so a recipient cannot relabel Alice's envelope as coming from -A
    twin = ALICE.public_key[:31] + bytes([ALICE.public_key[31] ^ 0x80])
    assert x25519_public_key(twin) == ALICE.x25519_public_key
    blob = seal(ALICE, BOB.public_key, 1, b"x", now=NOW, rng=lambda n: b"\x09" * n)
    assert _open(_reseal(blob, BOB, BOB)).sender == ALICE.public_key  # same e: control
    with pytest.raises(ForgedEnvelope):
        _open(_reseal(blob, BOB, BOB, relabel=twin))


def test_contact_cannot_forward_an_envelope_as_alice() -> None:
    """Bob opens Alice's envelope and re-seals its inside to Carol: Carol refuses it."""
    blob = seal(ALICE, BOB.public_key, 1, b"for bob only", now=NOW, rng=lambda n: b"\x09" * n)
    with pytest.raises(ForgedEnvelope):
        _open(_reseal(blob, BOB, CAROL), recipient=CAROL)


def test_every_bit_flip_is_refused() -> None:
    blob = seal(ALICE, BOB.public_key, KIND_OFFER, bytes(range(180)), now=NOW, fingerprint=FP_A)
    replay = ReplayCache()
    for pos in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[pos] ^= 1 << bit
            try:
                _open(bytes(bad), replay=replay)
            except EnvelopeError as exc:
                expected = UnknownEnvelopeVersion if pos == 0 else TamperedEnvelope
                assert isinstance(exc, expected), (pos, bit, exc)
            else:
                raise AssertionError(f"bit {bit} of byte {pos} flipped and still opened")
    assert replay.stats["opened"] == 0
    assert replay.stats["unknown_version"] == 8
    assert replay.stats["unopenable"] == 8 * (len(blob) - 1)
    assert _open(blob).body == bytes(range(180))  # the original is still good


def test_wrong_recipient() -> None:
    blob = seal(ALICE, BOB.public_key, 1, b"x", now=NOW)
    with pytest.raises(WrongRecipient) as info:
        _open(blob, recipient=CAROL)
    assert isinstance(info.value, UnopenableEnvelope)
    assert isinstance(info.value, RemoteProtocolError)
    assert "sealed to another key" in str(info.value)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version(version: int) -> None:
    blob = seal(ALICE, BOB.public_key, 1, b"x", now=NOW)
    with pytest.raises(UnknownEnvelopeVersion, match=f"version {version}"):
        _open(bytes([version]) + blob[1:])
    # even when the rest is a valid layout for that version number
    with pytest.raises(UnknownEnvelopeVersion):
        _open(build(ALICE.public_key, ALICE.x25519_private_key, BOB, fields(), version=version))


def test_every_truncation_is_refused() -> None:
    blob = seal(ALICE, BOB.public_key, 1, b"body", now=NOW, fingerprint=FP_A)
    for n in range(len(blob)):
        with pytest.raises(EnvelopeError) as info:
            _open(blob[:n])
        expected = MalformedEnvelope if n < env.MIN_SIZE else UnopenableEnvelope
        assert isinstance(info.value, expected), n


def test_fingerprint_past_the_end_is_malformed() -> None:
    blob = build(ALICE.public_key, ALICE.x25519_private_key, BOB, fields(fp_len=40, body=b""))
    with pytest.raises(MalformedEnvelope):
        _open(blob)


@pytest.mark.parametrize("garbage", [None, 5, "text", [1, 2]])
def test_non_bytes_are_malformed(garbage: object) -> None:
    with pytest.raises(MalformedEnvelope):
        _open(garbage)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=400) | st.binary(min_size=105, max_size=400).map(lambda b: b"\x01" + b))
def test_garbage_only_raises_envelope_errors(blob: bytes) -> None:
    replay = ReplayCache()
    with pytest.raises(EnvelopeError):
        _open(blob, replay=replay)
    assert sum(replay.stats.values()) == 1 and replay.stats["opened"] == 0


def test_expired() -> None:
    blob = seal(ALICE, BOB.public_key, 1, b"x", now=NOW, ttl=120)
    limit = int(NOW) + 120 + CLOCK_SKEW
    assert _open(blob, now=limit).body == b"x"
    replay = ReplayCache()
    with pytest.raises(ExpiredEnvelope, match="expired"):
        _open(blob, now=limit + 0.5, replay=replay)
    assert replay.stats["expired"] == 1


def test_future_timestamp() -> None:
    blob = seal(ALICE, BOB.public_key, 1, b"x", now=NOW)
    assert _open(blob, now=NOW - CLOCK_SKEW).body == b"x"
    replay = ReplayCache()
    with pytest.raises(FutureEnvelope, match="future"):
        _open(blob, now=NOW - CLOCK_SKEW - 1, replay=replay)
    assert replay.stats["future"] == 1 and replay.stats["expired"] == 0


def test_replay() -> None:
    replay = ReplayCache()
    blob = seal(ALICE, BOB.public_key, 1, b"x", now=NOW)
    _open(blob, replay=replay)
    with pytest.raises(ReplayedEnvelope):
        _open(blob, now=NOW + 100, replay=replay)
    # the same body sealed again is a new envelope
    _open(seal(ALICE, BOB.public_key, 1, b"x", now=NOW), replay=replay)
    assert replay.stats == {"opened": 2, "replayed": 1}


def test_replay_cache_is_bounded_per_sender_and_entries_expire() -> None:
    replay = ReplayCache(per_sender=3)
    blobs = [seal(ALICE, BOB.public_key, 1, b"%d" % i, now=NOW + i, ttl=10) for i in range(5)]
    for i, blob in enumerate(blobs[:3]):
        _open(blob, now=NOW + i, replay=replay)
    assert len(replay) == 3
    _open(blobs[3], now=NOW + 3, replay=replay)  # evicts blobs[0] before it expired
    assert len(replay) == 3
    with pytest.raises(ReplayedEnvelope, match="replay window"):
        _open(blobs[0], now=NOW + 4, replay=replay)  # evicted, still refused
    assert replay.stats["below_floor"] == 1
    # much later every entry has expired (ttl + skew): they are dropped, not evicted
    late = NOW + 10 + CLOCK_SKEW + 10
    _open(seal(ALICE, BOB.public_key, 1, b"late", now=late), now=late, replay=replay)
    assert len(replay) == 1
    with pytest.raises(LocalProtocolError):
        ReplayCache(per_sender=0)


def test_replay_cache_counts_each_reason() -> None:
    replay = ReplayCache()
    good = seal(ALICE, BOB.public_key, 1, b"x", now=NOW)
    cases: list[tuple[bytes, float]] = [
        (b"", NOW), (b"\x01" + bytes(10), NOW), (b"\x02" + good[1:], NOW),
        (seal(ALICE, CAROL.public_key, 1, b"x", now=NOW), NOW),
        (build(ALICE.public_key, CAROL.x25519_private_key, BOB, fields()), NOW),
        (seal(ALICE, BOB.public_key, 1, b"x", now=NOW, ttl=1), NOW + 100),
        (seal(ALICE, BOB.public_key, 1, b"x", now=NOW + 100), NOW),
        (good, NOW), (good, NOW),
    ]
    for blob, now in cases:
        with contextlib.suppress(EnvelopeError):
            open_envelope(BOB, blob, now=now, replay=replay)
    assert replay.stats == {"malformed": 2, "unknown_version": 1, "unopenable": 1,
                            "forged": 1, "expired": 1, "future": 1, "opened": 1,
                            "replayed": 1}


@pytest.mark.parametrize("kwargs", [
    {"kind": -1}, {"kind": 256}, {"body": "text"}, {"fingerprint": b""},
    {"fingerprint": bytes(256)}, {"fingerprint": "ab"}, {"ttl": 0}, {"ttl": 65536},
    {"ttl": float("nan")}, {"now": -1.0}, {"now": float(2**32)}, {"now": float("inf")},
    {"recipient_pub": bytes(31)}, {"recipient_pub": bytes(32)}, {"sender": b"x" * 32},
])
def test_seal_misuse_raises_local_error(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"sender": ALICE, "recipient_pub": BOB.public_key, "kind": 1,
                               "body": b"x", "now": NOW, "ttl": 120.0, "fingerprint": None}
    args.update(kwargs)
    with pytest.raises(LocalProtocolError):
        seal(args.pop("sender"), args.pop("recipient_pub"), args.pop("kind"),  # type: ignore[arg-type]
             args.pop("body"), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("now", [float("nan"), float("inf"), "now"])
def test_open_with_a_bad_clock_is_local_misuse(now: object) -> None:
    blob = seal(ALICE, BOB.public_key, 1, b"x", now=NOW)
    replay = ReplayCache()
    with pytest.raises(LocalProtocolError):
        open_envelope(BOB, blob, now=now, replay=replay)  # type: ignore[arg-type]
    assert not replay.stats and len(replay) == 0


# --- transcript proof ------------------------------------------------------------------


def test_transcript_proof_matches_the_same_session_only() -> None:
    # Alice offered (initiator); each side signs its own view of the same DTLS session
    proof_a = transcript_proof(ALICE, FP_A, FP_B, initiator=True)
    proof_b = transcript_proof(BOB, FP_B, FP_A, initiator=False)
    assert len(proof_a) == len(proof_b) == 64
    assert verify_transcript(ALICE.public_key, proof_a, FP_B, FP_A, initiator=False)
    assert verify_transcript(BOB.public_key, proof_b, FP_A, FP_B, initiator=True)

    fp_c = hashlib.sha256(b"an old session").digest()
    for args in [
        (BOB.public_key, proof_a, FP_B, FP_A, False),    # wrong signer
        (ALICE.public_key, proof_a, FP_A, FP_B, False),  # fingerprints swapped
        (ALICE.public_key, proof_a, FP_B, FP_A, True),   # roles swapped
        (ALICE.public_key, proof_a, fp_c, FP_A, False),  # another session (old SDP)
        (ALICE.public_key, proof_a, FP_B, fp_c, False),
        (ALICE.public_key, proof_b, FP_B, FP_A, False),  # Bob's proof reflected
    ]:
        assert not verify_transcript(*args), args
    # a proof made as responder does not pass as an initiator's, same fingerprints
    assert not verify_transcript(
        ALICE.public_key, transcript_proof(ALICE, FP_A, FP_B, initiator=False), FP_B, FP_A,
        initiator=False)


def test_transcript_role_matters_when_fingerprints_are_equal() -> None:
    """A node talking to itself with one certificate: its initiator proof echoed back
    must not pass as the responder's."""
    proof = transcript_proof(ALICE, FP_A, FP_A, initiator=True)
    assert verify_transcript(ALICE.public_key, proof, FP_A, FP_A, initiator=False)
    assert not verify_transcript(ALICE.public_key, proof, FP_A, FP_A, initiator=True)


def test_transcript_is_domain_separated_from_plain_signatures() -> None:
    assert transcript_proof(ALICE, FP_A, FP_B, True) != ALICE.sign(FP_A + FP_B)
    assert not verify_transcript(ALICE.public_key, ALICE.sign(b"I" + FP_A + FP_B),
                                 FP_B, FP_A, initiator=False)


@settings(max_examples=200)
@given(pub=st.binary(max_size=40), proof=st.binary(max_size=70),
       lfp=st.binary(max_size=300), rfp=st.binary(max_size=300), init=st.booleans())
def test_verify_transcript_garbage_is_false(pub: bytes, proof: bytes, lfp: bytes,
                                            rfp: bytes, init: bool) -> None:
    assert verify_transcript(pub, proof, lfp, rfp, init) is False


@pytest.mark.parametrize("fps", [(b"", FP_B), (FP_A, bytes(256)), ("ab", FP_B)])
def test_transcript_proof_misuse(fps: tuple[bytes, bytes]) -> None:
    with pytest.raises(LocalProtocolError):
        transcript_proof(ALICE, fps[0], fps[1], True)
