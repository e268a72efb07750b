// The WebRTC side of a browser call: one RTCPeerConnection (tracks + the data channel
// "hailing"), signaled through the local daemon's /api/calls routes.
//
// Theory of operation
// -------------------
// Caller (Call.outgoing + start()): getUserMedia, a peer connection with the daemon's ICE
// servers (iceServers(): GET /api/ice, STUN from DHT nodes and a volunteer relay), the
// tracks, the channel "hailing", an offer, then the whole gathering (non-trickle, bounded
// by GATHER_TIMEOUT_MS); the offer goes to POST /api/calls, which the daemon seals and
// dials, ringing for the daemon's ring timeout (hailing up --ring-timeout); its answer (or a 504: "no answer", whatever the reason) comes back on the same
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
// peer sent on the channel), "notice" (something to tell the user, e.g. no camera). It
// never touches the DOM. abandon() is for a page going away (pagehide).

import { ApiError, defaultRequest, iceServers, newCallId, waitForGathering } from "./callapi.js";
import { CallChannel } from "./callchannel.js";
import { summarizeStats } from "./callstats.js";

export { ApiError, defaultRequest, iceServers, newCallId, summarizeStats, waitForGathering };
export const CONNECT_TIMEOUT_MS = 20000;
export const STATES = ["calling", "ringing", "connecting", "connected", "ended"];

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
    this.channel = null; // a CallChannel (callchannel.js)
    this.localStream = new MediaStream();
    this.remoteStream = new MediaStream();
    this.proof = null; // ours, from the daemon
    this.peerReneg = false;
    this.verified = false;
    this.muted = false;
    this.cameraOff = false;
    this.peerMuted = false; // what the peer's {"t":"media"} said
    this.peerCameraOff = false;
    this.screenTrack = null;
    this.cameraTrack = null; // the camera track a screen share replaced
    this.stats = null;
    this.renegotiations = 0;
    this.timeline = { created: now() };
    this._abort = new AbortController();
    this._timers = [];
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._answered = false; // the daemon logged an answered call: /end when it ends
  }

  get active() {
    return this.state !== "ended";
  }

  get hasLocalVideo() {
    return this.localStream.getVideoTracks().length > 0;
  }

  // Frames, pings, pongs and garbage seen on the channel; renegotiations done.
  get counters() {
    const c = this.channel ? this.channel.counters : { framesIn: 0, garbage: 0, pings: 0, pongs: 0 };
    return { ...c, renegotiations: this.renegotiations };
  }

  get peerHello() {
    return this.channel ? this.channel.peerHello : null;
  }

  get canRenegotiate() {
    return this.state === "connected" && this.peerReneg;
  }

  // -- caller ------------------------------------------------------------------------------

  async start() {
    try {
      this._setState("calling");
      // The camera and microphone start while the offer is made and the candidates are
      // gathered: the transceivers exist first, the tracks go in when they are ready.
      const media = this._openMedia(this.media === "video");
      media.catch(() => {}); // awaited below
      await this._newPeerConnection();
      const init = { direction: "sendrecv", streams: [this.localStream] };
      this.pc.addTransceiver("audio", init);
      if (this.media === "video") this.pc.addTransceiver("video", init);
      this._useChannel(this.pc.createDataChannel("hailing"));
      await this.pc.setLocalDescription(await this.pc.createOffer());
      this.timeline.offer = now();
      await Promise.all([waitForGathering(this.pc), media]);
      if (!this.active) return;
      await this._attachLocalTracks();
      this.timeline.offerReady = now();
      let answer;
      try {
        answer = await this.request("POST", "/api/calls", {
          contact: this.contact, sdp: this.pc.localDescription.sdp, media: this.media,
          call: this.id, // no timeout: the daemon's ring timeout (hailing up --ring-timeout)
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
      this.channel.hello(this.proof);
    } catch (err) {
      this._fail(err);
    }
  }

  // -- callee ------------------------------------------------------------------------------

  // Answer; {video: false} answers a video call with sound only from this side (the
  // other's video is still received; "Start video" can add the camera later).
  async accept({ video = true } = {}) {
    if (this.state !== "ringing") return;
    try {
      this._setState("connecting");
      this.timeline.accepted = now();
      // The camera and microphone start at once (the ring said which), while the offer is
      // fetched and answered.
      const sendVideo = this.media === "video" && video;
      const media = this._openMedia(sendVideo);
      media.catch(() => {}); // awaited below
      const ring = await this.request("GET", `/api/calls/${encodeURIComponent(this.id)}`);
      if (!this.active) return;
      await this._newPeerConnection();
      this.pc.addEventListener("datachannel", (e) => {
        if (e.channel.label === "hailing" && !this.channel) this._useChannel(e.channel);
      });
      await this.pc.setRemoteDescription({ type: "offer", sdp: ring.sdp });
      const sends = new Set(sendVideo ? ["audio", "video"] : ["audio"]);
      for (const tr of this.pc.getTransceivers()) {
        const kind = tr.receiver.track.kind;
        if (sends.has(kind) && !this._transceiverOf(kind, tr)) {
          tr.direction = "sendrecv";
          tr.sender.setStreams(this.localStream);
        }
      }
      await this.pc.setLocalDescription(await this.pc.createAnswer());
      this.timeline.answer = now();
      await Promise.all([waitForGathering(this.pc), media]);
      this.timeline.answerReady = now();
      if (!this.active) return;
      await this._attachLocalTracks();
      const res = await this.request("POST", `/api/calls/${encodeURIComponent(this.id)}/accept`,
        { sdp: this.pc.localDescription.sdp });
      this._answered = true;
      this.timeline.answered = now();
      this.proof = res.proof;
      this._armConnectTimeout();
      this.channel?.hello(this.proof);
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
    const answered = this.channel ? this.channel.bye() : Promise.resolve(false);
    this._end(reason, { closePc: false });
    await answered;
    this._closePc();
  }

  setMuted(muted) {
    this.muted = !!muted;
    for (const t of this.localStream.getAudioTracks()) t.enabled = !this.muted;
    this._tellMedia();
    this._emit("tracks");
  }

  setCameraOff(off) {
    this.cameraOff = !!off;
    const cam = this.cameraTrack || (this.screenTrack ? null : this.localStream.getVideoTracks()[0]);
    if (cam) cam.enabled = !this.cameraOff;
    this._tellMedia();
    this._emit("tracks");
  }

  // Tell a browser peer that our sound or camera is off ({"t":"media"}): it shows that
  // instead of silence and a black picture. A Python peer is told nothing.
  _tellMedia() {
    if (this.canRenegotiate) this.channel.send({ t: "media", muted: this.muted, camera: !this.cameraOff });
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

  // A screen share replaces the camera's picture, or takes the video m-line already
  // negotiated for sending; else it needs a renegotiation (a browser peer).
  get canShareScreen() {
    if (this.state !== "connected") return false;
    return !!this.screenTrack || this.canRenegotiate || !!this._transceiverOf("video");
  }

  async startScreenShare() {
    if (!this.active || this.screenTrack || this._sharing) return false;
    if (!this.canShareScreen) {
      throw new Error("the other side cannot take a new video track during the call");
    }
    this._sharing = true; // getDisplayMedia waits for the user to choose
    try {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      const track = stream.getVideoTracks()[0];
      if (!this.active) {
        track.stop();
        return false;
      }
      const videoSender = this._videoSender();
      if (videoSender && videoSender.track) {
        this.cameraTrack = videoSender.track;
        await videoSender.replaceTrack(track);
        this.localStream.removeTrack(this.cameraTrack);
        this.localStream.addTrack(track);
      } else {
        this.cameraTrack = null;
        this._sendVideo(track);
      }
      this.screenTrack = track; // once it is what the sender sends
      track.addEventListener("ended", () => this.stopScreenShare());
    } finally {
      this._sharing = false;
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

  // The microphone (and camera). A video call without a usable camera goes on with sound
  // only (this side still receives the other's video); no microphone at all fails.
  async _openMedia(video) {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true, video });
    } catch (err) {
      if (!video || err.name === "NotAllowedError" || err.name === "AbortError") throw new Error(mediaError(err));
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch {
        throw new Error(mediaError(err));
      }
      this.noCamera = mediaError(err).replace("microphone or camera", "camera");
      this._emit("notice", { text: `${this.noCamera}: sound only from this side` });
    }
    if (!this.active) {
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    for (const t of stream.getTracks()) this.localStream.addTrack(t);
    this.timeline.media = now();
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

  // The first sending transceiver of `kind` (other than `except`), or undefined.
  _transceiverOf(kind, except = null) {
    return this.pc.getTransceivers().find((t) => t !== except && t.receiver.track.kind === kind
      && (t.direction === "sendrecv" || t.direction === "sendonly"));
  }

  // Put the camera and microphone tracks on the transceivers made for them.
  async _attachLocalTracks() {
    for (const track of this.localStream.getTracks()) {
      const tr = this._transceiverOf(track.kind);
      if (tr && !tr.sender.track) await tr.sender.replaceTrack(track);
    }
  }

  // The page is going away (closed, reloaded): hang up without waiting for anything.
  // Requests use keepalive so that they outlive the page.
  abandon() {
    if (!this.active) return;
    const path = `/api/calls/${encodeURIComponent(this.id)}`;
    const send = (method, suffix, body) => {
      try {
        fetch(path + suffix, { method, credentials: "same-origin", keepalive: true,
          headers: { "Content-Type": "application/json" }, body: body && JSON.stringify(body) });
      } catch {
        /* nothing more can be done from a closing page */
      }
    };
    if (this.state === "ringing") return;
    if (!this._answered) {
      if (this.direction === "out") send("DELETE", "");
    } else {
      this.channel?.bye();
      send("POST", "/end", { reason: "the page was closed" });
    }
    this._answered = false; // _end must not post /end again
    this._end("the page was closed");
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

  _useChannel(dc) {
    this.channel = new CallChannel(dc, {
      onOpen: () => { this.timeline.channelOpen = now(); },
      onHello: (hello) => this._verify(hello),
      onSilent: (ms, verified) => this._end(verified
        ? `${this.name} stopped answering (nothing for ${Math.floor(ms / 1000)} s)`
        : `${this.name} did not prove their identity in time`),
      onBye: () => {
        if (!this.active) return;
        this._end(`${this.name} hung up`, { closePc: false });
        setTimeout(() => this._closePc(), 500); // let our answering bye leave first
      },
      onSdp: (frame) => this._onRemoteSdp(frame).catch((err) => this._fail(err)),
      onMessage: (text) => this._emit("message", { text }),
      onMedia: (frame) => {
        this.peerMuted = frame.muted === true;
        this.peerCameraOff = frame.camera === false;
        this._emit("tracks");
      },
      onClose: (byeHeard) => {
        if (this.active) this._end(byeHeard ? `${this.name} hung up` : "the connection was lost");
      },
    });
    if (this.proof) this.channel.hello(this.proof); // the callee's may come before its channel
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
    this.peerReneg = hello.reneg === true;
    this.channel.setVerified();
    this.timeline.verified = now();
    this._listenForNegotiation();
    this._setState("connected");
    if (this.muted || this.cameraOff) this._tellMedia();
    this._every(1000, () => this.refreshStats());
    this.refreshStats();
  }

  _listenForNegotiation() {
    this.pc.addEventListener("negotiationneeded", async () => {
      if (!this.canRenegotiate) return;
      try {
        this._makingOffer = true;
        await this.pc.setLocalDescription();
        this.renegotiations += 1;
        this.channel.send({ t: "sdp", type: this.pc.localDescription.type, sdp: this.pc.localDescription.sdp });
      } catch (err) {
        this._fail(err);
      } finally {
        this._makingOffer = false;
      }
    });
  }

  async _onRemoteSdp(msg) {
    if (!this.pc || !this.active || (msg.type !== "offer" && msg.type !== "answer") || typeof msg.sdp !== "string") {
      this.channel.counters.garbage += 1;
      return;
    }
    const collision = msg.type === "offer" && (this._makingOffer || this.pc.signalingState !== "stable");
    this._ignoreOffer = !this.polite && collision;
    if (this._ignoreOffer) return;
    await this.pc.setRemoteDescription({ type: msg.type, sdp: msg.sdp }); // rolls back if polite
    if (msg.type === "offer") {
      await this.pc.setLocalDescription();
      this.channel.send({ t: "sdp", type: "answer", sdp: this.pc.localDescription.sdp });
    }
    this.renegotiations += 1;
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

  _fail(err) {
    if (!this.active) return;
    const text = (err && err.message) || String(err);
    if (this._answered) this.channel?.bye();
    this._end(`failed: ${text}`);
  }

  _end(reason, { closePc = true } = {}) {
    if (!this.active) return;
    this.reason = reason;
    this.timeline.ended = now();
    for (const stop of this._timers) stop();
    this._timers = [];
    this.channel?.stop();
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
    this.channel?.close();
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
