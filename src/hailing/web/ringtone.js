// Ring tones made with WebAudio (no audio file): the callee's ring (two 400+450 Hz bursts
// every 3 s) and the caller's softer ringback (440+480 Hz, 1.5 s every 4 s).
//
// Browsers start an AudioContext only after a user gesture on the page: unlock() (called
// on any click) creates or resumes it, so that a later ring, which comes without a
// gesture, can sound. A ring that cannot sound still shows its panel and notification.

const RING = { freqs: [400, 450], bursts: [[0, 0.4], [0.6, 0.4]], period: 3.0, gain: 0.16 };
const RINGBACK = { freqs: [440, 480], bursts: [[0, 1.5]], period: 4.0, gain: 0.06 };

export class Ringer {
  constructor() {
    this.ctx = null;
    this.current = null; // {pattern, timer, nodes}
    this.playing = false; // what is wanted (a ring or ringback is on), even when muted by policy
    this.kind = null;
    const unlock = () => this.unlock();
    document.addEventListener("pointerdown", unlock, { capture: true });
    document.addEventListener("keydown", unlock, { capture: true });
  }

  unlock() {
    try {
      if (!this.ctx) this.ctx = new AudioContext();
      if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
    } catch {
      this.ctx = null;
    }
  }

  get audible() {
    return !!(this.ctx && this.ctx.state === "running" && this.current);
  }

  ring() {
    this._play("ring", RING);
  }

  ringback() {
    this._play("ringback", RINGBACK);
  }

  stopRingback() {
    if (this.kind === "ringback") this.stop();
  }

  stop() {
    this.playing = false;
    this.kind = null;
    if (!this.current) return;
    clearInterval(this.current.timer);
    for (const node of this.current.nodes) {
      try {
        node.stop();
      } catch {
        /* already stopped */
      }
    }
    if (this.current.out) this.current.out.disconnect();
    this.current = null;
  }

  _play(kind, pattern) {
    if (this.kind === kind) return;
    this.stop();
    this.playing = true;
    this.kind = kind;
    try {
      if (!this.ctx) this.ctx = new AudioContext();
      if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
    } catch {
      return;
    }
    const ctx = this.ctx;
    const out = ctx.createGain();
    out.gain.value = pattern.gain;
    out.connect(ctx.destination);
    const cur = { pattern, nodes: [], out, timer: null };
    this.current = cur;
    let next = ctx.currentTime + 0.05;
    const schedule = () => {
      // Keep one period scheduled ahead; old nodes are dropped once they have played.
      while (next < ctx.currentTime + pattern.period * 1.5) {
        for (const [at, len] of pattern.bursts) this._burst(cur, next + at, len);
        next += pattern.period;
      }
      cur.nodes = cur.nodes.filter((n) => n.endsAt > ctx.currentTime);
    };
    schedule();
    cur.timer = setInterval(schedule, 500);
  }

  _burst(cur, start, len) {
    const ctx = this.ctx;
    const env = ctx.createGain();
    env.gain.setValueAtTime(0, start);
    env.gain.linearRampToValueAtTime(1, start + 0.02);
    env.gain.setValueAtTime(1, start + len - 0.03);
    env.gain.linearRampToValueAtTime(0, start + len);
    env.connect(cur.out);
    for (const f of cur.pattern.freqs) {
      const osc = ctx.createOscillator();
      osc.type = "sine";
      osc.frequency.value = f;
      osc.connect(env);
      osc.start(start);
      osc.stop(start + len + 0.01);
      osc.endsAt = start + len + 0.01;
      cur.nodes.push(osc);
    }
  }
}
