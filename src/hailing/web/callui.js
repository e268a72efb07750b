// The call part of the web app: the incoming-call panel (ring tone, system notification
// when the tab is hidden), the in-call view (videos, controls, live stats), started from
// the contact list's call buttons.
//
// Hook: app.js imports this module once the page is signed in; it initializes itself with
// api.js (requests, the daemon's events). A call button dispatches
//   document.dispatchEvent(new CustomEvent("hailing:call", {detail: {contact, name, media}}))
// (contact: a contact id or name; media: "audio" | "video"). The in-call view goes into
// #call-area and the incoming-call panels into #incoming-area when index.html has them.
// Everything is built with DOM calls and classes from call.css (CSP: no inline script or
// style attribute).
//
// window.hailingCalls exposes the state for tests and benchmarks (see docs/ui.md).

import { api, events as apiEvents } from "./api.js";
import { Call, defaultRequest, now, shortId } from "./call.js";
import { Ringer } from "./ringtone.js";
import { CallView, el, icon, initials } from "./callview.js";

const RING_EVENTS = new Set(["ring", "ring-ended", "missed", "call-ended"]);

const state = {
  request: defaultRequest,
  contactName: (c) => c,
  current: null,
  rings: new Map(), // call id -> {call, panel, notification}
  ringer: null,
  view: null,
  stack: null,
  baseTitle: "",
};

export const hailingCalls = {
  get current() { return state.current; },
  get pc() { return state.current ? state.current.pc : null; },
  calls: [], // every Call of this page, oldest first
  notifications: [], // {title, body, call, at} for each system notification shown
  get ringing() { return state.rings.size > 0; },
  get ringTonePlaying() { return !!(state.ringer && state.ringer.playing); },
  get firstRemoteFrameAt() { return state.current ? state.current.firstRemoteFrameAt ?? null : null; },
  get remoteFramesRendered() { return state.current ? state.current.remoteFrames || 0 : 0; },
  get stats() { return state.current ? state.current.stats : null; },
  // Remote video frames decoded (getStats, refreshed every second while connected).
  get framesDecoded() { return state.current && state.current.stats ? state.current.stats.framesDecoded : 0; },
  get view() { return state.view; }, // view.lingerMs: how long an ended call stays shown
  // Fresh numbers from getStats (frames decoded, bitrates, path...).
  async refreshStats() { return state.current ? state.current.refreshStats() : null; },
  start: (contact, media, name) => startCall(contact, media, name),
  accept: (id, options) => acceptRing(id, options),
  decline: (id) => declineRing(id),
  hangUp: () => (state.current ? state.current.hangUp() : undefined),
};

// Set up once (called at import with api.js; the arguments are for other pages and tests).
export function initCalls({ request, events, contactName } = {}) {
  if (state.view) return hailingCalls;
  if (typeof request === "function") state.request = request;
  if (typeof contactName === "function") state.contactName = contactName;
  state.baseTitle = document.title;
  state.ringTitle = "";
  watchTitle();
  addStylesheet();
  state.ringer = new Ringer();
  state.stack = el("div", { class: "hl-incoming-stack hl-calls", "aria-live": "assertive" });
  state.view = new CallView({
    onClose: () => closeView(),
    onRedial: (call) => startCall(call.contact, call.media, call.name),
  });
  state.view.root.classList.add("hl-calls");
  state.area = document.getElementById("call-area");
  (document.getElementById("incoming-area") || document.body).append(state.stack);
  (state.area || document.body).append(state.view.root);
  // The notification chip: in the sidebar's flow above the call log, else in a corner.
  const log = document.getElementById("call-log");
  const chipBox = el("div", { class: log ? "hl-calls hl-chip-box" : "hl-calls" }, notificationChip());
  if (log) log.before(chipBox);
  else document.body.append(chipBox);
  document.addEventListener("hailing:call", onCallRequest);
  document.addEventListener("visibilitychange", onVisibility);
  window.addEventListener("pagehide", () => state.current?.abandon());
  subscribe(events, onDaemonEvent);
  recoverRings();
  window.hailingCalls = hailingCalls;
  return hailingCalls;
}

function addStylesheet() {
  const href = new URL("./call.css", import.meta.url).href;
  if ([...document.styleSheets].some((s) => s.href === href)) return;
  document.head.append(el("link", { rel: "stylesheet", href }));
}

// -- the daemon's events -------------------------------------------------------------------

