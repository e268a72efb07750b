"""Calls between browsers, signaled by their daemons through the loopback DHT.

alice, bob and carol each run ``hailing up`` and have one Chromium context each; dave is
everybody's contact but never online; bot is a Python peer started by its test
(``hailing up --auto-answer --play --record``). Nothing here is timed: every wait has a
generous deadline, and media is checked by counters that must grow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser_harness import (
    HAILING,
    PC_COUNTS,
    Proc,
    Up,
    accept_call,
    audio_packets,
    call_view,
    count_frames,
    frames_decoded,
    hang_up,
    make_clip,
    start_call,
    subprocess_env,
    wait_call_over,
    wait_frames_increase,
    wait_js,
    wait_until,
)

#: How long a call may take to give up on a callee that does not answer (the page's
#: call timeout, the trio's --ring-timeout, plus the time to post and to cancel).
GIVE_UP_S = 120.0


def newest_call(up: Up) -> dict[str, Any]:
    calls = up.ok("GET", "/api/calls?limit=1")["calls"]
    assert calls, f"{up.name} logged no call"
    call: dict[str, Any] = calls[0]
    return call


def wait_logged(up: Up, state: str, direction: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """The newest call in ``up``'s log once it is in ``state``."""
    def done() -> dict[str, Any] | None:
        calls = up.ok("GET", "/api/calls?limit=1")["calls"]
        if calls and calls[0]["state"] == state and calls[0]["direction"] == direction:
            return dict(calls[0])
        return None

    return wait_until(done, timeout_s, f"{up.name}'s newest call {direction} {state}")


def video_senders(page: Any) -> int:
    return int(page.evaluate("""() => (window.__pcs || []).flatMap((pc) => pc.getSenders())
        .filter((s) => s.track && s.track.kind === "video").length"""))


