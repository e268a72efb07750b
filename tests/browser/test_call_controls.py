"""The in-call controls of the web app and the call channel between two browsers: mute,
camera off, live stats, video added to an audio call and a screen share (both
renegotiated over the call's data channel), cancel while ringing, decline.

Nothing here is timed: media is checked by counters that must grow, every wait has a
generous deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from browser_harness import (
    Up,
    accept_call,
    frames_decoded,
    hang_up,
    start_call,
    wait_call_over,
    wait_frames_increase,
    wait_js,
    wait_until,
)

#: JS: the page's current call, as plain data.
CURRENT = """
() => {
  const c = window.hailingCalls && window.hailingCalls.current;
  if (!c) return null;
  const senders = c.pc ? c.pc.getSenders().filter((s) => s.track).map((s) => ({
    kind: s.track.kind, enabled: s.track.enabled, label: s.track.label })) : [];
  return { state: c.state, reason: c.reason, peerReneg: c.peerReneg, verified: c.verified,
           renegotiations: c.counters.renegotiations, senders,
           screen: !!c.screenTrack, pings: c.counters.pings, pongs: c.counters.pongs };
}
"""


def current(page: Any) -> dict[str, Any]:
    data: dict[str, Any] = page.evaluate(CURRENT)
    assert data is not None, "no current call on the page"
    return data


def call_state(page: Any) -> str:
    return str(page.locator('[data-testid="call-state"]').get_attribute("data-state"))


def wait_connected(*pages: Any) -> None:
    for page in pages:
        wait_js(page, """() => document.querySelector('[data-testid="call-state"]')
                         ?.dataset.state === "connected" """)


def close_ended(page: Any) -> None:
    """Dismiss an ended call's view, if one is still shown."""
    button = page.locator('[data-testid="call-close"]')
    if button.is_visible():
        button.click()


