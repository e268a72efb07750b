// The in-call view: remote and local video, the state line, the controls (mute, camera,
// add video, screen share, stats, hang up) and the live stats of one Call (call.js).
// Built with DOM calls only; looks come from call.css.

const SVG = "http://www.w3.org/2000/svg";

// Icon paths (24x24).
const ICONS = {
  mic: "M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z",
  video: "M17 10.5V7a1 1 0 0 0-1-1H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1v-3.5l4 4v-11l-4 4z",
  screen: "M20 3H4a2 2 0 0 0-2 2v11a2 2 0 0 0 2 2h5v2h6v-2h5a2 2 0 0 0 2-2V5a2 2 0 0 0-2-2zm0 13H4V5h16v11zm-8-9-4 4h3v3h2v-3h3l-4-4z",
  stats: "M5 9.2h3V19H5V9.2zM10.6 5h2.8v14h-2.8V5zm5.6 8H19v6h-2.8v-6z",
  phone: "M6.62 10.79a15.05 15.05 0 0 0 6.59 6.59l2.2-2.2a1 1 0 0 1 1.01-.24c1.12.37 2.33.57 3.58.57a1 1 0 0 1 1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 1 0 0 1-.25 1.02l-2.2 2.2z",
  hangup: "M12 9c-1.6 0-3.15.25-4.6.72v3.1c0 .39-.23.74-.56.9-.98.49-1.87 1.12-2.66 1.85-.18.18-.43.28-.7.28-.28 0-.53-.11-.71-.29L.29 13.08a.96.96 0 0 1-.29-.7c0-.28.11-.53.29-.71C3.34 8.78 7.46 7 12 7s8.66 1.78 11.71 4.67c.18.18.29.43.29.71 0 .28-.11.53-.29.71l-2.48 2.48c-.18.18-.43.29-.71.29-.27 0-.52-.11-.7-.28a11.3 11.3 0 0 0-2.67-1.85 1 1 0 0 1-.56-.9v-3.1C15.15 9.25 13.6 9 12 9z",
  bell: "M12 22a2 2 0 0 0 2-2h-4a2 2 0 0 0 2 2zm6-6V11c0-3.07-1.64-5.64-4.5-6.32V4a1.5 1.5 0 0 0-3 0v.68C7.63 5.36 6 7.92 6 11v5l-2 2v1h16v-1l-2-2z",
  close: "M19 6.41 17.59 5 12 10.59 6.41 5 5 6.41 10.59 12 5 17.59 6.41 19 12 13.41 17.59 19 19 17.59 13.41 12z",
};

export function icon(name, { slash = false } = {}) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", `hl-icon hl-icon-${name}`);
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  if (slash) {
    const line = document.createElementNS(SVG, "path");
    line.setAttribute("d", "M3.3 2 2 3.3 20.7 22 22 20.7z");
    line.setAttribute("class", "hl-slash");
    svg.append(line);
  }
  return svg;
}

// el("div", {class: "x", "data-testid": "y"}, child, "text", ...)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    node.setAttribute(k, v === true ? "" : String(v));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function initials(name) {
  const words = String(name || "?").trim().split(/\s+/).filter(Boolean);
  // as the contact list does: two words give two letters, one word one
  return (words.length > 1 ? words[0][0] + words[words.length - 1][0] : (words[0] || "?")[0]).toUpperCase();
}

const STATE_TEXT = {
  calling: (c) => `Calling ${c.name}…`,
  ringing: (c) => `${c.name} is calling`,
  connecting: () => "Connecting…",
  connected: () => "Connected",
  ended: (c) => (c.reason ? `Call ended: ${c.reason}` : "Call ended"),
};

function fmtKbps(v) {
  if (v === null || v === undefined) return "–";
  return v >= 1000 ? `${(v / 1000).toFixed(2)} Mbps` : `${Math.round(v)} kbps`;
}

