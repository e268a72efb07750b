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
from test_cli_peer import (
    Daemon,
    listening,
    new_ids,
    no_traceback,
    ok,
    one_error_line,
    run,
    spawn,
)
from test_daemon import Up, friends, up

CALL_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    yield from run_testnet(8)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=2.0)


def event(d: Daemon, index: int) -> dict[str, Any]:
    """The JSON event on line ``index`` of ``d``'s stdout (as ``wait_event`` returns it)."""
    ev: dict[str, Any] = json.loads(d.out.lines[index])
    return ev


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
        # in the call log, as a page's calls are, and ended there with its duration
        assert closed["call"] == connected_ev[-1]["call"]
        j = bd.wait_event(event="call-ended", timeout=20)
        assert event(bd, j)["call"] == closed["call"] and event(bd, j)["duration_s"] >= 0
        status, body = bob.request("GET", "/api/calls?limit=5")
        assert status == 200, body
        logged = body["calls"][0]
        assert logged["call"] == closed["call"] and logged["direction"] == "in"
        assert logged["state"] == "ended" and logged["media"] == "video"
        assert logged["from"] == ids["alice"] and "duration_s" in logged
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


def test_a_daemon_finalizes_its_recording_when_the_caller_vanishes_and_when_it_stops(
        bootstrap: str, tmp_path: Path, clip: Path) -> None:
    """The recordings are .mp4 files, readable only once finalized. First call: the
    caller is killed (-9) mid-call; the daemon notices within its keepalive and finalizes
    the file. Second call: the daemon itself is stopped mid-call; it hangs up (the
    caller's call ends, exit 0) and finalizes the file before it exits."""
    friends(tmp_path, "alice", "bob")
    a_dir, b_dir = tmp_path / "alice", tmp_path / "bob"
    template = tmp_path / "calls.mp4"
    with up(b_dir, "--bootstrap", bootstrap, "--auto-answer", "--record", str(template)) as bd:
        bob = Up(bd, b_dir)
        recordings = []
        for how in ("caller killed", "daemon stopped"):
            start = len(bd.out)
            call = Daemon(spawn("call", "bob", "--data-dir", a_dir, "--bootstrap", bootstrap,
                                "--play", clip, "--loop", "--audio-only"))
            try:
                i = bd.wait_event(start, event="connected", timeout=CALL_TIMEOUT)
                recording = Path(event(bd, i)["recording"])
                assert recording.parent == tmp_path and recording.suffix == ".mp4"
                assert event(bd, i)["media"] == ["audio"]
                call.out.wait_for(lambda _, r=recording: r.exists(), timeout=30)
                status = bob.request("GET", "/api/status")[1]
                live = status["media_calls"]
                assert len(live) == 1 and live[0]["recording"] == str(recording), status
                assert live[0]["frames"]["audio"] > 0 and live[0]["call"]
                if how == "caller killed":
                    call.proc.kill()
                    bd.wait_event(start, event="closed", timeout=30)
                else:
                    assert bd.stop(signal.SIGTERM) == 0
                    assert collect_call(call) == 0
                    ended = json.loads(call.out.lines[-1])
                    assert ended["reason"] == "the peer hung up", ended
            finally:
                if call.proc.poll() is None:
                    call.proc.kill()
            closed = [e for e in bd.events(start) if e["event"] == "closed"]
            assert len(closed) == 1, closed
            reason = closed[0]["reason"]
            if how == "caller killed":
                assert "stopped answering" in reason, closed
            else:
                assert reason == "the daemon stopped", closed
            assert closed[0]["recording"] == str(recording) and "error" not in closed[0], closed
            assert closed[0]["frames"]["audio"] > 0
            assert decoded_frames(recording).get("audio", 0) >= 1
            recordings.append(recording)
        assert recordings[0] != recordings[1]


def collect_call(call: Daemon) -> int:
    code = call.proc.wait(timeout=30)
    call.out.thread.join(5)
    call.err.thread.join(5)
    no_traceback("\n".join(call.out.lines), "\n".join(call.err.lines))
    return code


def test_a_call_nobody_answers_is_one_line_and_the_player_does_not_hold_the_process(
        bootstrap: str, tmp_path: Path, clip: Path) -> None:
    ids = new_ids(tmp_path, "alice", "nobody")
    proc = run("call", ids["nobody"], "--data-dir", tmp_path / "alice", "--bootstrap",
               bootstrap, "--play", clip, "--loop", "--timeout", "2", timeout=CALL_TIMEOUT)
    assert "nobody answered" in one_error_line(proc, 1)
    assert proc.stdout == b""


