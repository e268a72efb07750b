"""Media calls through the real CLI: ``hailing call`` and ``hailing up --auto-answer``,
each its own subprocess, on a ``hailing testnet`` subprocess on 127.0.0.1 (ICE on
loopback only). The files played are made at test time; recordings are decoded with
PyAV. Every wait has a timeout; nothing here is timed."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from media_clips import decoded_frames, make_clip
from pytest_helpers import run_testnet
from test_cli_peer import Daemon, new_ids, no_traceback, ok, one_error_line, run, spawn
from test_daemon import Up, friends, up

CALL_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    yield from run_testnet(8)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=2.0)


def lines(proc_out: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc_out.decode().splitlines()]


def test_call_help() -> None:
    out = "\n".join(ok(run("call", "--help")))
    for option in ("--play FILE", "--record FILE", "--audio-only", "--duration S",
                   "--timeout S", "--loop"):
        assert option in out
    assert "--auto-answer" in "\n".join(ok(run("up", "--help")))


def test_wrong_arguments_give_one_line_before_any_network(tmp_path: Path, clip: Path) -> None:
    """No --bootstrap anywhere: each of these fails on its argument first."""
    ids = new_ids(tmp_path, "alice")
    me = ["--data-dir", str(tmp_path / "alice")]
    (tmp_path / "notes.txt").write_text("not a film")
    cases: list[tuple[list[str], int, str]] = [
        (["call", ids["alice"], *me, "--play", str(tmp_path / "missing.mp4")], 1, "no such file"),
        (["call", ids["alice"], *me, "--play", str(tmp_path / "notes.txt")], 1, "not a media file"),
        (["call", ids["alice"], *me, "--record", str(tmp_path / "out.avi")], 2, "must end in"),
        (["call", ids["alice"], *me, "--record", str(tmp_path / "no" / "out.mkv")], 1,
         "no directory"),
        (["call", ids["alice"], *me, "--loop"], 2, "--loop needs --play"),
        (["call", ids["alice"], *me, "--duration", "0"], 2, "--duration"),
        (["up", *me, "--play", str(clip)], 2, "--play needs --auto-answer"),
        (["up", *me, "--auto-answer", "--record", str(tmp_path / "calls.avi")], 2, "must end in"),
        (["up", *me, "--auto-answer", "--play", str(tmp_path / "notes.txt")], 1,
         "not a media file"),
    ]
    for argv, code, words in cases:
        line = one_error_line(run(*argv), code)
        assert words in line, (argv, line)


def test_a_call_plays_a_file_to_a_daemon_that_records_it_and_plays_back(
        bootstrap: str, tmp_path: Path, clip: Path) -> None:
    """bob's daemon answers by itself: plays the clip to alice and records her into a
    file of its own; alice plays the clip (the call ends when it was played) and records
    bob. Both recordings hold decoded video and audio."""
    ids = friends(tmp_path, "alice", "bob")
    a_dir, b_dir = tmp_path / "alice", tmp_path / "bob"
    (tmp_path / "rec").mkdir()
    with up(b_dir, "--bootstrap", bootstrap, "--auto-answer", "--play", str(clip),
            "--record", str(tmp_path / "rec" / "calls.mkv")) as bd:
        bob = Up(bd, b_dir)
        assert bob.contact_id == ids["bob"]
        proc = run("call", "bob", "--data-dir", a_dir, "--bootstrap", bootstrap,
                   "--play", clip, "--record", tmp_path / "alice.mp4", timeout=CALL_TIMEOUT)
        connected, ended = lines(proc.stdout)
        assert proc.returncode == 0, proc.stderr
        assert connected["event"] == "connected" and connected["contact"] == "bob"
        assert connected["to"] == ids["bob"] and connected["coupler"] == "dht"
        assert connected["connect_ms"] > 0 and connected["recording"] == str(tmp_path / "alice.mp4")
        assert sorted(connected["sent"]) == sorted(connected["received"]) == ["audio", "video"]
        assert ended["event"] == "ended" and ended["reason"] == "the file was played", ended
        assert ended["recording"] == str(tmp_path / "alice.mp4") and ended["frames"]["video"] > 0
        frames = decoded_frames(tmp_path / "alice.mp4")
        assert frames.get("video", 0) >= 5 and frames.get("audio", 0) >= 5, frames

        i = bd.wait_event(event="closed", timeout=20)
        closed = bd.event_at(i)
        assert closed["from"] == ids["alice"] and closed["contact"] == "alice"
        assert closed["reason"] == "the peer hung up" and closed["media"] == ["audio", "video"]
        assert closed["duration_s"] > 0 and "error" not in closed
        recording = Path(closed["recording"])
        assert recording.parent == tmp_path / "rec"
        assert recording.name.startswith("calls-alice-") and recording.suffix == ".mkv"
        frames = decoded_frames(recording)
        assert frames.get("video", 0) >= 5 and frames.get("audio", 0) >= 5, frames
        connected_ev = [e for e in bd.events() if e["event"] == "connected"]
        assert connected_ev and connected_ev[-1]["recording"] == str(recording)
        assert bd.stop() == 0


def test_ctrl_c_during_a_call_hangs_up_and_finalizes_the_recording(
        bootstrap: str, tmp_path: Path, clip: Path) -> None:
    """alice sends nothing and records bob (a looping clip) into an .mp4, which is only
    readable once its index is written at the end; SIGINT mid-call: one line, exit 130,
    a readable file, and bob's daemon sees a hang-up."""
    friends(tmp_path, "alice", "bob")
    a_dir, b_dir = tmp_path / "alice", tmp_path / "bob"
    with up(b_dir, "--bootstrap", bootstrap, "--auto-answer", "--play", str(clip),
            "--loop") as bd:
        Up(bd, b_dir)
        call = Daemon(spawn("call", "bob", "--data-dir", a_dir, "--bootstrap", bootstrap,
                            "--record", tmp_path / "alice.mp4"))
        try:
            call.out.wait_for(lambda line: '"connected"' in line, timeout=CALL_TIMEOUT)
            bd.wait_event(event="connected", timeout=20)
            # frames flow: wait for a few seconds' worth of the recording to be written
            call.out.wait_for(lambda _: (tmp_path / "alice.mp4").exists()
                              and (tmp_path / "alice.mp4").stat().st_size > 20_000, timeout=30)
        finally:
            code = call.stop(signal.SIGINT)
        assert code == 130
        assert call.err.lines == ["hailing: interrupted; hung up on bob"]
        ended = json.loads(call.out.lines[-1])
        assert ended["event"] == "ended" and ended["reason"] == "interrupted"
        assert ended["recording"] == str(tmp_path / "alice.mp4")
        frames = decoded_frames(tmp_path / "alice.mp4")
        assert frames.get("video", 0) >= 1 and frames.get("audio", 0) >= 1, frames
        i = bd.wait_event(event="closed", timeout=20)
        assert bd.event_at(i)["reason"] == "the peer hung up"
        assert bd.stop() == 0
        no_traceback("\n".join(bd.err.lines))