function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const mm = String(Math.floor(s / 60) % 60).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${mm}:${ss}` : `${mm}:${ss}`;
}

function control(testid, iconName, label, extra = {}) {
  const b = el("button", { class: "hl-ctl", type: "button", "data-testid": testid, title: label, "aria-label": label, ...extra },
    el("span", { class: "hl-round" }, icon(iconName)), el("span", { class: "hl-ctl-label" }, label));
  return b;
}

export class CallView {
  constructor({ onClose, onRedial }) {
    this._onClose = onClose;
    this.call = null;
    this.lingerMs = 8000; // how long an ended call stays on screen
    this._unbind = [];
    this._ticker = null;
    this._closeTimer = null;

    this.name = el("div", { class: "hl-call-name", "data-testid": "call-name" });
    this.stateLine = el("div", { class: "hl-call-state", "data-testid": "call-state", role: "status" });
    this.duration = el("div", { class: "hl-call-duration", "data-testid": "call-duration" });
    const head = el("header", { class: "hl-call-head" },
      el("div", { class: "hl-call-who" }, this.name, el("div", { class: "hl-call-sub" }, this.stateLine, this.duration)));

    this.remote = el("video", { class: "hl-remote", "data-testid": "remote-video", autoplay: true, playsinline: true });
    this.local = el("video", { class: "hl-local hl-mirror", "data-testid": "local-video", autoplay: true, playsinline: true, muted: true });
    this.local.muted = true;
    this.avatar = el("div", { class: "hl-avatar hl-avatar-big" });
    this.statsBox = el("dl", { class: "hl-stats", "data-testid": "call-stats" });
    this.toast = el("div", { class: "hl-toast", role: "alert", hidden: true });
    this.peerMuted = el("div", { class: "hl-peer-muted", "data-testid": "peer-muted", hidden: true },
      icon("mic", { slash: true }), "Muted");
    const stage = el("div", { class: "hl-stage" }, this.remote, this.avatar, this.local, this.statsBox, this.peerMuted, this.toast);

    this.mute = control("mute", "mic", "Mute", { "aria-pressed": "false" });
    this.camera = control("camera-off", "video", "Camera off", { "aria-pressed": "false" });
    this.addVideo = control("add-video", "video", "Start video");
    this.share = control("screen-share", "screen", "Share screen", { "aria-pressed": "false" });
    this.statsToggle = control("stats-toggle", "stats", "Stats", { "aria-pressed": "true" });
    this.hangUp = control("hang-up", "hangup", "Hang up");
    this.hangUp.classList.add("hl-ctl-hangup");
    this.redial = control("call-again", "phone", "Call again");
    this.redial.classList.add("hl-ctl-redial");
    this.redial.addEventListener("click", () => this.call && onRedial(this.call));
    this.done = control("call-close", "close", "Close");
    this.done.addEventListener("click", () => onClose());
    const bar = el("footer", { class: "hl-controls" }, this.mute, this.camera, this.addVideo, this.share,
      this.statsToggle, this.hangUp, this.redial, this.done);

    this.root = el("section", { class: "hl-call", "data-testid": "call-view", "aria-label": "Call", hidden: true }, head, stage, bar);
    // On a phone-sized screen the stats start hidden: they would cover the picture.
    if (window.matchMedia?.("(max-width: 600px)").matches) {
      this.statsBox.hidden = true;
      this.statsToggle.setAttribute("aria-pressed", "false");
    }
    this._wire();
  }

  _wire() {
    this.mute.addEventListener("click", () => this.call?.setMuted(!this.call.muted));
    this.camera.addEventListener("click", () => this.call?.setCameraOff(!this.call.cameraOff));
    this.addVideo.addEventListener("click", () => this._try(() => this.call?.addVideo()));
    this.share.addEventListener("click", () => this._try(() => (this.call?.screenTrack ? this.call.stopScreenShare() : this.call?.startScreenShare())));
    this.statsToggle.addEventListener("click", () => {
      const on = this.statsBox.hidden;
      this.statsBox.hidden = !on;
      this.statsToggle.setAttribute("aria-pressed", String(on));
    });
    this.hangUp.addEventListener("click", () => this.call?.hangUp());
  }

  async _try(fn) {
    try {
      await fn();
    } catch (err) {
      if (err && err.name === "NotAllowedError") this.flash("Screen sharing was not allowed");
      else this.flash((err && err.message) || String(err));
    }
  }

  show(call) {
    for (const off of this._unbind) off();
    this._unbind = [];
    clearTimeout(this._closeTimer);
    this.call = call;
    const on = (type, fn) => {
      call.addEventListener(type, fn);
      this._unbind.push(() => call.removeEventListener(type, fn));
    };
    on("state", () => this.render());
    on("tracks", () => this.render());
    on("stats", () => this.renderStats());
    on("message", (e) => this.flash(`${call.name}: ${e.detail.text}`));
    on("notice", (e) => this.flash(e.detail.text));
    this.name.textContent = call.name;
    this.avatar.textContent = initials(call.name);
    this.statsBox.replaceChildren();
    this.local.srcObject = call.localStream;
    this.remote.srcObject = call.remoteStream;
    this.remote.play().catch(() => {});
    this._watchFrames(call);
    clearInterval(this._ticker);
    this._ticker = setInterval(() => this._tick(), 500);
    this.root.hidden = false;
    this.render();
    this.hangUp.focus({ preventScroll: true }); // keyboard users land on the controls
  }

  hide() {
    this.root.hidden = true;
    clearInterval(this._ticker);
    this.local.srcObject = null;
    this.remote.srcObject = null;
  }

  flash(text) {
    this.toast.textContent = text;
    this.toast.hidden = false;
    clearTimeout(this._toastTimer);
    this._toastTimer = setTimeout(() => { this.toast.hidden = true; }, 4000);
    if (this.root.hidden) this.root.hidden = !this.call;
  }

  // The first remote frame (for the benchmark) and a count of frames painted.
  _watchFrames(call) {
    const video = this.remote;
    if (typeof video.requestVideoFrameCallback !== "function") return;
    const onFrame = (_t, meta) => {
      if (this.call !== call || !call.active) return;
      call.remoteFrames = (call.remoteFrames || 0) + 1;
      if (call.firstRemoteFrameAt === undefined) {
        call.firstRemoteFrameAt = performance.timeOrigin + performance.now();
        call.timeline.firstRemoteFrame = call.firstRemoteFrameAt;
        call.firstFrameMeta = { width: meta.width, height: meta.height };
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  _tick() {
    const c = this.call;
    if (!c) return;
    if (c.state === "connected" && c.timeline.connected) {
      this.duration.textContent = fmtDuration(performance.timeOrigin + performance.now() - c.timeline.connected);
    }
  }

  render() {
    const c = this.call;
    if (!c) return;
    const st = c.state;
    this.root.dataset.state = st;
    this.root.dataset.media = c.media;
    this.stateLine.dataset.state = st;
    this.stateLine.textContent = STATE_TEXT[st](c);
    if (st !== "connected") this.duration.textContent = "";
    const live = st === "connected";
    const remoteVideo = !c.peerCameraOff
      && c.remoteStream.getVideoTracks().some((t) => t.readyState === "live" && !t.muted);
    this.peerMuted.hidden = !(c.peerMuted && st === "connected");
    this.root.classList.toggle("hl-has-remote-video", remoteVideo && st !== "ended");
    const localVideo = c.hasLocalVideo && st !== "ended";
    this.root.classList.toggle("hl-has-local-video", localVideo);
    this.local.classList.toggle("hl-mirror", !c.screenTrack);
    this.root.classList.toggle("hl-camera-off", c.cameraOff && !c.screenTrack);
    if (st === "ended") this.remote.pause?.(); else this.remote.play().catch(() => {});

    setPressed(this.mute, c.muted, c.muted ? "Unmute" : "Mute", "mic");
    const ended = st === "ended";
    this.mute.hidden = ended;
    this.camera.hidden = ended || !c.hasLocalVideo || !!c.screenTrack;
    setPressed(this.camera, c.cameraOff, c.cameraOff ? "Camera on" : "Camera off", "video");
    this.addVideo.hidden = c.hasLocalVideo || ended;
    this.addVideo.disabled = !c.canRenegotiate;
    this.addVideo.title = c.canRenegotiate ? "Start video"
      : live ? "The other side cannot add video during a call" : "Once connected";
    this.share.disabled = !c.canShareScreen;
    this.share.hidden = ended || typeof navigator.mediaDevices?.getDisplayMedia !== "function";
    this.statsToggle.hidden = ended;
    this.root.classList.toggle("hl-ended", ended);
    this.redial.hidden = !ended;
    this.done.hidden = !ended;
    setPressed(this.share, !!c.screenTrack, c.screenTrack ? "Stop sharing" : "Share screen", "screen", false);
    this.hangUp.hidden = ended;
    this.hangUp.querySelector(".hl-ctl-label").textContent = st === "calling" ? "Cancel" : "Hang up";
    if (ended) {
      clearTimeout(this._closeTimer);
      this._closeTimer = setTimeout(() => { if (this.call === c) this._onClose(); }, this.lingerMs);
    }
  }

  renderStats() {
    const s = this.call?.stats;
    if (!s) return;
    const path = s.path ? `${s.path.local} ↔ ${s.path.remote}${s.path.protocol ? ` · ${s.path.protocol}` : ""}` : "–";
    const codecs = [...new Set(Object.values(s.codecs))].join(", ") || "–";
    const rows = [
      ["path", "ICE path", path],
      ["rtt", "Round trip", s.rttMs === null ? "–" : `${s.rttMs.toFixed(s.rttMs < 10 ? 1 : 0)} ms`],
      ["bitrate", "Bitrate", `↑ ${fmtKbps(s.sendKbps)}  ↓ ${fmtKbps(s.recvKbps)}`],
      ["codec", "Codecs", codecs],
      ["loss", "Packet loss", `${(s.lossPct || 0).toFixed(1)} %`],
    ];
    if (s.resolution) rows.push(["video", "Video in", `${s.resolution}${s.framesPerSecond ? ` · ${Math.round(s.framesPerSecond)} fps` : ""}`]);
    this.statsBox.replaceChildren(...rows.map(([key, label, value]) =>
      el("div", { class: "hl-stat" }, el("dt", {}, label), el("dd", { "data-stat": key }, value))));
    const d = this.statsBox.dataset;
    d.path = s.path ? `${s.path.local}/${s.path.remote}` : "";
    d.rttMs = s.rttMs === null ? "" : s.rttMs.toFixed(2);
    d.sendKbps = s.sendKbps === null ? "" : Math.round(s.sendKbps);
    d.recvKbps = s.recvKbps === null ? "" : Math.round(s.recvKbps);
    d.lossPct = (s.lossPct || 0).toFixed(2);
    d.codecs = codecs;
    d.framesDecoded = s.framesDecoded;
  }
}

function setPressed(button, pressed, label, iconName, slash = true) {
  button.setAttribute("aria-pressed", String(pressed));
  button.title = label;
  button.setAttribute("aria-label", label);
  button.querySelector(".hl-ctl-label").textContent = label;
  const round = button.querySelector(".hl-round");
  round.replaceChildren(icon(iconName, { slash: slash && pressed }));
}
