"""Tests for hailing.chain.wallet: keybase's WarpWallet vectors, daily rotation, the cache,
the rotation secret on disk and the ``hailing wallet`` commands.

Every real derivation costs ~1.3 s of scrypt, so the wallets most tests compare are derived
once per module, two at a time (hashlib.scrypt releases the GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils import is_checksum_address

import hailing.chain.wallet as wallet_mod
from hailing import cli
from hailing.chain import (
    ROTATION_FILE,
    RotatingWallets,
    RotationSecret,
    Wallet,
    daily_passphrase,
    daily_wallet,
    load_or_create_rotation,
    load_rotation,
    new_prefix,
    new_user_id,
    utc_day,
    warp_private_key,
    warp_wallet,
    watch_days,
)
from hailing.cli import wallet as cli_wallet
from hailing.cli.wallet import add_wallet_commands
from hailing.errors import LocalProtocolError, StorageError

# keybase/warpwallet test/spec.json (version 1.0.9; params N=18, r=8, p=1, dkLen=32,
# pbkdf2c=65536): vectors 1, 5 and 9, as (passphrase, salt, WIF private key, address).
# "seeds" there are [scrypt, pbkdf2, xor]; the xor is checked as well as the WIF.
KEYBASE_VECTORS = [
    ("ER8FT+HFjk0", "7DpniYifN6c",
     "5JfEekYcaAexqcigtFAy4h2ZAY95vjKCvS1khAkSG8ATo1veQAD", "1J32CmwScqhwnNQ77cKv9q41JGwoZe2JYQ",
     "6f2552e159f2a1e1e26c2262da459818fd56c81c363fcc70b94c423def42e59f"),
    ("bS7kqw6LDMJbvHwNFJiXlw", "tzsvA87xk+Rrw/5qj580kg",
     "5KNA7T1peej9DwF5ZALUeqBq2xN4LHetaKvH9oRr8RHdTgwohd7", "17ZcmAbJ35QJzAbwqAj4evo4vL5PwA8e7C",
     "cc104757e5504c199a1e71dbda23a04751ab3bf44b1031952df20305ddad020a"),
    ("rDrc5eIhSt2qP8pnpnSMu1u2/mP6KTqS", "HGM1/qHoT3XX61NXw8H1nQ",
     "5HxwfzgQ2yem9uY5UxdiaKYPgUR251FCVHw1VuHC5bSW5NVLaok", "12XD7BtiU1gydRzQm3cAoui2RQjhVJfNPg",
     "13a7fdb19b0a5501c21020b5d06870f19d1eec7c705ee744aed2f31bd8c45b0f"),
]

PASS, SALT = "correct horse battery staple", "alice@example.com"
PREFIX, UID = "Picard Delta 5 ", "k7d2qz5m3xw4r6t8y1u0i9o2pa"
D1, D2 = date(2020, 12, 1), date(2020, 12, 2)

# -- base58check, written here so that the vectors' WIF and addresses are checked
# independently of the code under test --------------------------------------------------

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58check_decode(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + B58.index(ch)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    raw = b"\0" * (len(text) - len(text.lstrip("1"))) + body
    payload, check = raw[:-4], raw[-4:]
    assert hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == check, text
    return payload


def wif_private_key(wif: str) -> bytes:
    payload = b58check_decode(wif)
    assert payload[0] == 0x80 and len(payload) == 33, "uncompressed mainnet WIF"
    return payload[1:]


def bitcoin_address(wallet: Wallet) -> bytes:
    """hash160 of the uncompressed public key (what keybase's addresses encode)."""
    pub = Account.from_key(wallet.private_key_bytes)._key_obj.public_key.to_bytes()
    return hashlib.new("ripemd160", hashlib.sha256(b"\x04" + pub).digest()).digest()


def test_base58check_decoder_rejects_a_bad_checksum() -> None:
    wif = KEYBASE_VECTORS[0][2]
    with pytest.raises(AssertionError):
        b58check_decode(wif[:-1] + ("A" if wif[-1] != "A" else "B"))


# -- wallets derived once per module -----------------------------------------------------


@pytest.fixture(scope="module")
def derived() -> dict[str, Wallet]:
    jobs: dict[str, Callable[[], Wallet]] = {
        "base": lambda: warp_wallet(PASS, SALT),
        "other_salt": lambda: warp_wallet(PASS, "bob@example.com"),
        "other_pass": lambda: warp_wallet(PASS + "!", SALT),
        "day1": lambda: daily_wallet(PREFIX, UID, D1),
        "day2": lambda: daily_wallet(PREFIX, UID, D2),
        "wrong_prefix": lambda: daily_wallet("Picard Delta 6 ", UID, D1),
        "wrong_uid": lambda: daily_wallet(PREFIX, UID[:-1] + "b", D1),
    }
    for i, (p, s, *_) in enumerate(KEYBASE_VECTORS):
        jobs[f"vector{i}"] = lambda p=p, s=s: warp_wallet(p, s)  # type: ignore[misc]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("index", range(len(KEYBASE_VECTORS)))
def test_keybase_vectors(derived: dict[str, Wallet], index: int) -> None:
    _, _, wif, btc_address, xor_seed = KEYBASE_VECTORS[index]
    w = derived[f"vector{index}"]
    assert w.private_key == wif_private_key(wif).hex() == xor_seed
    assert bitcoin_address(w) == b58check_decode(btc_address)[1:]
    assert w.address == Account.from_key(bytes.fromhex(xor_seed)).address
    assert is_checksum_address(w.address)


def test_different_salt_or_passphrase_gives_another_key(derived: dict[str, Wallet]) -> None:
    keys = {derived[k].private_key for k in ("base", "other_salt", "other_pass")}
    addresses = {derived[k].address for k in ("base", "other_salt", "other_pass")}
    assert len(keys) == len(addresses) == 3


def test_wallet_hides_its_private_key_and_signs(derived: dict[str, Wallet]) -> None:
    w = derived["base"]
    assert w.private_key not in repr(w) and w.address in repr(w)
    assert w.account().address == w.address
    assert Wallet.from_private_key(w.private_key_bytes) == w


@pytest.mark.parametrize("passphrase, salt", [
    (b"bytes", "s"), ("", "s"), ("p", None), ("\udcff", "s"), ("p", "\ud800"),
    ("x" * 1025, "s"), ("p", "é" * 513),
])
def test_warp_rejects_garbage(passphrase: Any, salt: Any) -> None:
    with pytest.raises(LocalProtocolError):
        warp_private_key(passphrase, salt)


def test_empty_salt_is_allowed_as_in_keybase(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    monkeypatch.setattr(wallet_mod, "_warp_seeds",
                        lambda p, s: seen.append((p, s)) or (b"\x01" * 32, b"\x00" * 32))
    assert warp_private_key("pässword", "") == b"\x01" * 32
    assert seen == [("pässword".encode(), b"")]


@pytest.mark.parametrize("s1, s2", [
    (b"\x07" * 32, b"\x07" * 32),                                    # XOR is zero
    (bytes.fromhex("ff" * 32), bytes.fromhex("00" * 32)),            # above the group order
])
def test_a_key_outside_the_curve_order_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                  s1: bytes, s2: bytes) -> None:
    monkeypatch.setattr(wallet_mod, "_warp_seeds", lambda p, s: (s1, s2))
    with pytest.raises(LocalProtocolError, match="no valid key"):
        warp_private_key("p", "s")


@pytest.mark.parametrize("key", [b"\x01" * 31, b"\x00" * 32, "01" * 32, b"\xff" * 32])
def test_wallet_from_garbage_private_key(key: Any) -> None:
    with pytest.raises(LocalProtocolError):
        Wallet.from_private_key(key)


# -- daily rotation --------------------------------------------------------------------------


def test_daily_wallets_differ_per_day(derived: dict[str, Wallet]) -> None:
    assert derived["day1"].address != derived["day2"].address
    assert daily_passphrase(PREFIX, D1) == "Picard Delta 5 2020-12-01"


def test_daily_wallet_is_warp_of_prefix_and_date(derived: dict[str, Wallet]) -> None:
    assert warp_wallet(PREFIX + "2020-12-02", UID) == derived["day2"]


def test_a_wrong_friend_secret_finds_a_different_address(derived: dict[str, Wallet]) -> None:
    real = {derived["day1"].address, derived["day2"].address}
    for wrong in ("wrong_prefix", "wrong_uid"):
        assert derived[wrong].address not in real


@pytest.mark.parametrize("prefix, user_id, day", [
    ("", UID, D1), (None, UID, D1), ("p\n", UID, D1), ("x" * 257, UID, D1),
    (PREFIX, "", D1), (PREFIX, "has space", D1), (PREFIX, b"uid", D1), (PREFIX, "u\x00", D1),
    (PREFIX, UID, datetime(2020, 12, 1, tzinfo=UTC)), (PREFIX, UID, "2020-12-01"),
])
def test_daily_wallet_rejects_garbage(prefix: Any, user_id: Any, day: Any) -> None:
    with pytest.raises(LocalProtocolError):
        daily_wallet(prefix, user_id, day)


def test_new_ids_are_random_base32() -> None:
    ids = {new_user_id() for _ in range(50)} | {new_prefix() for _ in range(50)}
    assert len(ids) == 100
    for v in ids:
        assert len(v) == 26 and set(v) <= set("abcdefghijklmnopqrstuvwxyz234567")
        RotationSecret(prefix=v, user_id=v)  # both are valid


def at(hh: int, mm: int, day: date = D1, tz: timezone = UTC) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=tz)


