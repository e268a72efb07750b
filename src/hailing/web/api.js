// The daemon's local API, as the page uses it: JSON requests (the session cookie is
// sent by the browser: same origin) and the event stream over a WebSocket that
// reconnects by itself.
//
//   import { api, events, ApiError } from "./api.js";
//   const status = await api("GET", "/api/status");
//   events.addEventListener("message", (e) => console.log(e.detail));  // one event kind
//   events.addEventListener("event", (e) => ...);                       // every event
//   events.addEventListener("ws", (e) => e.detail.state);  // "open" | "closed" | "unauthorized"
//
// Each daemon event {"event": KIND, ...} is dispatched as a CustomEvent of type KIND
// (and of type "event"), with the object as `detail`.

export class ApiError extends Error {
  constructor(status, message, kind = "") {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.kind = kind;
  }
}

/** One JSON request. `body` (an object) is sent as JSON; FormData is sent as is.
 *  Resolves with the decoded answer; rejects with ApiError (status 0: network). */
export async function api(method, path, body = undefined, { signal } = {}) {
  const init = { method, credentials: "same-origin", cache: "no-store", signal,
                 headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "the node does not answer (is 'hailing up' running?)");
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const message = (data && data.error) || `${res.status} ${res.statusText}`;
    const err = new ApiError(res.status, message, (data && data.kind) || "");
    if (res.status === 401) events.dispatchEvent(new CustomEvent("ws", { detail: { state: "unauthorized" } }));
    throw err;
  }
  return data;
}

/** Upload with progress (fetch has none for uploads): resolves with the JSON answer. */
export function upload(path, form, onProgress = () => {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.responseType = "text";
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    });
    xhr.addEventListener("load", () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, (data && data.error) || `${xhr.status}`, (data && data.kind) || ""));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "the upload failed: is the node running?")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "upload cancelled")));
    xhr.send(form);
  });
}

/** Every daemon event, dispatched by kind (see the top of this file). */
export const events = new EventTarget();

let socket = null;
let retry = 0;
let stopped = false;
let state = "closed";

export function eventsState() { return state; }

function setState(next) {
  state = next;
  events.dispatchEvent(new CustomEvent("ws", { detail: { state: next } }));
}

/** Open the event stream; it reconnects (backing off up to 10 s) until stopEvents(). */
export function startEvents() {
  stopped = false;
  if (socket) return;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/events`;
  const ws = new WebSocket(url);
  socket = ws;
  ws.addEventListener("open", () => {
    retry = 0;
    setState("open");
  });
  ws.addEventListener("message", (msg) => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch { return; }
    if (!ev || typeof ev.event !== "string") return;
    events.dispatchEvent(new CustomEvent(ev.event, { detail: ev }));
    events.dispatchEvent(new CustomEvent("event", { detail: ev }));
  });
  ws.addEventListener("close", async () => {
    socket = null;
    if (stopped) { setState("closed"); return; }
    // A refused handshake looks like any close: ask the API whether we are signed in.
    try {
      await api("GET", "/api/status");
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) { setState("unauthorized"); return; }
    }
    setState("closed");
    const delay = Math.min(10000, 500 * 2 ** retry++);
    setTimeout(() => { if (!stopped) startEvents(); }, delay);
  });
}

export function stopEvents() {
  stopped = true;
  if (socket) socket.close();
}
