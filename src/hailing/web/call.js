// The WebRTC side of a browser call: one RTCPeerConnection (tracks + the data channel
// "hailing"), signaled through the local daemon's /api/calls routes.
//
// Theory of operation
// -------------------
// Caller (Call.outgoing + start()): getUserMedia, a peer connection without ICE servers
// (iceServers() asks nothing yet: no STUN or TURN server is configured anywhere), the
// tracks, the channel "hailing", an offer, then the whole gathering (non-trickle, bounded
// by GATHER_TIMEOUT_MS); the offer goes to POST /api/calls, which the daemon seals and
// dials; its answer (or a 504: "no answer", whatever the reason) comes back on the same
// request. Callee (Call.incoming + accept()): the ringing call's offer from
// GET /api/calls/{id}, getUserMedia, the answer, POST /api/calls/{id}/accept.
//
// Both then speak docs/connection.md's frames on the channel: once it is open and the
// daemon's proof is known, {"t":"hello","proof":HEX,"reneg":true}; the peer's hello proof
// goes to POST /api/calls/{id}/verify and a proof that fails hangs up. A ping every
// second, a pong for each ping, and 5 s without any frame means the peer is gone.
// {"t":"bye"} hangs up (answered by bye). When the peer's hello said "reneg": true (a
// browser), media changes after the start (adding video, a screen share on an audio
// call) are renegotiated over the channel with {"t":"sdp","type":"offer"|"answer","sdp"}
// frames, by perfect negotiation (the callee is the polite side). A Python peer's hello
// has no "reneg": then only replaceTrack is used (a screen share on a video call).
//
// A Call is an EventTarget: "state" (detail {state, reason}), "tracks" (local or remote
// media changed), "stats" (detail: summarizeStats' object), "message" (a text a Python
// peer sent on the channel). It never touches the DOM.

export const GATHER_TIMEOUT_MS = 4000;
export const PING_INTERVAL_MS = 1000;
export const SILENCE_MS = 5000;
export const HELLO_TIMEOUT_MS = 15000;
export const CONNECT_TIMEOUT_MS = 20000;
export const BYE_WAIT_MS = 2000;
export const RING_TIMEOUT_S = 30;
export const STATES = ["calling", "ringing", "connecting", "connected", "ended"];