@pytest.mark.parametrize("now, skew, days", [
    (at(23, 50), timedelta(minutes=15), [D1, D2]),
    (at(0, 5, D2), timedelta(minutes=15), [D1, D2]),
    (at(12, 0), timedelta(minutes=15), [D1]),
    (at(23, 45), timedelta(minutes=15), [D1, D2]),            # exactly skew before midnight
    (at(0, 15, D2), timedelta(minutes=15), [D2]),             # exactly skew after: not any more
    (at(23, 50), timedelta(minutes=5), [D1]),
    (at(0, 0, D2), timedelta(0), [D2]),
    # 01:05 at UTC+2 is 23:05 UTC of the day before: the UTC date rules
    (at(1, 5, D2, timezone(timedelta(hours=2))), timedelta(minutes=15), [D1]),
    (at(0, 50, D2, timezone(timedelta(hours=1))), timedelta(minutes=15), [D1, D2]),
    (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), timedelta(minutes=15), [date(9999, 12, 31)]),
])
def test_watch_days_around_midnight(now: datetime, skew: timedelta, days: list[date]) -> None:
    assert watch_days(now, skew) == days


@pytest.mark.parametrize("now, skew", [
    (datetime(2020, 12, 1, 23, 50), timedelta(minutes=15)),    # naive: which midnight?
    (D1, timedelta(minutes=15)), ("2020-12-01T23:50Z", timedelta(minutes=15)),
    (at(23, 50), timedelta(minutes=-1)), (at(23, 50), timedelta(hours=12)), (at(23, 50), 900),
])
def test_watch_days_rejects_garbage(now: Any, skew: Any) -> None:
    with pytest.raises(LocalProtocolError):
        watch_days(now, skew)