def test_without_auto_answer_a_call_rings_and_ctrl_c_while_ringing_cancels_it(
        bootstrap: str, tmp_path: Path, clip: Path) -> None:
    """A daemon without --auto-answer rings (for the web app) instead of answering;
    Ctrl-C on the caller while it rings sends the sealed CANCEL: the ring ends as
    cancelled, and the caller says it cancelled (not "hung up")."""
    ids = friends(tmp_path, "alice", "bob")
    with up(tmp_path / "bob", "--bootstrap", bootstrap) as bd:
        Up(bd, tmp_path / "bob")
        call = Daemon(spawn("call", "bob", "--data-dir", tmp_path / "alice", "--bootstrap",
                            bootstrap, "--play", clip))
        try:
            i = bd.wait_event(event="ring", timeout=CALL_TIMEOUT)
            ring = event(bd, i)
            assert ring["from"] == ids["alice"] and ring["media"] == "video"
        finally:
            code = call.stop(signal.SIGINT)
        assert code == 130 and call.out.lines == []
        assert call.err.lines == ["hailing: interrupted; the call to bob was cancelled"]
        j = bd.wait_event(i, event="ring-ended", timeout=20)
        assert event(bd, j)["reason"] == "cancelled" and event(bd, j)["call"] == ring["call"]
        assert bd.stop() == 0


def test_listen_takes_a_media_call_and_reads_its_frames(
        bootstrap: str, tmp_path: Path, clip: Path) -> None:
    """``hailing listen`` answers a media call with nothing to send and reads (drops) what
    it receives, so decoded frames never pile up; the caller's call lasts its duration.
    The caller's own daemon runs meanwhile: ``call`` still runs its own node beside it."""
    ids = friends(tmp_path, "alice", "bob")
    with listening(tmp_path / "bob", "--bootstrap", bootstrap) as bob, \
            up(tmp_path / "alice", "--bootstrap", bootstrap) as ad:
        Up(ad, tmp_path / "alice")
        proc = run("call", "bob", "--data-dir", tmp_path / "alice", "--bootstrap", bootstrap,
                   "--play", clip, "--loop", "--duration", "2", timeout=CALL_TIMEOUT)
        connected, ended = lines(proc.stdout)
        assert proc.returncode == 0, proc.stderr
        assert connected["sent"] == ["audio", "video"] and connected["received"] == []
        assert ended["reason"] == "the call's duration was reached" and ended["frames"] == {}
        i = bob.wait_event(event="closed", timeout=20)
        assert event(bob, i)["from"] == ids["alice"]
        assert event(bob, i)["reason"] == "the peer hung up"
        assert bob.stop() == 0 and ad.stop() == 0


def test_a_callee_that_vanishes_ends_the_call_with_one_line_and_exit_1(
        bootstrap: str, tmp_path: Path, clip: Path) -> None:
    """kill -9 of the answering daemon mid-call: the caller's keepalive notices it, the
    recording is finalized, the ended line says why, one error line, exit 1."""
    friends(tmp_path, "alice", "bob")
    with up(tmp_path / "bob", "--bootstrap", bootstrap, "--auto-answer", "--play", str(clip),
            "--loop") as bd:
        Up(bd, tmp_path / "bob")
        call = Daemon(spawn("call", "bob", "--data-dir", tmp_path / "alice", "--bootstrap",
                            bootstrap, "--record", tmp_path / "alice.mkv"))
        try:
            call.out.wait_for(lambda line: '"connected"' in line, timeout=CALL_TIMEOUT)
            call.out.wait_for(lambda _: (tmp_path / "alice.mkv").exists(), timeout=30)
            bd.proc.kill()
            code = collect_call(call)
        finally:
            if call.proc.poll() is None:
                call.proc.kill()
    assert code == 1
    assert len(call.err.lines) == 1 and "the call with bob ended: the peer stopped answering" \
        in call.err.lines[0], call.err.lines
    ended = json.loads(call.out.lines[-1])
    assert ended["event"] == "ended" and "stopped answering" in ended["reason"]
    assert ended["recording"] == str(tmp_path / "alice.mkv")
    assert decoded_frames(tmp_path / "alice.mkv").get("video", 0) >= 1