def test_mute_camera_and_stats_in_a_video_call(
        trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    alice, bob = trio["alice"], trio["bob"]
    pa, pb = app(alice), app(bob)
    start_call(pa, "bob", "video")
    panel = pb.locator('[data-testid="incoming-call"]')
    panel.wait_for(state="visible", timeout=60_000)
    assert "alice" in panel.inner_text()
    assert panel.get_attribute("data-media") == "video"
    assert pb.evaluate("() => window.hailingCalls.ringTonePlaying")
    accept_call(pb)
    wait_connected(pa, pb)
    assert not pb.evaluate("() => window.hailingCalls.ringTonePlaying")
    assert current(pa)["peerReneg"] and current(pb)["peerReneg"]  # both are browsers

    # The channel's keepalive runs both ways.
    wait_js(pa, "() => window.hailingCalls.current.counters.pongs > 1")
    wait_js(pb, "() => window.hailingCalls.current.counters.pings > 1")

    pa.locator('[data-testid="mute"]').click()
    assert [s["enabled"] for s in current(pa)["senders"] if s["kind"] == "audio"] == [False]
    assert pa.locator('[data-testid="mute"]').get_attribute("aria-pressed") == "true"
    pa.locator('[data-testid="mute"]').click()
    assert [s["enabled"] for s in current(pa)["senders"] if s["kind"] == "audio"] == [True]

    pa.locator('[data-testid="camera-off"]').click()
    assert [s["enabled"] for s in current(pa)["senders"] if s["kind"] == "video"] == [False]
    pa.locator('[data-testid="camera-off"]').click()
    assert [s["enabled"] for s in current(pa)["senders"] if s["kind"] == "video"] == [True]

    # Live stats: the ICE path (loopback host candidates here), codecs, numbers.
    stats = pa.locator('[data-testid="call-stats"]')
    wait_js(pa, """() => document.querySelector('[data-testid="call-stats"]')
                   ?.dataset.path === "host/host" """)
    wait_js(pa, """() => document.querySelector('[data-testid="call-stats"]')
                   ?.dataset.sendKbps > 0""")
    text = stats.inner_text()
    for label in ("ICE path", "Round trip", "Bitrate", "Codecs", "Packet loss"):
        assert label in text, text
    assert "host ↔ host" in text
    assert "opus" in text.lower() and stats.get_attribute("data-codecs")

    hang_up(pb)
    wait_call_over(pa)
    wait_call_over(pb)
    assert "bob hung up" in pa.locator('[data-testid="call-state"]').inner_text()


def test_video_added_to_an_audio_call_and_a_screen_share_by_renegotiation(
        trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    alice, carol = trio["alice"], trio["carol"]
    pa, pc = app(alice), app(carol)
    start_call(pa, "carol", "audio")
    accept_call(pc)
    wait_connected(pa, pc)
    assert frames_decoded(pa) == 0 and frames_decoded(pc) == 0
    assert pa.locator('[data-testid="camera-off"]').is_hidden()

    add = pa.locator('[data-testid="add-video"]')
    wait_js(pa, """() => !document.querySelector('[data-testid="add-video"]').disabled""")
    add.click()
    first = wait_frames_increase(pc, 0)  # carol sees alice's camera
    wait_frames_increase(pc, first)
    assert pa.locator('[data-testid="camera-off"]').is_visible()
    assert add.is_hidden()
    assert current(pa)["renegotiations"] >= 1 and current(pc)["renegotiations"] >= 1

    # carol shares her screen: she sends no video yet, so a new track, renegotiated by
    # the polite side this time.
    pc.locator('[data-testid="screen-share"]').click()
    wait_until(lambda: current(pc)["screen"], 30, "carol's screen share")
    first = wait_frames_increase(pa, 0)
    wait_frames_increase(pa, first)
    pc.locator('[data-testid="screen-share"]').click()  # stop
    wait_until(lambda: not current(pc)["screen"], 30, "the share to stop")

    hang_up(pa)
    wait_call_over(pa)
    wait_call_over(pc)


def test_a_screen_share_in_a_video_call_replaces_the_camera(
        trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    bob, carol = trio["bob"], trio["carol"]
    pb, pc = app(bob), app(carol)
    start_call(pb, "carol", "video")
    accept_call(pc)
    wait_connected(pb, pc)
    wait_frames_increase(pc, 0)
    before = current(pb)
    pb.locator('[data-testid="screen-share"]').click()
    wait_until(lambda: current(pb)["screen"], 30, "bob's screen share")
    after = current(pb)
    videos = [s for s in after["senders"] if s["kind"] == "video"]
    assert len(videos) == 1, after  # the same sender, another track
    assert videos[0]["label"] != next(s for s in before["senders"] if s["kind"] == "video")["label"]
    assert after["renegotiations"] == before["renegotiations"]  # replaceTrack only
    n = wait_frames_increase(pc, 0)
    wait_frames_increase(pc, n)
    pb.locator('[data-testid="screen-share"]').click()
    wait_until(lambda: not current(pb)["screen"], 30, "the share to stop")
    hang_up(pb)
    wait_call_over(pb)
    wait_call_over(pc)


def test_cancel_while_ringing_and_decline(trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    alice, bob = trio["alice"], trio["bob"]
    pa, pb = app(alice), app(bob)

    # alice gives up while bob's page rings: the panel goes, the call is missed for bob.
    start_call(pa, "bob", "audio")
    panel = pb.locator('[data-testid="incoming-call"]')
    panel.wait_for(state="visible", timeout=60_000)
    assert pa.locator('[data-testid="hang-up"]').inner_text().strip() == "Cancel"
    hang_up(pa)
    panel.wait_for(state="detached", timeout=60_000)
    assert not pb.evaluate("() => window.hailingCalls.ringTonePlaying")
    assert call_state(pa) == "ended"
    wait_until(lambda: bob.ok("GET", "/api/calls?limit=1")["calls"][0]["state"] == "missed",
               60, "bob's log: missed")
    assert alice.ok("GET", "/api/calls?limit=1")["calls"][0]["state"] == "cancelled"

    # bob declines: nothing goes back, alice's page ends as for an absent callee.
    close_ended(pa)
    start_call(pa, "bob", "video")
    panel.wait_for(state="visible", timeout=60_000)
    pb.locator('[data-testid="decline"]').click()
    panel.wait_for(state="detached", timeout=10_000)
    wait_js(pa, """() => document.querySelector('[data-testid="call-state"]')
                   ?.dataset.state === "ended" """, timeout_s=120)
    assert pa.locator('[data-testid="call-state"]').inner_text() == "Call ended: no answer"
    assert pb.evaluate("() => window.__answers") == 0
    assert bob.ok("GET", "/api/calls?limit=1")["calls"][0]["state"] == "declined"
