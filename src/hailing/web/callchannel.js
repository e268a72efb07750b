// The call's data channel "hailing", as docs/connection.md says: JSON text frames with a
// "t" field. This module frames and keeps time; the Call (call.js) decides.
//
// - hello(proof) sends {"t":"hello","proof":HEX,"reneg":true} once the channel is open
//   (queued until then); the peer's hello goes to onHello(frame), once.
// - After setVerified(): a ping every PING_INTERVAL_MS; each ping is answered by a pong.
//   Any frame is a sign of life: SILENCE_MS without one (HELLO_TIMEOUT_MS before the peer
//   proved itself) calls onSilent(ms).
// - A peer's bye is answered by bye, then onBye(); bye() sends ours and resolves when the
//   peer's arrives (or after BYE_WAIT_MS).
// - {"t":"sdp"} frames go to onSdp(frame), {"t":"media"} (the peer's sound or camera is
//   off) to onMedia(frame). A Python peer's msg is acknowledged and goes
//   to onMessage(text); a file is refused (ok: false). Anything else is counted garbage.
// - The channel closing goes to onClose(byeHeard).

export const PING_INTERVAL_MS = 1000;
export const SILENCE_MS = 5000;
export const HELLO_TIMEOUT_MS = 15000;
export const BYE_WAIT_MS = 2000;

const now = () => performance.timeOrigin + performance.now();

export class CallChannel {
  constructor(channel, handlers) {
    this.channel = channel;
    this.h = handlers; // {onOpen, onHello, onSilent, onBye, onSdp, onMessage, onClose}
    this.counters = { framesIn: 0, garbage: 0, pings: 0, pongs: 0 };
    this.peerHello = null;
    this.byeHeard = false;
    this.verified = false;
    this._proof = null;
    this._helloSent = false;
    this._lastHeard = now();
    this._timer = null;
    this._byeWaiters = [];
    this._byeSent = false;
    channel.addEventListener("open", () => this._onOpen());
    channel.addEventListener("message", (e) => this._onFrame(e.data));
    channel.addEventListener("close", () => {
      this.stop();
      this.h.onClose?.(this.byeHeard);
    });
    if (channel.readyState === "open") queueMicrotask(() => this._onOpen());
  }

  get open() {
    return this.channel.readyState === "open";
  }

  hello(proof) {
    this._proof = proof;
    this._maybeHello();
  }

  get helloSent() {
    return this._helloSent;
  }

  setVerified() {
    this.verified = true;
    this._lastHeard = now();
  }

  send(frame) {
    if (!this.open) return false;
    try {
      this.channel.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // Send bye; resolves once the peer's bye came (true) or after BYE_WAIT_MS (false).
  bye() {
    if (this._byeSent || !this.send({ t: "bye" })) return Promise.resolve(this.byeHeard);
    this._byeSent = true;
    if (this.byeHeard) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), BYE_WAIT_MS);
      this._byeWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  stop() {
    clearInterval(this._timer);
    this._timer = null;
  }

  close() {
    this.stop();
    try {
      if (this.open) this.channel.close();
    } catch {
      /* already closing */
    }
  }

  _onOpen() {
    if (this._timer !== null) return;
    this._lastHeard = now();
    this.h.onOpen?.();
    this._maybeHello();
    let lastPing = 0;
    this._timer = setInterval(() => {
      const t = now();
      const silent = t - this._lastHeard;
      if (silent >= (this.verified ? SILENCE_MS : HELLO_TIMEOUT_MS)) {
        this.stop();
        this.h.onSilent?.(silent, this.verified);
        return;
      }
      if (this.verified && t - lastPing >= PING_INTERVAL_MS) {
        lastPing = t;
        this.send({ t: "ping" });
      }
    }, 250);
  }

  _maybeHello() {
    if (this._helloSent || !this._proof || !this.open) return;
    this._helloSent = true;
    this.send({ t: "hello", proof: this._proof, reneg: true });
    if (this.peerHello) this.h.onHello?.(this.peerHello);
  }

  _onFrame(data) {
    this._lastHeard = now();
    this.counters.framesIn += 1;
    let msg = null;
    try {
      msg = typeof data === "string" ? JSON.parse(data) : null;
    } catch {
      msg = null;
    }
    if (!msg || typeof msg !== "object" || typeof msg.t !== "string") {
      this.counters.garbage += 1;
      return;
    }
    switch (msg.t) {
      case "hello":
        if (this.peerHello) return;
        this.peerHello = msg;
        if (this._helloSent) this.h.onHello?.(msg); // else once ours is out
        break;
      case "ping":
        this.counters.pings += 1;
        this.send({ t: "pong" });
        break;
      case "pong":
        this.counters.pongs += 1;
        break;
      case "bye": {
        const first = !this.byeHeard;
        this.byeHeard = true;
        const waiters = this._byeWaiters;
        this._byeWaiters = [];
        if (this._byeSent) {
          waiters.forEach((w) => w()); // the answer to our bye
        } else if (first) {
          this._byeSent = true;
          this.send({ t: "bye" });
          this.h.onBye?.();
        }
        break;
      }
      case "sdp":
        this.h.onSdp?.(msg);
        break;
      case "media":
        this.h.onMedia?.(msg);
        break;
      case "msg":
        if (typeof msg.text === "string") this.h.onMessage?.(msg.text);
        if (Number.isInteger(msg.id)) this.send({ t: "ack", id: msg.id });
        break;
      case "file":
        if (Number.isInteger(msg.id)) this.send({ t: "ack", id: msg.id, ok: false });
        break;
      default:
        this.counters.garbage += 1;
    }
  }
}
