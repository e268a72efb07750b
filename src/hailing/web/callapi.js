// What a call needs from around it: the daemon's API (same-origin fetch with the session
// cookie), the ICE servers, a call id, and the end of ICE gathering (non-trickle: the
// whole description goes out at once).

export const GATHER_TIMEOUT_MS = 4000;
// Longest a call waits for the daemon's ICE servers (then it goes on with none).
export const ICE_TIMEOUT_MS = 1500;

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

// The ICE servers of a call: the daemon's (GET /api/ice: STUN servers are hailing DHT
// nodes, a relay is a volunteer's TURN server with time-limited credentials; nobody
// configures any). Within ICE_TIMEOUT_MS, else none: the call goes on with host candidates.
export async function iceServers(request = defaultRequest, timeoutMs = ICE_TIMEOUT_MS) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const data = await request("GET", "/api/ice", undefined, { signal: abort.signal });
    return validIceServers(data && data.iceServers);
  } catch {
    return [];
  } finally {
    clearTimeout(timer);
  }
}

// Only well-formed entries: {urls: [stun:/turn: text, ...], username?, credential?}.
export function validIceServers(list) {
  if (!Array.isArray(list)) return [];
  const out = [];
  for (const entry of list) {
    if (!entry || !Array.isArray(entry.urls)) continue;
    const urls = entry.urls.filter((u) => typeof u === "string" && /^(stun|turn):/.test(u));
    if (!urls.length) continue;
    const server = { urls };
    if (typeof entry.username === "string" && typeof entry.credential === "string") {
      server.username = entry.username;
      server.credential = entry.credential;
    } else if (urls.some((u) => u.startsWith("turn:"))) {
      continue; // a relay without credentials: the browser would refuse the configuration
    }
    out.push(server);
  }
  return out;
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
