"""The in-call controls of the web app and the call channel between two browsers: mute,
camera off, live stats, video added to an audio call and a screen share (both
renegotiated over the call's data channel, also when both sides add video at once), cancel
while ringing, decline, and the stats summary.

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

    # Mute and camera off: the tracks are disabled, and bob's page is told (a "media"
    # frame on the channel): it says alice is muted and shows her initials, not black.
    muted = pb.locator('[data-testid="peer-muted"]')
    assert muted.is_hidden()
    pa.locator('[data-testid="mute"]').click()
    assert [s["enabled"] for s in current(pa)["senders"] if s["kind"] == "audio"] == [False]
    assert pa.locator('[data-testid="mute"]').get_attribute("aria-pressed") == "true"
    muted.wait_for(state="visible", timeout=10_000)
    pa.locator('[data-testid="mute"]').click()
    assert [s["enabled"] for s in current(pa)["senders"] if s["kind"] == "audio"] == [True]
    muted.wait_for(state="hidden", timeout=10_000)

    remote_video_shown = """() => document.querySelector('[data-testid="call-view"]')
                            .classList.contains("hl-has-remote-video")"""
    assert pb.evaluate(remote_video_shown)
    pa.locator('[data-testid="camera-off"]').click()
    assert [s["enabled"] for s in current(pa)["senders"] if s["kind"] == "video"] == [False]
    wait_js(pb, f"() => !({remote_video_shown})()")
    pa.locator('[data-testid="camera-off"]').click()
    assert [s["enabled"] for s in current(pa)["senders"] if s["kind"] == "video"] == [True]
    wait_js(pb, remote_video_shown)

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


def test_both_sides_add_video_at_once(trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    """Two offers cross on the channel: perfect negotiation (the callee polite) settles it."""
    alice, bob = trio["alice"], trio["bob"]
    pa, pb = app(alice), app(bob)
    start_call(pa, "bob", "audio")
    accept_call(pb)
    wait_connected(pa, pb)
    for page in (pa, pb):
        page.evaluate("() => { window.hailingCalls.current.addVideo(); }")
    for page in (pa, pb):
        first = wait_frames_increase(page, 0)
        wait_frames_increase(page, first)
        wait_js(page, "() => window.hailingCalls.pc.signalingState === 'stable'")
    assert call_state(pa) == call_state(pb) == "connected"
    hang_up(pb)
    wait_call_over(pa)
    wait_call_over(pb)


def test_a_video_call_answered_with_sound_only(
        trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    alice, carol = trio["alice"], trio["carol"]
    pa, pc = app(alice), app(carol)
    start_call(pa, "carol", "video")
    panel = pc.locator('[data-testid="incoming-call"]')
    panel.wait_for(state="visible", timeout=60_000)
    panel.locator('[data-testid="accept-audio"]').click()
    wait_connected(pa, pc)
    first = wait_frames_increase(pc, 0)  # carol sees alice
    wait_frames_increase(pc, first)
    assert not [s for s in current(pc)["senders"] if s["kind"] == "video"]
    assert frames_decoded(pa) == 0
    pc.locator('[data-testid="add-video"]').click()  # carol's camera after all
    first = wait_frames_increase(pa, 0)
    wait_frames_increase(pa, first)
    hang_up(pc)
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


#: JS: summarizeStats (callstats.js) on hand-made reports: the selected pair's candidate
#: types, round trip, codecs, and rates and loss over the interval since the last summary.
SUMMARY = """
async () => {
  const { summarizeStats } = await import("/callstats.js");
  const report = (entries) => new Map(entries.map((e) => [e.id, e]));
  const common = [
    { id: "T", type: "transport", selectedCandidatePairId: "P2" },
    { id: "P1", type: "candidate-pair", state: "succeeded", nominated: true,
      localCandidateId: "L1", remoteCandidateId: "R1", currentRoundTripTime: 0.5 },
    { id: "P2", type: "candidate-pair", state: "succeeded", nominated: true,
      localCandidateId: "L2", remoteCandidateId: "R2", currentRoundTripTime: 0.012 },
    { id: "L1", type: "local-candidate", candidateType: "host", protocol: "udp" },
    { id: "L2", type: "local-candidate", candidateType: "relay", protocol: "udp",
      relayProtocol: "tcp", address: "192.0.2.1", port: 3478 },
    { id: "R2", type: "remote-candidate", candidateType: "srflx", address: "198.51.100.7", port: 5000 },
    { id: "C1", type: "codec", mimeType: "video/VP8", clockRate: 90000 },
    { id: "C2", type: "codec", mimeType: "audio/opus", clockRate: 48000 },
  ];
  const first = summarizeStats(report([...common,
    { id: "O1", type: "outbound-rtp", kind: "video", bytesSent: 1000, codecId: "C1" },
    { id: "I1", type: "inbound-rtp", kind: "audio", bytesReceived: 500, packetsReceived: 90,
      packetsLost: 10, codecId: "C2" },
    { id: "I2", type: "inbound-rtp", kind: "video", bytesReceived: 0, packetsReceived: 0,
      framesDecoded: 7, frameWidth: 640, frameHeight: 480, framesPerSecond: 30 }]), null, 1000);
  const second = summarizeStats(report([...common,
    { id: "O1", type: "outbound-rtp", kind: "video", bytesSent: 126000, codecId: "C1" },
    { id: "I1", type: "inbound-rtp", kind: "audio", bytesReceived: 63000, packetsReceived: 190,
      packetsLost: 10, codecId: "C2" },
    { id: "I2", type: "inbound-rtp", kind: "video", bytesReceived: 0, packetsReceived: 0,
      framesDecoded: 37, frameWidth: 640, frameHeight: 480, framesPerSecond: 30 }]), first, 2000);
  const noTransport = summarizeStats(report(common.filter((e) => e.id !== "T" && e.id !== "P2")), null, 0);
  return { first, second, noTransport };
}
"""


def test_the_stats_summary(trio: dict[str, Up], app: Callable[[Up], Any]) -> None:
    out = app(trio["alice"]).evaluate(SUMMARY)
    first, second = out["first"], out["second"]
    assert first["path"]["local"] == "relay" and first["path"]["remote"] == "srflx"
    assert first["path"]["relayProtocol"] == "tcp"
    assert first["path"]["remoteAddress"] == "198.51.100.7:5000"
    assert first["rttMs"] == 12
    assert first["codecs"] == {"send video": "VP8/90000", "recv audio": "opus/48000"}
    assert first["sendKbps"] is None  # no rate from one sample
    assert first["lossPct"] == 10  # 10 lost of 100 so far
    assert first["resolution"] == "640\u00d7480" and first["framesDecoded"] == 7
    assert second["sendKbps"] == 1000  # 125,000 bytes in one second
    assert second["recvKbps"] == 500
    assert second["lossPct"] == 0  # none lost in the last second
    # Without a transport naming the pair: the nominated, succeeded one.
    assert out["noTransport"]["path"]["local"] == "host"
    assert out["noTransport"]["rttMs"] == 500