// `events` may be: a function taking a listener, an object with subscribe(listener) or
// on(listener), or an EventTarget dispatching CustomEvents named by the event's kind
// (detail: the event object). Absent: our own WebSocket to /api/events.
function subscribe(events, listener) {
  if (typeof events === "function") return events(listener);
  if (events && typeof events.subscribe === "function") return events.subscribe(listener);
  if (events && typeof events.on === "function") return events.on(listener);
  if (events && typeof events.addEventListener === "function") {
    for (const kind of RING_EVENTS) events.addEventListener(kind, (e) => listener(e.detail));
    events.addEventListener("ws", (e) => { if (e.detail && e.detail.state === "open") recoverRings(); });
    return undefined;
  }
  return ownSocket(listener);
}

function ownSocket(listener, delay = 500) {
  const url = new URL("/api/events", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.addEventListener("open", () => { delay = 500; recoverRings(); });
  ws.addEventListener("message", (e) => {
    try {
      listener(JSON.parse(e.data));
    } catch {
      /* not an event */
    }
  });
  ws.addEventListener("close", () => setTimeout(() => ownSocket(listener, Math.min(delay * 2, 10000)), delay));
}

function onDaemonEvent(ev) {
  if (!ev || typeof ev !== "object") return;
  if (ev.event === "ring" && typeof ev.call === "string") showRing(ev);
  else if ((ev.event === "ring-ended" || ev.event === "missed") && typeof ev.call === "string") {
    endRing(ev.call, ev.reason || (ev.event === "missed" ? "missed" : ""));
  }
}

// A ring that started before this page listened (a reload, the tab opened from a
// notification): the call log has it as "ringing".
async function recoverRings() {
  try {
    const res = await state.request("GET", "/api/calls?limit=20");
    for (const c of (res && res.calls) || []) {
      if (c.direction === "in" && c.state === "ringing" && !state.rings.has(c.call)) {
        showRing({ event: "ring", call: c.call, from: c.from, contact: c.contact, media: c.media, expires: c.expires });
      }
    }
  } catch {
    /* no call API yet, or not signed in */
  }
}

// -- outgoing ------------------------------------------------------------------------------

// A call button was clicked: {detail: {contact, name, media}}.
function onCallRequest(e) {
  const d = (e && e.detail) || {};
  if (typeof d.contact !== "string" || !d.contact) return;
  askNotificationPermission();
  startCall(d.contact, d.media === "video" ? "video" : "audio", d.name);
}

export function startCall(contact, media = "audio", name = undefined) {
  const clicked = now();
  if (state.current && state.current.active) {
    state.view.flash("Hang up the current call first");
    return null;
  }
  const call = Call.outgoing({ request: state.request, contact, name: name || state.contactName(contact), media });
  call.timeline.clicked = clicked;
  adopt(call);
  call.start();
  return call;
}

function adopt(call) {
  hailingCalls.calls.push(call);
  state.current = call;
  state.ringer.unlock();
  call.addEventListener("state", (e) => {
    const s = e.detail.state;
    if (s === "calling" && call.direction === "out") state.ringer.ringback();
    else if (s !== "calling") state.ringer.stopRingback();
  });
  showView(true);
  state.view.show(call);
}

function showView(on) {
  if (state.area) state.area.hidden = !on;
}

function closeView() {
  if (state.current && state.current.active) return;
  state.view.hide();
  showView(false);
}

// -- incoming ------------------------------------------------------------------------------

function showRing(ring) {
  if (state.rings.has(ring.call)) return;
  if (hailingCalls.calls.some((c) => c.id === ring.call)) return; // ours (another tab's echo)
  const call = Call.incoming({ request: state.request, ring });
  if (!ring.contact) call.name = state.contactName(ring.from) || shortId(ring.from);
  const panel = ringPanel(call);
  const entry = { call, panel, notification: null, timer: null };
  state.rings.set(call.id, entry);
  state.stack.append(panel);
  if (typeof ring.expires === "number") {
    const ms = ring.expires * 1000 - Date.now();
    if (ms > 0) entry.timer = setTimeout(() => endRing(call.id, "expired"), ms + 1000);
  }
  state.ringer.ring();
  updateTitle();
  if (document.hidden) notify(entry);
}

function ringPanel(call) {
  const kind = call.media === "video" ? "Incoming video call" : "Incoming audio call";
  const accept = el("button", { class: "hl-round hl-green", "data-testid": "accept", title: "Accept", "aria-label": "Accept" },
    icon(call.media === "video" ? "video" : "phone"));
  const decline = el("button", { class: "hl-round hl-red", "data-testid": "decline", title: "Decline", "aria-label": "Decline" },
    icon("hangup"));
  accept.addEventListener("click", () => acceptRing(call.id));
  decline.addEventListener("click", () => declineRing(call.id));
  let audioOnly = null;
  if (call.media === "video") {
    audioOnly = el("button", { class: "hl-round hl-green-outline", "data-testid": "accept-audio",
      title: "Answer with sound only", "aria-label": "Answer with sound only" }, icon("phone"));
    audioOnly.addEventListener("click", () => acceptRing(call.id, { video: false }));
  }
  return el("div", {
    class: "hl-incoming", role: "alertdialog", "aria-label": `${kind} from ${call.name}`,
    "data-testid": "incoming-call", "data-call": call.id, "data-media": call.media,
    "data-from": call.from || "", "data-name": call.name,
  },
  el("div", { class: "hl-avatar hl-pulse" }, initials(call.name)),
  el("div", { class: "hl-incoming-text" },
    el("div", { class: "hl-incoming-name", "data-testid": "incoming-name" }, call.name),
    el("div", { class: "hl-incoming-kind", "data-testid": "incoming-media" }, kind)),
  el("div", { class: "hl-incoming-actions" }, decline, audioOnly, accept));
}

export async function acceptRing(id, options = {}) {
  const entry = state.rings.get(id);
  if (!entry) return null;
  removeRing(id);
  if (state.current && state.current.active) await state.current.hangUp("you took another call");
  const call = entry.call;
  call.timeline.clicked = now();
  adopt(call);
  call.accept(options);
  return call;
}

export async function declineRing(id) {
  const entry = state.rings.get(id);
  if (!entry) return;
  removeRing(id);
  hailingCalls.calls.push(entry.call);
  await entry.call.decline();
}

function endRing(id, reason) {
  const entry = state.rings.get(id);
  if (!entry) return;
  removeRing(id);
  entry.call.ringEnded(reason);
  hailingCalls.calls.push(entry.call);
}

function removeRing(id) {
  const entry = state.rings.get(id);
  if (!entry) return;
  state.rings.delete(id);
  clearTimeout(entry.timer);
  entry.panel.remove();
  if (entry.notification) entry.notification.close();
  if (state.rings.size === 0) state.ringer.stop();
  updateTitle();
}

// While a call rings the tab's title says who calls, in front of the app's own title
// (which app.js keeps changing: unread counts), restored when the ringing stops.
function updateTitle() {
  const first = state.rings.values().next().value;
  state.ringTitle = first ? `\u{1F4DE} ${first.call.name} is calling` : "";
  applyTitle();
}

function applyTitle() {
  const title = state.ringTitle ? `${state.ringTitle} · ${state.baseTitle}` : state.baseTitle;
  if (document.title !== title) document.title = title;
}

function watchTitle() {
  const el_ = document.querySelector("title") || document.head.appendChild(document.createElement("title"));
  new MutationObserver(() => {
    const t = document.title;
    const ours = state.ringTitle && t.startsWith(state.ringTitle);
    if (!ours) {
      state.baseTitle = t;
      applyTitle();
    }
  }).observe(el_, { childList: true, characterData: true, subtree: true });
}

// -- system notifications ----------------------------------------------------------------

function onVisibility() {
  if (!document.hidden) {
    for (const entry of state.rings.values()) {
      if (entry.notification) entry.notification.close();
      entry.notification = null;
    }
    return;
  }
  for (const entry of state.rings.values()) if (!entry.notification) notify(entry);
}

function notify(entry) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const call = entry.call;
  const title = `${call.name} is calling`;
  const body = call.media === "video" ? "Incoming video call — click to answer in hailing" : "Incoming audio call — click to answer in hailing";
  try {
    const n = new Notification(title, { body, tag: `hailing-call-${call.id}`, requireInteraction: true, renotify: true });
    n.addEventListener("click", () => {
      window.focus();
      n.close();
    });
    entry.notification = n;
    hailingCalls.notifications.push({ title, body, call: call.id, at: Date.now() });
  } catch {
    /* e.g. a browser that wants a service worker for notifications */
  }
}

function askNotificationPermission() {
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission().then(updateChip, () => {});
  }
}

let chip = null;
function notificationChip() {
  chip = el("button", { class: "hl-chip", "data-testid": "enable-notifications", type: "button",
    title: "Get a system notification when someone calls while this tab is in the background" },
  icon("bell"), "Allow call notifications");
  chip.addEventListener("click", () => {
    state.ringer.unlock();
    if ("Notification" in window) Notification.requestPermission().then(updateChip, () => {});
  });
  updateChip();
  return chip;
}

function updateChip() {
  if (chip) chip.hidden = !("Notification" in window) || Notification.permission !== "default";
}

initCalls({ request: api, events: apiEvents });