def test_utc_day() -> None:
    assert utc_day(at(1, 5, D2, timezone(timedelta(hours=2)))) == D1
    with pytest.raises(LocalProtocolError):
        utc_day(datetime(2020, 12, 1))


# -- the cache -------------------------------------------------------------------------------


def fake_derive(calls: list[tuple[str, str, date]], delay: float = 0.0,
                fail: int = 0) -> Callable[[str, str, date], Wallet]:
    """A quick stand-in for daily_wallet that records its calls (and blocks ``delay`` s)."""

    def derive(prefix: str, user_id: str, day: date) -> Wallet:
        calls.append((prefix, user_id, day))
        time.sleep(delay)
        if len(calls) <= fail:
            raise StorageError("derivation failed")
        key = hashlib.sha256(f"{prefix}|{user_id}|{day}".encode()).hexdigest()
        return Wallet(private_key=key, address=f"fake-{day}")

    return derive


async def test_cache_derives_once_per_key_even_when_asked_concurrently() -> None:
    calls: list[tuple[str, str, date]] = []
    cache = RotatingWallets(fake_derive(calls, delay=0.05))
    results = await asyncio.gather(*(cache.get(PREFIX, UID, D1) for _ in range(5)))
    assert len(calls) == 1 and all(r is results[0] for r in results)
    assert await cache.get(PREFIX, UID, D1) is results[0] and len(calls) == 1
    assert cache.cached(PREFIX, UID, D1) is results[0]
    await cache.get(PREFIX, UID, D2)
    await cache.get("other prefix ", UID, D1)
    assert len(calls) == 3 and cache.derivations == 3 and len(cache) == 3