def test_video_call_between_two_browsers_through_the_dht(
        trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    alice, bob = trio["alice"], trio["bob"]
    pa, pb = app(alice), app(bob)
    start_call(pa, "bob", "video")
    accept_call(pb)
    assert pb.evaluate("() => window.__notifications") == []  # the tab is visible
    for page in (pa, pb):
        first = wait_frames_increase(page, 0)
        wait_frames_increase(page, first)  # still coming
        assert page.locator('video[data-testid="remote-video"]').is_visible()
        assert page.locator('video[data-testid="local-video"]').is_visible()
    assert alice.ok("GET", "/api/calls?limit=1")["calls"][0]["state"] == "answered"
    hang_up(pa)
    wait_call_over(pa)
    wait_call_over(pb)  # seen by the other side too
    out, inc = wait_logged(alice, "ended", "out"), wait_logged(bob, "ended", "in")
    assert out["to"] == bob.contact_id and out["media"] == "video", out
    assert inc["from"] == alice.contact_id and inc["media"] == "video", inc


def test_audio_only_call(trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    bob, carol = trio["bob"], trio["carol"]
    pb, pc = app(bob), app(carol)
    start_call(pb, "carol", "audio")
    accept_call(pc)
    for page in (pb, pc):
        first = wait_until(lambda p=page: audio_packets(p), 60, "audio packets")
        wait_until(lambda p=page, n=first: audio_packets(p) > n, 60, "more audio packets")
        assert video_senders(page) == 0
        assert frames_decoded(page) == 0
    assert wait_logged(bob, "answered", "out")["media"] == "audio"
    hang_up(pc)  # the callee hangs up this time
    wait_call_over(pc)
    wait_call_over(pb)
    assert wait_logged(bob, "ended", "out")["media"] == "audio"


# -- refused callers see what an offline callee shows ----------------------------------------


def caller_outcome(page: Any, callee: str) -> dict[str, Any]:
    """What the caller's page showed of its call from the click to the end (the texts of
    its state line, the callee's name taken out) and how its call object ended."""
    seen = page.evaluate("""() => {
        const calls = (window.hailingCalls && window.hailingCalls.calls) || [];
        const c = calls[calls.length - 1];
        return { texts: window.__callStates,
                 call: c ? { state: c.state, reason: c.reason || null, media: c.media } : null };
    }""")
    name = re.compile(rf"\b{re.escape(callee)}\b", re.IGNORECASE)
    return {"texts": [name.sub("NAME", t) for t in seen["texts"]], "call": seen["call"]}


def without_who(call: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in call.items()
            if k not in ("call", "to", "contact", "at", "ended_at", "duration_s")}


@pytest.mark.parametrize("refusal", ["blocked", "busy"])
def test_a_refused_caller_sees_what_an_offline_callee_shows(
        trio: dict[str, Up], app: Callable[[Up], Any], refusal: str) -> None:
    """alice calls dave (offline) while bob calls carol, who blocked him (or is busy):
    both callers' pages end the same way; carol's page never rang nor made an answer."""
    alice, bob, carol = trio["alice"], trio["bob"], trio["carol"]
    if refusal == "blocked":
        carol.ok("POST", f"/api/contacts/{bob.contact_id}/block")
    else:
        carol.ok("POST", "/api/status", {"status": "busy"})
    try:
        pa, pb, pc = app(alice), app(bob), app(carol)
        mark = carol.mark()
        start_call(pa, "dave", "video")
        start_call(pb, "carol", "video")
        out_offline = wait_logged(alice, "failed", "out", GIVE_UP_S)
        out_refused = wait_logged(bob, "failed", "out", GIVE_UP_S)
        for page in (pa, pb):
            wait_call_over(page)
        assert without_who(out_offline) == without_who(out_refused)
        assert caller_outcome(pa, "dave") == caller_outcome(pb, "carol")

        # The callee's browser never heard of it.
        assert pc.evaluate(PC_COUNTS)["pcs"] == 0
        assert pc.evaluate(PC_COUNTS)["answers"] == 0
        assert pc.locator('[data-testid="incoming-call"]').is_hidden()
        assert not [e for e in carol.events(mark) if e["event"] in ("ring", "missed")]
        if refusal == "busy":
            # A contact calling a busy callee is refused, and logged on the callee only.
            refused = wait_logged(carol, "refused", "in")
            assert refused["from"] == bob.contact_id and refused.get("reason") == "busy"
        else:
            # carol does not even listen where a blocked caller posts.
            calls = carol.ok("GET", "/api/calls?limit=5")["calls"]
            assert all(c["state"] == "refused" for c in calls
                       if c.get("from") == bob.contact_id and c["at"] >= out_refused["at"])
    finally:
        if refusal == "blocked":
            carol.ok("POST", f"/api/contacts/{bob.contact_id}/allow")
        else:
            carol.ok("POST", "/api/status", {"status": "available"})


# -- the tab is hidden ----------------------------------------------------------------------


def test_a_hidden_tab_shows_a_system_notification(
        trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    alice, bob = trio["alice"], trio["bob"]
    pa, pb = app(alice), app(bob)
    assert pb.evaluate("() => Notification.permission") == "granted"
    pb.evaluate("() => window.__setHidden(true)")
    start_call(pa, "bob", "audio")
    shown = wait_js(pb, "() => window.__notifications.length && window.__notifications")
    assert any("alice" in (n["title"] + " " + n["body"]) for n in shown), shown
    pb.evaluate("() => window.__setHidden(false)")
    accept_call(pb)
    wait_until(lambda: audio_packets(pb), 60, "audio packets")
    hang_up(pa)
    wait_call_over(pb)


# -- a Python peer ----------------------------------------------------------------------------


def test_a_browser_calls_a_python_peer_that_plays_a_file_and_records(
        trio: dict[str, Up], app: Callable[[Up], Any], net: str, tmp_path: Path) -> None:
    """bot runs ``hailing up --auto-answer --play clip.mp4 --record rec.mp4``: the
    browser sees the clip's frames and hears its sound, the bot logs the call, and its
    recording of the browser (one file per call) holds video and audio frames."""
    alice = trio["alice"]
    clip = make_clip(tmp_path / "clip.mp4")
    bot = Up("bot", alice.data_dir.parent / "bot", ["--bootstrap", net], "--auto-answer",
             "--play", str(clip), "--loop", "--record", str(tmp_path / "rec.mp4"))
    try:
        pa = app(alice)
        start_call(pa, "bot", "video")
        first = wait_frames_increase(pa, 0)  # the clip, played by the bot
        wait_frames_increase(pa, first)
        wait_until(lambda: audio_packets(pa), 60, "audio packets")
        connected = bot.wait_event(event="connected", **{"from": alice.contact_id})
        assert sorted(connected.get("media", [])) == ["audio", "video"], connected
        wait_logged(bot, "answered", "in")
        # Let the bot record a few seconds of the browser's camera.
        wait_until(lambda: frames_decoded(pa) > first + 60, 60, "more frames")
        # the browser's video reached the bot's recorder (its status counts the frames)
        wait_until(lambda: [c for c in bot.ok("GET", "/api/status")["media_calls"]
                            if c["frames"].get("video", 0) >= 5], 60.0,
                   "bot receives the browser's video")
        hang_up(pa)
        wait_call_over(pa)
        bot.wait_event(event="closed", **{"from": alice.contact_id})
        wait_logged(bot, "ended", "in")
    finally:
        assert bot.stop() == 0, bot.p.output()
    recorded = sorted(tmp_path.glob("rec-alice-*.mp4"))  # one file per call
    assert len(recorded) == 1, sorted(p.name for p in tmp_path.iterdir())
    counts = count_frames(recorded[0])
    assert counts["video"] > 0 and counts["audio"] > 0, counts


def test_a_python_peer_calls_a_browser_plays_a_file_and_records_it(
        trio: dict[str, Up], app: Callable[[Up], Any], net: str, tmp_path: Path) -> None:
    """bot runs ``hailing call alice --play clip.mp4 --record alice.webm --duration 6``
    (its own one-shot node): alice's page rings, accepts, shows the clip's frames; the
    call ends after its duration, seen by both; the bot's recording holds the browser's
    video and audio."""
    alice = trio["alice"]
    clip = make_clip(tmp_path / "clip.mp4")
    recording = tmp_path / "alice.webm"
    pa = app(alice)
    call = Proc([*HAILING, "call", "alice", "--data-dir", str(alice.data_dir.parent / "bot"),
                 "--bootstrap", net, "--play", str(clip), "--record", str(recording),
                 "--duration", "6"], subprocess_env())
    try:
        accept_call(pa)
        try:
            first_line = call.line(0)
        except AssertionError as exc:  # the bot gave up: what did the callee's page see?
            raise AssertionError(f"{exc}\nalice's page: {call_view(pa)}") from None
        connected = json.loads(first_line)
        assert connected["event"] == "connected" and connected["coupler"] == "dht"
        assert sorted(connected["received"]) == ["audio", "video"], connected
        first = wait_frames_increase(pa, 0)  # the clip, played by the bot
        wait_frames_increase(pa, first)
        ended = json.loads(call.line(1, timeout=60))
        assert call.proc.wait(timeout=30) == 0, call.output()
    finally:
        call.stop()
    assert ended["reason"] == "the call's duration was reached", ended
    assert ended["recording"] == str(recording) and ended["frames"]["video"] > 0, ended
    wait_call_over(pa)
    wait_logged(alice, "ended", "in")
    counts = count_frames(recording)
    assert counts["video"] > 0 and counts["audio"] > 0, counts