export class ApiError extends Error {
  constructor(status, message, kind = "") {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

// The default way to reach the daemon: same-origin fetch (the session cookie; the browser
// sends our own Origin on POST/DELETE). request(method, path, body?, {signal}?) -> JSON.
export async function defaultRequest(method, path, body, { signal } = {}) {
  const init = { method, credentials: "same-origin", signal, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const message = (data && data.error) || `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, message, (data && data.kind) || "");
  }
  return data;
}

// The ICE servers of a call. None today (hailing configures no STUN/TURN server); the NAT
// work (STUN answered by DHT nodes, volunteered relays) will ask the daemon here.
export async function iceServers(_request) {
  return [];
}

export function newCallId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Resolve once ICE gathering is complete, or after timeoutMs (what was gathered is used).
export function waitForGathering(pc, timeoutMs = GATHER_TIMEOUT_MS) {
  if (pc.iceGatheringState === "complete") return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (complete) => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve(complete);
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done(true);
    };
    const onCandidate = (e) => {
      if (!e.candidate) done(true);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

// A compact summary of an RTCStatsReport; `prev` is the previous summary (for bitrates).
export function summarizeStats(report, prev = null, now = performance.now()) {
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  const out = {
    at: now, rttMs: null, sendKbps: null, recvKbps: null, lossPct: null,
    codecs: {}, path: null, framesDecoded: 0, framesPerSecond: null, resolution: null,
    bytesSent: 0, bytesReceived: 0, packetsReceived: 0, packetsLost: 0,
  };
  let pair = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
  });
  if (!pair) {
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.state === "succeeded" && (s.nominated || s.selected)) pair = pair || s;
    });
  }
  if (pair) {
    const local = byId.get(pair.localCandidateId) || {};
    const remote = byId.get(pair.remoteCandidateId) || {};
    out.path = {
      local: local.candidateType || "?", remote: remote.candidateType || "?",
      protocol: local.protocol || "", relayProtocol: local.relayProtocol || "",
      localAddress: local.address ? `${local.address}:${local.port}` : "",
      remoteAddress: remote.address ? `${remote.address}:${remote.port}` : "",
    };
    if (typeof pair.currentRoundTripTime === "number") out.rttMs = pair.currentRoundTripTime * 1000;
  }
  let remoteRtt = null;
  report.forEach((s) => {
    if (s.type === "outbound-rtp" && !s.isRemote) {
      out.bytesSent += s.bytesSent || 0;
      const codec = byId.get(s.codecId);
      if (codec && s.kind) out.codecs[`send ${s.kind}`] = codecName(codec);
    } else if (s.type === "inbound-rtp" && !s.isRemote) {
      out.bytesReceived += s.bytesReceived || 0;
      out.packetsReceived += s.packetsReceived || 0;
      out.packetsLost += Math.max(0, s.packetsLost || 0);
      const codec = byId.get(s.codecId);
      if (codec && s.kind) out.codecs[`recv ${s.kind}`] = codecName(codec);
      if (s.kind === "video") {
        out.framesDecoded += s.framesDecoded || 0;
        if (typeof s.framesPerSecond === "number") out.framesPerSecond = s.framesPerSecond;
        if (s.frameWidth) out.resolution = `${s.frameWidth}×${s.frameHeight}`;
      }
    } else if (s.type === "remote-inbound-rtp" && typeof s.roundTripTime === "number") {
      remoteRtt = s.roundTripTime * 1000;
    }
  });
  if (out.rttMs === null && remoteRtt !== null) out.rttMs = remoteRtt;
  const total = out.packetsReceived + out.packetsLost;
  out.lossPct = total > 0 ? (100 * out.packetsLost) / total : 0;
  if (prev && now > prev.at) {
    const secs = (now - prev.at) / 1000;
    out.sendKbps = Math.max(0, (8 * (out.bytesSent - prev.bytesSent)) / 1000 / secs);
    out.recvKbps = Math.max(0, (8 * (out.bytesReceived - prev.bytesReceived)) / 1000 / secs);
    const dLost = out.packetsLost - prev.packetsLost;
    const dAll = dLost + out.packetsReceived - prev.packetsReceived;
    if (dAll > 0) out.lossPct = (100 * Math.max(0, dLost)) / dAll;
  }
  return out;
}

function codecName(codec) {
  const name = (codec.mimeType || "").split("/").pop();
  return codec.clockRate && name ? `${name}/${codec.clockRate}` : name || "?";
}

function mediaError(err) {
  const what = err && err.name === "NotAllowedError" ? "permission denied"
    : err && err.name === "NotFoundError" ? "no such device" : (err && err.message) || String(err);
  return `could not use the microphone or camera: ${what}`;
}

export class Call extends EventTarget {
  // An outgoing call to `contact` (a name or contact id); start() dials.
  static outgoing({ request = defaultRequest, contact, name, media }) {
    return new Call({ request, direction: "out", id: newCallId(), contact, name, media });
  }

  // A ringing incoming call from a `ring` event; accept() or decline().
  static incoming({ request = defaultRequest, ring }) {
    const call = new Call({
      request, direction: "in", id: ring.call, contact: ring.contact || ring.from,
      name: ring.contact || shortId(ring.from), media: ring.media === "video" ? "video" : "audio",
    });
    call.from = ring.from;
    call.expires = ring.expires;
    call._setState("ringing");
    return call;
  }

  constructor({ request, direction, id, contact, name, media }) {
    super();
    this.request = request;
    this.direction = direction;
    this.id = id;
    this.contact = contact;
    this.name = name || contact;
    this.media = media === "video" ? "video" : "audio";
    this.polite = direction === "in"; // perfect negotiation: the callee yields
    this.state = direction === "out" ? "calling" : "ringing";
    this.reason = "";
    this.pc = null;
    this.channel = null;
    this.localStream = new MediaStream();
    this.remoteStream = new MediaStream();
    this.proof = null; // ours, from the daemon
    this.peerHello = null; // the peer's hello frame
    this.peerReneg = false;
    this.verified = false;
    this.muted = false;
    this.cameraOff = false;
    this.screenTrack = null;
    this.cameraTrack = null; // the camera track a screen share replaced
    this.stats = null;
    this.counters = { framesIn: 0, garbage: 0, pings: 0, pongs: 0, renegotiations: 0 };
    this.timeline = { created: now() };
    this._abort = new AbortController();
    this._timers = [];
    this._lastHeard = 0;
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._byeHeard = null;
    this._answered = false; // the daemon logged an answered call: /end when it ends
  }

  get active() {
    return this.state !== "ended";
  }

  get hasLocalVideo() {
    return this.localStream.getVideoTracks().length > 0;
  }

  get canRenegotiate() {
    return this.state === "connected" && this.peerReneg;
  }

  // -- caller ------------------------------------------------------------------------------

  async start() {
    try {
      this._setState("calling");
      await this._openMedia(this.media === "video");
      if (!this.active) return;
      await this._newPeerConnection();
      this._addLocalTracks();
      this._useChannel(this.pc.createDataChannel("hailing"));
      await this.pc.setLocalDescription(await this.pc.createOffer());
      await waitForGathering(this.pc);
      if (!this.active) return;
      this.timeline.offerReady = now();
      let answer;
      try {
        answer = await this.request("POST", "/api/calls", {
          contact: this.contact, sdp: this.pc.localDescription.sdp, media: this.media,
          call: this.id, timeout: RING_TIMEOUT_S,
        }, { signal: this._abort.signal });
      } catch (err) {
        if (!this.active) return; // cancelled meanwhile
        if (err && err.status === 504) return this._end("no answer");
        throw err;
      }
      if (!this.active) return;
      this._answered = true;
      this.timeline.answered = now();
      this.signalMs = answer.signal_ms;
      this.coupler = answer.coupler;
      this.proof = answer.proof;
      this._setState("connecting");
      this._armConnectTimeout();
      await this.pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      this._maybeHello();
    } catch (err) {
      this._fail(err);
    }
  }

  // -- callee ------------------------------------------------------------------------------

  async accept() {
    if (this.state !== "ringing") return;
    try {
      this._setState("connecting");
      this.timeline.accepted = now();
      const ring = await this.request("GET", `/api/calls/${encodeURIComponent(this.id)}`);
      if (!this.active) return;
      this.media = ring.media === "video" ? "video" : this.media;
      await this._openMedia(this.media === "video");
      if (!this.active) return;
      await this._newPeerConnection();
      this.pc.addEventListener("datachannel", (e) => {
        if (e.channel.label === "hailing" && !this.channel) this._useChannel(e.channel);
      });
      await this.pc.setRemoteDescription({ type: "offer", sdp: ring.sdp });
      this._addLocalTracks();
      await this.pc.setLocalDescription(await this.pc.createAnswer());
      await waitForGathering(this.pc);
      if (!this.active) return;
      const res = await this.request("POST", `/api/calls/${encodeURIComponent(this.id)}/accept`,
        { sdp: this.pc.localDescription.sdp });
      this._answered = true;
      this.timeline.answered = now();
      this.proof = res.proof;
      this._armConnectTimeout();
      this._maybeHello();
    } catch (err) {
      if (err && (err.status === 404 || err.status === 409)) {
        return this._end("the call is over (cancelled or answered elsewhere)");
      }
      this._fail(err);
    }
  }

  async decline() {
    if (this.state !== "ringing") return;
    this._end("declined");
    try {
      await this.request("POST", `/api/calls/${encodeURIComponent(this.id)}/decline`, {});
    } catch {
      /* the ring may be over already */
    }
  }

  // The daemon said the ring is over (cancelled, expired, answered or declined elsewhere).
  ringEnded(reason) {
    if (this.state === "ringing") this._end(reason === "cancelled" ? "missed" : reason || "missed");
  }

  // -- both --------------------------------------------------------------------------------

  // Hang up (or cancel while calling, decline while ringing).
  async hangUp(reason = "you hung up") {
    if (!this.active) return;
    if (this.state === "ringing") return this.decline();
    if (!this._answered) {
      this._abort.abort();
      this._end("cancelled");
      try {
        await this.request("DELETE", `/api/calls/${encodeURIComponent(this.id)}`);
      } catch {
        /* answered or gone meanwhile: nothing to cancel */
      }
      return;
    }
    const channel = this.channel;
    const open = channel && channel.readyState === "open";
    if (open) this._send({ t: "bye" });
    this._end(reason, { closePc: false });
    if (open) {
      await Promise.race([this._byeHeardPromise(), sleep(BYE_WAIT_MS)]);
    }
    this._closePc();
  }

  setMuted(muted) {
    this.muted = !!muted;
    for (const t of this.localStream.getAudioTracks()) t.enabled = !this.muted;
    this._emit("tracks");
  }

  setCameraOff(off) {
    this.cameraOff = !!off;
    const cam = this.cameraTrack || (this.screenTrack ? null : this.localStream.getVideoTracks()[0]);
    if (cam) cam.enabled = !this.cameraOff;
    this._emit("tracks");
  }

  // Add the camera to an audio call (renegotiated over the channel).
  async addVideo() {
    if (!this.canRenegotiate || this.hasLocalVideo) return false;
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    const track = stream.getVideoTracks()[0];
    this._sendVideo(track);
    this.media = "video";
    this.cameraOff = false;
    this._emit("tracks");
    return true;
  }

  async startScreenShare() {
    if (!this.active || this.screenTrack) return false;
    const videoSender = this._videoSender();
    if (!(videoSender && videoSender.track) && !this.canRenegotiate) {
      throw new Error("the other side cannot take a new video track during the call");
    }
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    track.addEventListener("ended", () => this.stopScreenShare());
    this.screenTrack = track;
    if (videoSender && videoSender.track) {
      this.cameraTrack = videoSender.track;
      await videoSender.replaceTrack(track);
      this.localStream.removeTrack(this.cameraTrack);
      this.localStream.addTrack(track);
    } else {
      this.cameraTrack = null;
      this._sendVideo(track);
    }
    this._emit("tracks");
    return true;
  }

  async stopScreenShare() {
    const track = this.screenTrack;
    if (!track) return;
    this.screenTrack = null;
    track.stop();
    this.localStream.removeTrack(track);
    const sender = this._videoSender();
    if (this.cameraTrack) {
      if (sender && this.pc.signalingState !== "closed") await sender.replaceTrack(this.cameraTrack);
      this.localStream.addTrack(this.cameraTrack);
      this.cameraTrack.enabled = !this.cameraOff;
      this.cameraTrack = null;
    } else if (sender && this.pc.signalingState !== "closed") {
      await sender.replaceTrack(null); // the m-line stays; no renegotiation needed
    }
    this._emit("tracks");
  }

  // -- internals ---------------------------------------------------------------------------

  async _openMedia(video) {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true, video });
    } catch (err) {
      throw new Error(mediaError(err));
    }
    if (!this.active) {
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    for (const t of stream.getTracks()) this.localStream.addTrack(t);
    this._emit("tracks");
  }

  async _newPeerConnection() {
    const servers = await iceServers(this.request);
    this.pc = new RTCPeerConnection({ iceServers: servers });
    this.pc.addEventListener("track", (e) => this._onTrack(e));
    this.pc.addEventListener("connectionstatechange", () => {
      if (this.pc.connectionState === "failed") this._end("the connection was lost");
      if (this.pc.connectionState === "connected") this.timeline.iceConnected ??= now();
    });
  }

  _addLocalTracks() {
    for (const track of this.localStream.getTracks()) {
      this.pc.addTrack(track, this.localStream);
    }
  }

  _videoSender() {
    if (!this.pc) return null;
    const tr = this.pc.getTransceivers().find((t) => t.receiver.track.kind === "video"
      && !t.stopped && t.currentDirection !== "stopped");
    return tr ? tr.sender : null;
  }

  // Send a video track: reuse a video transceiver that does not send yet (the peer's
  // m-line), or add one; either way negotiationneeded fires and renegotiates.
  _sendVideo(track) {
    this.localStream.addTrack(track);
    const tr = this.pc.getTransceivers().find((t) => t.receiver.track.kind === "video"
      && !t.sender.track && !t.stopped);
    if (tr) {
      tr.sender.replaceTrack(track);
      tr.sender.setStreams?.(this.localStream);
      tr.direction = "sendrecv";
    } else {
      this.pc.addTrack(track, this.localStream);
    }
  }

  _onTrack(e) {
    const track = e.track;
    if (!this.remoteStream.getTracks().includes(track)) this.remoteStream.addTrack(track);
    track.addEventListener("unmute", () => this._emit("tracks"));
    track.addEventListener("mute", () => this._emit("tracks"));
    track.addEventListener("ended", () => {
      this.remoteStream.removeTrack(track);
      this._emit("tracks");
    });
    this._emit("tracks");
  }

  _useChannel(channel) {
    this.channel = channel;
    channel.addEventListener("open", () => {
      this.timeline.channelOpen = now();
      this._lastHeard = now();
      this._maybeHello();
      this._startKeepalive();
    });
    channel.addEventListener("message", (e) => this._onFrame(e.data));
    channel.addEventListener("close", () => {
      if (this.active) this._end(this._byeHeard ? `${this.name} hung up` : "the connection was lost");
    });
    if (channel.readyState === "open") channel.dispatchEvent(new Event("open"));
  }

  _maybeHello() {
    if (this._helloSent || !this.proof || !this.channel || this.channel.readyState !== "open") return;
    this._helloSent = true;
    this._send({ t: "hello", proof: this.proof, reneg: true });
    if (this.peerHello) this._verify(this.peerHello);
  }

  _startKeepalive() {
    this._every(PING_INTERVAL_MS, () => {
      const silent = now() - this._lastHeard;
      const limit = this.verified ? SILENCE_MS : HELLO_TIMEOUT_MS;
      if (silent >= limit) {
        this._end(this.verified ? `${this.name} stopped answering (nothing for ${Math.round(silent / 1000)} s)`
          : `${this.name} did not prove their identity in time`);
        return;
      }
      if (this.verified) this._send({ t: "ping" });
    });
  }

  _send(frame) {
    const ch = this.channel;
    if (!ch || ch.readyState !== "open") return false;
    try {
      ch.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  _onFrame(data) {
    this._lastHeard = now();
    this.counters.framesIn += 1;
    let msg;
    try {
      msg = typeof data === "string" ? JSON.parse(data) : null;
    } catch {
      msg = null;
    }
    if (!msg || typeof msg !== "object" || typeof msg.t !== "string") {
      this.counters.garbage += 1;
      return;
    }
    if (msg.t === "hello") {
      if (this.peerHello) return;
      this.peerHello = msg;
      this.peerReneg = msg.reneg === true;
      if (this._helloSent) this._verify(msg);
      return;
    }
    switch (msg.t) {
      case "ping":
        this.counters.pings += 1;
        this._send({ t: "pong" });
        break;
      case "pong":
        this.counters.pongs += 1;
        break;
      case "bye":
        this._byeHeard = true;
        this._byeResolve?.();
        if (this.active) {
          this._send({ t: "bye" });
          this._end(`${this.name} hung up`, { closePc: false });
          setTimeout(() => this._closePc(), 500); // let our answering bye leave first
        }
        break;
      case "sdp":
        this._onRemoteSdp(msg).catch((err) => this._fail(err));
        break;
      case "msg":
        if (typeof msg.text === "string") this._emit("message", { text: msg.text });
        if (Number.isInteger(msg.id)) this._send({ t: "ack", id: msg.id });
        break;
      case "file":
        if (Number.isInteger(msg.id)) this._send({ t: "ack", id: msg.id, ok: false });
        break;
      default:
        this.counters.garbage += 1;
    }
  }

  async _verify(hello) {
    let ok = false;
    try {
      const proof = typeof hello.proof === "string" ? hello.proof : "";
      const res = await this.request("POST", `/api/calls/${encodeURIComponent(this.id)}/verify`, { proof });
      ok = !!(res && res.ok);
    } catch (err) {
      if (!this.active) return;
      return this.hangUp(`could not check ${this.name}'s identity: ${err.message}`);
    }
    if (!this.active) return;
    if (!ok) return this.hangUp(`${this.name}'s identity proof did not verify`);
    this.verified = true;
    this._lastHeard = now();
    this.timeline.verified = now();
    this._listenForNegotiation();
    this._setState("connected");
    this._every(1000, () => this.refreshStats());
    this.refreshStats();
  }

  _listenForNegotiation() {
    this.pc.addEventListener("negotiationneeded", async () => {
      if (!this.canRenegotiate) return;
      try {
        this._makingOffer = true;
        await this.pc.setLocalDescription();
        this.counters.renegotiations += 1;
        this._send({ t: "sdp", type: this.pc.localDescription.type, sdp: this.pc.localDescription.sdp });
      } catch (err) {
        this._fail(err);
      } finally {
        this._makingOffer = false;
      }
    });
  }

  async _onRemoteSdp(msg) {
    if (!this.pc || !this.active || (msg.type !== "offer" && msg.type !== "answer") || typeof msg.sdp !== "string") {
      this.counters.garbage += 1;
      return;
    }
    const collision = msg.type === "offer" && (this._makingOffer || this.pc.signalingState !== "stable");
    this._ignoreOffer = !this.polite && collision;
    if (this._ignoreOffer) return;
    await this.pc.setRemoteDescription({ type: msg.type, sdp: msg.sdp }); // rolls back if polite
    if (msg.type === "offer") {
      await this.pc.setLocalDescription();
      this._send({ t: "sdp", type: "answer", sdp: this.pc.localDescription.sdp });
    }
    this.counters.renegotiations += 1;
    this._emit("tracks");
  }

  async refreshStats() {
    if (!this.pc || this.pc.signalingState === "closed") return this.stats;
    try {
      const report = await this.pc.getStats();
      this.stats = summarizeStats(report, this.stats);
      this._emit("stats", this.stats);
    } catch {
      /* closed meanwhile */
    }
    return this.stats;
  }

  _armConnectTimeout() {
    const t = setTimeout(() => {
      if (this.state === "connecting") this._end("could not connect");
    }, CONNECT_TIMEOUT_MS);
    this._timers.push(() => clearTimeout(t));
  }

  _every(ms, fn) {
    const t = setInterval(fn, ms);
    this._timers.push(() => clearInterval(t));
  }

  _byeHeardPromise() {
    if (this._byeHeard) return Promise.resolve();
    return new Promise((resolve) => {
      this._byeResolve = resolve;
    });
  }

  _fail(err) {
    if (!this.active) return;
    const text = (err && err.message) || String(err);
    if (this._answered && this.channel && this.channel.readyState === "open") this._send({ t: "bye" });
    this._end(`failed: ${text}`);
  }

  _end(reason, { closePc = true } = {}) {
    if (!this.active) return;
    this.reason = reason;
    this.timeline.ended = now();
    for (const stop of this._timers) stop();
    this._timers = [];
    this._abort.abort();
    for (const t of this.localStream.getTracks()) t.stop();
    if (this.screenTrack) this.screenTrack.stop();
    if (this.cameraTrack) this.cameraTrack.stop();
    if (closePc) this._closePc();
    this._setState("ended", reason);
    if (this._answered) {
      this.request("POST", `/api/calls/${encodeURIComponent(this.id)}/end`, { reason: reason.slice(0, 200) })
        .catch(() => {});
    }
  }

  _closePc() {
    try {
      if (this.channel && this.channel.readyState === "open") this.channel.close();
    } catch {
      /* already closing */
    }
    if (this.pc && this.pc.signalingState !== "closed") this.pc.close();
  }

  _setState(state, reason = "") {
    this.state = state;
    this.timeline[state] ??= now();
    this._emit("state", { state, reason });
  }

  _emit(type, detail = null) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

export function shortId(id) {
  return typeof id === "string" && id.length > 12 ? `${id.slice(0, 8)}…` : id || "someone";
}

// Milliseconds since the epoch with sub-millisecond precision (comparable across pages).
export function now() {
  return performance.timeOrigin + performance.now();
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