async def test_cache_derivation_does_not_block_the_loop(derived: dict[str, Wallet]) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        t0 = time.monotonic()
        wallet = await RotatingWallets().get(PREFIX, UID, D1)  # real scrypt, ~1.3 s
        elapsed = time.monotonic() - t0
    finally:
        task.cancel()
    assert wallet == derived["day1"]  # deterministic across calls and threads
    assert elapsed > 0.3 and ticks >= elapsed / 0.01 / 3, (ticks, elapsed)


async def test_a_failed_derivation_reaches_every_waiter_and_is_retried() -> None:
    calls: list[tuple[str, str, date]] = []
    cache = RotatingWallets(fake_derive(calls, delay=0.05, fail=1))
    results = await asyncio.gather(cache.get(PREFIX, UID, D1), cache.get(PREFIX, UID, D1),
                                   return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results) and len(calls) == 1
    assert (await cache.get(PREFIX, UID, D1)).address == f"fake-{D1}" and len(calls) == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_derivation() -> None:
    calls: list[tuple[str, str, date]] = []
    cache = RotatingWallets(fake_derive(calls, delay=0.2))
    first = asyncio.create_task(cache.get(PREFIX, UID, D1))
    second = asyncio.create_task(cache.get(PREFIX, UID, D1))
    await asyncio.sleep(0.05)
    first.cancel()
    assert (await second).address == f"fake-{D1}"
    assert first.cancelled() and len(calls) == 1


async def test_cache_bounds_parallel_derivations_and_entries() -> None:
    running = peak = 0
    calls: list[tuple[str, str, date]] = []
    inner = fake_derive(calls, delay=0.1)

    def derive(prefix: str, user_id: str, day: date) -> Wallet:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            return inner(prefix, user_id, day)
        finally:
            running -= 1

    cache = RotatingWallets(derive, max_parallel=2, max_entries=3)
    days = [D1 + timedelta(days=i) for i in range(5)]
    await asyncio.gather(*(cache.get(PREFIX, UID, d) for d in days))
    assert peak == 2 and len(calls) == 5 and len(cache) == 3
    assert cache.prune_before(days[4]) == 2 and len(cache) == 1


async def test_cache_watched_follows_watch_days() -> None:
    calls: list[tuple[str, str, date]] = []
    cache = RotatingWallets(fake_derive(calls))
    wallets = await cache.watched(PREFIX, UID, at(23, 50))
    assert {d: w.address for d, w in wallets.items()} == {D1: f"fake-{D1}", D2: f"fake-{D2}"}
    assert list(await cache.watched(PREFIX, UID, at(12, 0))) == [D1] and len(calls) == 2


@pytest.mark.parametrize("prefix, user_id, day", [
    ("", UID, D1), (PREFIX, "a b", D1), (PREFIX, UID, datetime(2020, 12, 1, tzinfo=UTC)),
    (PREFIX, UID, None), (7, UID, D1),
])
async def test_cache_rejects_garbage_without_deriving(prefix: Any, user_id: Any, day: Any) -> None:
    calls: list[tuple[str, str, date]] = []
    cache = RotatingWallets(fake_derive(calls))
    with pytest.raises(LocalProtocolError):
        await cache.get(prefix, user_id, day)
    assert calls == []


def test_cache_works_across_event_loops() -> None:
    calls: list[tuple[str, str, date]] = []
    cache = RotatingWallets(fake_derive(calls, delay=0.01), max_parallel=1)
    for day in (D1, D2):
        asyncio.run(cache.get(PREFIX, UID, day))
        asyncio.run(cache.get(PREFIX, UID, day))
    assert len(calls) == 2


