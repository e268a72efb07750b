// What a call needs from around it: the daemon's API (same-origin fetch with the session
// cookie), the ICE servers, a call id, and the end of ICE gathering (non-trickle: the
// whole description goes out at once).

export const GATHER_TIMEOUT_MS = 4000;

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