@pytest.mark.parametrize("kw", [{"max_entries": 0}, {"max_parallel": 0}])
def test_cache_rejects_bad_limits(kw: dict[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        RotatingWallets(**kw)


# -- the rotation secret on disk -------------------------------------------------------------


def test_rotation_secret_is_created_once_with_mode_600(tmp_path: Path) -> None:
    data_dir = tmp_path / "node" / "deep"
    secret = load_or_create_rotation(data_dir)
    path = data_dir / ROTATION_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert secret.prefix not in repr(secret) and secret.user_id in repr(secret)
    before = path.read_bytes()
    assert load_or_create_rotation(data_dir) == secret == load_rotation(data_dir)
    assert path.read_bytes() == before
    assert load_or_create_rotation(tmp_path / "other") != secret


def test_rotation_secret_created_concurrently_elsewhere_wins(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = RotationSecret(prefix=PREFIX, user_id=UID)

    def racing_write(path: Path, data: bytes, *, overwrite: bool = True) -> bool:
        write_rotation(path, {"version": 1, "prefix": theirs.prefix, "user_id": theirs.user_id})
        return False

    monkeypatch.setattr(wallet_mod, "write_secret", racing_write)
    assert load_or_create_rotation(tmp_path) == theirs


def write_rotation(path: Path, body: Any, mode: int = 0o600) -> None:
    path.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
    path.chmod(mode)


GOOD = {"version": 1, "prefix": PREFIX, "user_id": UID}


@pytest.mark.parametrize("body, mode, match", [
    (b"", 0o600, "not JSON"),
    (b"{not json", 0o600, "not JSON"),
    (b"\xff\xfe", 0o600, "not JSON"),
    (b"[1, 2]", 0o600, "not a JSON object"),
    ({**GOOD, "version": 2}, 0o600, "unknown version"),
    ({"prefix": PREFIX, "user_id": UID}, 0o600, "unknown version"),
    ({**GOOD, "prefix": 5}, 0o600, "must be strings"),
    ({"version": 1, "prefix": PREFIX}, 0o600, "must be strings"),
    ({**GOOD, "user_id": ""}, 0o600, "user id"),
    ({**GOOD, "prefix": "a\tb"}, 0o600, "prefix"),
    (b" " * 5000, 0o600, "larger than"),
    (GOOD, 0o644, "chmod 600"),
])
def test_unusable_rotation_file_is_an_error_and_left_untouched(
        tmp_path: Path, body: Any, mode: int, match: str) -> None:
    path = tmp_path / ROTATION_FILE
    write_rotation(path, body, mode)
    before = path.read_bytes()
    for load in (load_or_create_rotation, load_rotation):
        with pytest.raises(StorageError, match=match) as info:
            load(tmp_path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == mode


def test_rotation_file_paths_that_are_not_files(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        load_rotation(tmp_path)
    (tmp_path / "d" / ROTATION_FILE).mkdir(parents=True)
    with pytest.raises(StorageError, match="not a regular file"):
        load_or_create_rotation(tmp_path / "d")
    (tmp_path / "f").write_text("")
    with pytest.raises(StorageError, match="cannot create data directory"):
        load_or_create_rotation(tmp_path / "f")


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
        ) -> Callable[..., tuple[int, str, str]]:
    """``hailing ARGS`` in process: (exit code, stdout, stderr). Uses the real cli.main;
    registers the wallet commands itself while cli.py does not yet. The default data
    directory (no --data-dir) is tmp_path/xdg/hailing."""
    monkeypatch.delenv("HAILING_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "wallet" not in sub.choices:
        add_wallet_commands(sub, cli._Parser)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)

    def invoke(*argv: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return invoke


@pytest.fixture
def fake_warp(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Replace the scrypt derivation by a quick fake that records (passphrase, salt)."""
    calls: list[tuple[str, str]] = []

    def warp(passphrase: str, salt: str) -> Wallet:
        calls.append((passphrase, salt))
        return Wallet.from_private_key(hashlib.sha256(f"{passphrase}|{salt}".encode()).digest())

    monkeypatch.setattr(wallet_mod, "warp_wallet", warp)
    monkeypatch.setattr(cli_wallet, "warp_wallet", warp)
    return calls


def test_cli_warp_prints_one_json_object(run: Callable[..., tuple[int, str, str]],
                                         derived: dict[str, Wallet]) -> None:
    passphrase, salt, wif, *_ = KEYBASE_VECTORS[0]
    code, out, err = run("wallet", "warp", "--passphrase", passphrase, "--salt", salt)
    assert code == 0 and err == "" and out.count("\n") == 1
    obj = json.loads(out)
    assert set(obj) == {"private_key", "address"}
    assert obj["private_key"] == wif_private_key(wif).hex() and len(obj["private_key"]) == 64
    assert obj["address"] == derived["vector0"].address and is_checksum_address(obj["address"])


def test_cli_rotating_with_date(run: Callable[..., tuple[int, str, str]], tmp_path: Path,
                                derived: dict[str, Wallet]) -> None:
    write_rotation(tmp_path / ROTATION_FILE, GOOD)
    code, out, err = run("wallet", "rotating", "--data-dir", str(tmp_path), "--date", "2020-12-01")
    assert (code, out, err) == (0, derived["day1"].address + "\n", "")


def test_cli_rotating_creates_the_secret_and_defaults_to_today_utc(
        run: Callable[..., tuple[int, str, str]], tmp_path: Path,
        fake_warp: list[tuple[str, str]]) -> None:
    before = utc_day(datetime.now(UTC))
    code, out, _ = run("wallet", "rotating", "--data-dir", str(tmp_path / "n"))
    after = utc_day(datetime.now(UTC))
    secret = load_rotation(tmp_path / "n")
    assert code == 0 and stat.S_IMODE((tmp_path / "n" / ROTATION_FILE).stat().st_mode) == 0o600
    [(passphrase, salt)] = fake_warp
    assert salt == secret.user_id
    assert passphrase in (secret.prefix + before.isoformat(), secret.prefix + after.isoformat())
    assert out == Wallet.from_private_key(
        hashlib.sha256(f"{passphrase}|{salt}".encode()).digest()).address + "\n"
    code, out2, _ = run("wallet", "rotating", "--data-dir", str(tmp_path / "n"), "--date",
                        before.isoformat())
    assert code == 0 and out2 == out and load_rotation(tmp_path / "n") == secret


def test_cli_rotating_without_data_dir_uses_the_default(
        run: Callable[..., tuple[int, str, str]], tmp_path: Path,
        derived: dict[str, Wallet]) -> None:
    default = tmp_path / "xdg" / "hailing"  # the run fixture's XDG_DATA_HOME
    default.mkdir(parents=True)
    write_rotation(default / ROTATION_FILE, GOOD)
    code, out, err = run("wallet", "rotating", "--date", "2020-12-01")
    assert (code, out, err) == (0, derived["day1"].address + "\n", "")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_cli_progress_only_on_a_terminal(run: Callable[..., tuple[int, str, str]],
                                         monkeypatch: pytest.MonkeyPatch, tty: bool,
                                         fake_warp: list[tuple[str, str]]) -> None:
    stream = _Tty() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    code, out, _ = run("wallet", "warp", "--passphrase", "p", "--salt", "s")
    assert code == 0 and json.loads(out)["address"] and fake_warp == [("p", "s")]
    assert ("deriving (scrypt" in stream.getvalue()) is tty


@pytest.mark.parametrize("argv", [
    ["wallet", "rotating", "--data-dir", "{d}", "--date", "2020-13-01"],
    ["wallet", "rotating", "--data-dir", "{d}", "--date", "2021-02-29"],
    ["wallet", "rotating", "--data-dir", "{d}", "--date", "20201201"],
    ["wallet", "rotating", "--data-dir", "{d}", "--date", "2020-W49-2"],
    ["wallet", "rotating", "--data-dir", "{d}", "--date", ""],
    ["wallet", "rotating", "--data-dir", "{d}", "--date", "\u0662\u0660\u0662\u0660-\u0661\u0662-\u0660\u0661"],
    ["wallet", "warp", "--passphrase", "", "--salt", "s"],
    ["wallet", "warp", "--passphrase", "p"],
    ["wallet", "warp", "--passphrase", "\udcff", "--salt", "s"],
    ["wallet", "warp", "--passphrase", "p", "--salt", "x" * 1025],
    ["wallet", "warp", "--passphrase", "p", "--salt", "s", "extra"],
    ["wallet", "mint"],
    ["wallet"],
])
def test_cli_bad_arguments_exit_2_with_one_line(run: Callable[..., tuple[int, str, str]],
                                                tmp_path: Path, argv: list[str]) -> None:
    code, out, err = run(*(a.replace("{d}", str(tmp_path)) for a in argv))
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and err.strip(), err
    assert not (tmp_path / ROTATION_FILE).exists()


@pytest.mark.parametrize("setup", ["data_dir_is_a_file", "corrupt"])
def test_cli_unusable_data_dir_exits_1_with_one_line(
        run: Callable[..., tuple[int, str, str]], tmp_path: Path, setup: str,
        fake_warp: list[tuple[str, str]]) -> None:
    target = tmp_path / "n"
    if setup == "data_dir_is_a_file":
        target.write_text("")
    else:
        target.mkdir()
        write_rotation(target / ROTATION_FILE, b"{")
    code, out, err = run("wallet", "rotating", "--data-dir", str(target), "--date", "2020-12-01")
    assert code == 1 and out == "" and len(err.splitlines()) == 1 and str(target) in err, err
    assert fake_warp == []

