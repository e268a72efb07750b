// The hailing web app: contacts with presence, chat, files, the call log, own status and
// contact card. Calls (the RTCPeerConnection, the incoming-call panel, in-call controls)
// live in callui.js / call.js, loaded at the end; this module tells them about a click on
// "call" with a DOM event:
//
//   document.dispatchEvent(new CustomEvent("hailing:call", {
//       detail: { contact: CONTACT_ID, name: NAME, media: "audio" | "video" } }));
//
// and refreshes the call log on the daemon's call events. Everything comes from the
// daemon's API (api.js): no other host is ever contacted.

import { api, upload, events, startEvents, ApiError } from "./api.js";
import { $, el, clear, initials, ago, bytes, clock, day, toast, ask, confirmBox } from "./ui.js";

const state = {
  me: null,                 // GET /api/status
  contacts: new Map(),      // contact_id -> {contact_id, name, state, online, last_seen}
  selected: null,           // contact_id
  messages: new Map(),      // contact_id -> [entry] (history entries and pending sends)
  oldest: new Map(),        // contact_id -> smallest history id loaded (paging back)
  unread: new Map(),        // contact_id -> count
  transfers: new Map(),     // key -> {row, progress}
  callsRoute: true,         // GET /api/calls exists (false after a 404)
};

// -- contacts ------------------------------------------------------------------------------

function contactById(id) { return state.contacts.get(id) || null; }

function displayName(id, fallback) {
  const c = contactById(id);
  return c ? c.name : (fallback || `${id.slice(0, 10)}…`);
}

function presenceText(c) {
  if (c.state === "blocked") return "blocked";
  if (c.online) return "connected";
  if (c.last_seen) return `last seen ${ago(c.last_seen)}`;
  return "not seen yet";
}

async function loadContacts() {
  const { contacts } = await api("GET", "/api/contacts");
  state.contacts = new Map(contacts.map((c) => [c.contact_id, c]));
  renderContacts();
  if (state.selected && !state.contacts.has(state.selected)) selectContact(null);
  else if (state.selected) renderChatHead();
}

function renderContacts() {
  const list = $("#contact-list");
  const sorted = [...state.contacts.values()].sort((a, b) =>
    (b.state !== "blocked") - (a.state !== "blocked") || (b.online ? 1 : 0) - (a.online ? 1 : 0)
    || a.name.localeCompare(b.name));
  clear(list);
  for (const c of sorted) list.append(contactRow(c));
  $("#contacts-empty").hidden = sorted.length > 0;
}

function contactRow(c) {
  const unread = state.unread.get(c.contact_id) || 0;
  const blocked = c.state === "blocked";
  const callButton = (media, label, path) => {
    const b = el("button", { type: "button", class: "icon-btn call", title: `${label} call with ${c.name}`,
                             "aria-label": `${label} call with ${c.name}`, "data-testid": `call-${media}` },
                 svgIcon(path));
    b.disabled = blocked;
    b.addEventListener("click", (e) => { e.stopPropagation(); startCall(c.contact_id, media); });
    return b;
  };
  const open = el("button", { type: "button", class: "contact-open", "data-testid": "contact-open" },
    el("span", { class: "avatar", "data-hue": hue(c.contact_id), "aria-hidden": "true" }, initials(c.name)),
    el("span", { class: "contact-text" },
      el("span", { class: "contact-name" }, c.name),
      el("span", { class: "contact-presence", "data-testid": "presence" }, presenceText(c))),
    unread ? el("span", { class: "badge", "data-testid": "unread" }, String(unread)) : "");
  open.addEventListener("click", () => selectContact(c.contact_id));
  return el("li", {
    class: `contact${state.selected === c.contact_id ? " selected" : ""}`,
    "data-testid": "contact", "data-name": c.name, "data-contact": c.contact_id,
    "data-state": c.state, "data-online": c.online ? "true" : "false",
  }, open, el("span", { class: "contact-calls" },
    callButton("audio", "Audio", ICONS.phone), callButton("video", "Video", ICONS.video)));
}

function hue(id) {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) % 12;
  return String(h);
}

const ICONS = {
  phone: "M6.6 10.8a15 15 0 006.6 6.6l2.2-2.2a1 1 0 011-.25 11.4 11.4 0 003.6.57 1 1 0 011 1V20a1 1 0 01-1 1A17 17 0 013 4a1 1 0 011-1h3.5a1 1 0 011 1c0 1.25.2 2.45.57 3.57a1 1 0 01-.25 1z",
  video: "M17 10.5V7a1 1 0 00-1-1H4a1 1 0 00-1 1v10a1 1 0 001 1h12a1 1 0 001-1v-3.5l4 4v-11z",
  file: "M14 2H6a2 2 0 00-2 2v16a2 2 0 002 2h12a2 2 0 002-2V8zM14 2v6h6",
};

function svgIcon(d) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", d);
  svg.append(path);
  return svg;
}

function startCall(contact, media) {
  const c = contactById(contact);
  document.dispatchEvent(new CustomEvent("hailing:call", {
    detail: { contact, name: c ? c.name : contact, media } }));
}

function updateContact(id, patch) {
  const c = contactById(id);
  if (!c) return;
  Object.assign(c, patch);
  renderContacts();
  if (state.selected === id) renderChatHead();
}

// -- the conversation ----------------------------------------------------------------------

async function selectContact(id) {
  state.selected = id;
  document.body.dataset.selected = id ? "true" : "false";
  $("#app").dataset.view = id ? "chat" : "contacts";
  $("#no-contact").hidden = Boolean(id);
  $("#chat").hidden = !id;
  $("#contact-menu").open = false;
  if (!id) { renderContacts(); return; }
  state.unread.delete(id);
  renderContacts();
  renderChatHead();
  clear($("#messages"));
  renderTransfers();
  await loadHistory(id);
  $("#chat-input").focus();
}

function renderChatHead() {
  const c = contactById(state.selected);
  if (!c) return;
  $("#chat-name").textContent = c.name;
  $("#chat-presence").textContent = presenceText(c);
  $("#chat").dataset.online = c.online ? "true" : "false";
  const blocked = c.state === "blocked";
  $("#contact-block").hidden = blocked;
  $("#contact-allow").hidden = !blocked;
  $("#chat-call-audio").disabled = blocked;
  $("#chat-call-video").disabled = blocked;
}

async function loadHistory(id, before = null) {
  const q = new URLSearchParams({ contact: id, limit: "100" });
  if (before) q.set("before", String(before));
  let page;
  try {
    page = (await api("GET", `/api/history?${q}`)).messages;
  } catch (err) {
    showError("#chat-error", err);
    return;
  }
  if (state.selected !== id) return;
  const known = state.messages.get(id) || [];
  const pending = known.filter((m) => m.pending);
  const merged = before ? [...page, ...known] : [...page, ...pending];
  state.messages.set(id, merged);
  if (page.length) state.oldest.set(id, Math.min(...page.map((m) => m.id)));
  renderMessages(page.length === 100);
  if (!before) scrollToEnd();
}

function renderMessages(more = false) {
  const list = $("#messages");
  clear(list);
  const id = state.selected;
  if (more) {
    const older = el("button", { type: "button", class: "older", "data-testid": "older" }, "Earlier messages");
    older.addEventListener("click", () => loadHistory(id, state.oldest.get(id)));
    list.append(el("li", { class: "more" }, older));
  }
  let lastDay = "";
  for (const m of state.messages.get(id) || []) {
    const d = day(m.at);
    if (d !== lastDay) {
      list.append(el("li", { class: "day", "aria-hidden": "true" }, d));
      lastDay = d;
    }
    list.append(messageItem(m));
  }
  if (!(state.messages.get(id) || []).length) {
    list.append(el("li", { class: "empty" }, "No messages yet. Say hello."));
  }
}

function messageItem(m) {
  const attrs = { class: `msg ${m.direction}`, "data-testid": "chat-message", "data-direction": m.direction,
                  "data-kind": m.kind };
  if (m.id) attrs["data-id"] = String(m.id);
  if (m.pending) attrs["data-pending"] = "true";
  if (m.failed) attrs["data-failed"] = "true";
  let body;
  if (m.kind === "file") {
    const label = el("span", { class: "file-name" }, m.name || "file");
    const link = m.direction === "in" && m.id
      ? el("a", { href: `/api/files/${m.id}`, download: m.name || "", "data-testid": "file-download",
                  class: "file-link" }, svgIcon(ICONS.file), label)
      : el("span", { class: "file-link" }, svgIcon(ICONS.file), label);
    body = el("div", { class: "bubble file" }, link, el("span", { class: "file-size" }, bytes(m.size || 0)));
  } else {
    body = el("div", { class: "bubble" }, m.text || "");
  }
  const meta = el("span", { class: "meta" }, m.failed ? `not sent: ${m.failed}` : m.pending ? "sending…" : clock(m.at));
  return el("li", attrs, body, meta);
}

function scrollToEnd() {
  const list = $("#messages");
  list.scrollTop = list.scrollHeight;
}

function addMessage(contact, m) {
  const list = state.messages.get(contact);
  if (!list) return;  // never opened: loaded from history when it is
  if (m.id && list.some((x) => x.id === m.id)) return;
  list.push(m);
  if (state.selected === contact) {
    renderMessages();
    scrollToEnd();
  }
}

async function sendText(event) {
  event.preventDefault();
  const input = $("#chat-input");
  const text = input.value.trim();
  const contact = state.selected;
  if (!text || !contact) return;
  input.value = "";
  autosize();
  const m = { direction: "out", kind: "text", text, at: Date.now() / 1000, pending: true };
  addMessage(contact, m);
  try {
    await api("POST", "/api/send", { contact, text });
    m.pending = false;
  } catch (err) {
    m.pending = false;
    m.failed = err.message;
  }
  if (state.selected === contact) renderMessages();
}

function onSent(ev) {
  // Our own sends (this tab, another tab or the CLI): attach the history id to the
  // pending message it confirms, or add it.
  const list = state.messages.get(ev.to);
  if (!list) return;
  const mine = list.find((m) => !m.id && m.kind === "text" && m.direction === "out" && m.text === ev.text && !m.failed);
  if (mine) {
    mine.id = ev.id;
    mine.pending = false;
    mine.at = ev.at || mine.at;
    if (state.selected === ev.to) renderMessages();
  } else {
    addMessage(ev.to, { id: ev.id, direction: "out", kind: "text", text: ev.text, at: ev.at });
  }
}

function onIncoming(ev) {
  const from = ev.from;
  const m = ev.event === "file"
    ? { id: ev.id, direction: "in", kind: "file", name: ev.name, size: ev.size, sha256: ev.sha256, at: ev.at }
    : { id: ev.id, direction: "in", kind: "text", text: ev.text, at: ev.at };
  updateContact(from, { online: true, last_seen: ev.at });
  if (state.selected === from) {
    addMessage(from, m);
  } else {
    state.unread.set(from, (state.unread.get(from) || 0) + 1);
    renderContacts();
    const who = displayName(from, ev.contact);
    toast(ev.event === "file" ? `${who} sent a file: ${ev.name}` : `${who}: ${ev.text}`,
          () => selectContact(from));
  }
}

// -- files ---------------------------------------------------------------------------------

function transferKey(contact, name) { return `${contact}\n${name}`; }

function renderTransfers() {
  const box = $("#transfers");
  clear(box);
  for (const [key, t] of state.transfers) {
    if (key.startsWith(`${state.selected}\n`)) box.append(t.row);
  }
}

function transfer(contact, name, size, label) {
  const key = transferKey(contact, name);
  let t = state.transfers.get(key);
  if (!t) {
    const progress = el("progress", { "data-testid": "file-progress", max: String(Math.max(size, 1)), value: "0" });
    const status = el("span", { class: "transfer-status" }, label);
    const row = el("div", { class: "transfer", "data-testid": "file-transfer", "data-name": name },
      svgIcon(ICONS.file), el("span", { class: "transfer-name" }, name), progress, status);
    t = { row, progress, status };
    state.transfers.set(key, t);
    renderTransfers();
  }
  return t;
}

function endTransfer(contact, name) {
  const key = transferKey(contact, name);
  const t = state.transfers.get(key);
  if (!t) return;
  state.transfers.delete(key);
  t.row.remove();
}

async function sendFile() {
  const input = $("#file-input");
  const file = input.files && input.files[0];
  const contact = state.selected;
  input.value = "";
  if (!file || !contact) return;
  const t = transfer(contact, file.name, file.size, "uploading…");
  t.row.dataset.phase = "upload";
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    await upload(`/api/upload?contact=${encodeURIComponent(contact)}`, form, (loaded, total) => {
      t.progress.max = total;
      t.progress.value = loaded;
      if (loaded >= total) {
        t.status.textContent = "calling…";
        t.progress.removeAttribute("value");  // indeterminate until the first file-progress
      }
    });
    t.row.dataset.phase = "done";
    endTransfer(contact, file.name);
  } catch (err) {
    t.row.dataset.phase = "failed";
    t.status.textContent = `not sent: ${err.message}`;
    const dismiss = el("button", { type: "button", class: "link", "data-testid": "dismiss-transfer" }, "Dismiss");
    dismiss.addEventListener("click", () => endTransfer(contact, file.name));
    t.row.append(dismiss);
  }
}

function onFileProgress(ev) {
  const t = transfer(ev.to, ev.name, ev.size, "");
  t.row.dataset.phase = "send";
  t.progress.max = Math.max(ev.size, 1);
  t.progress.value = ev.sent;
  const pct = ev.size ? Math.floor((100 * ev.sent) / ev.size) : 100;
  t.status.textContent = `${pct}% · ${bytes(ev.sent)} of ${bytes(ev.size)}`;
}

function onFileSent(ev) {
  endTransfer(ev.to, ev.name);
  addMessage(ev.to, { id: ev.id, direction: "out", kind: "file", name: ev.name, size: ev.size, at: ev.at });
}

function onFileStarted(ev) {
  const t = transfer(ev.from, ev.name, ev.size, `receiving ${bytes(ev.size)}…`);
  t.row.dataset.phase = "receive";
  t.progress.removeAttribute("value");
}

function onFileEnded(ev) {
  endTransfer(ev.from, ev.name);
}

// -- me: status and card -------------------------------------------------------------------

async function loadMe() {
  state.me = await api("GET", "/api/status");
  $("#me-name").textContent = state.me.name || "Me";
  $("#me-avatar").textContent = initials(state.me.name || "Me");
  $("#me-avatar").dataset.hue = hue(state.me.contact_id);
  showStatus(state.me.status);
}

function showStatus(status) {
  $("#status-select").value = status;
  $("#status-dot").dataset.status = status;
}

async function setStatus() {
  const status = $("#status-select").value;
  try {
    showStatus((await api("POST", "/api/status", { status })).status);
  } catch (err) {
    toast(`status not changed: ${err.message}`);
    showStatus(state.me ? state.me.status : "available");
  }
}

async function showCard() {
  const dialog = $("#card-dialog");
  try {
    const card = await api("GET", "/api/card");
    $("#my-card").textContent = card.card;
    $("#my-id").textContent = card.contact_id;
    $("#my-qr").src = `/api/card/qr.svg?t=${Date.now()}`;
  } catch (err) {
    toast(`no card: ${err.message}`);
    return;
  }
  dialog.showModal();
}

async function copyCard() {
  const text = $("#my-card").textContent;
  try {
    await navigator.clipboard.writeText(text);
    toast("Card copied");
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("#my-card"));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
}

// -- adding and changing contacts ----------------------------------------------------------

const CONTACT_ID = /^hl[a-z0-9]{58}$/i;

async function addContact(event) {
  event.preventDefault();
  const input = $("#add-contact-input");
  const nameInput = $("#add-contact-name");
  const text = input.value.trim();
  hideError("#add-contact-error");
  if (!text) return;
  const body = { text };
  const name = nameInput.value.trim();
  if (CONTACT_ID.test(text.replace(/\s+/g, "")) && !name) {
    nameInput.hidden = false;
    nameInput.focus();
    showError("#add-contact-error", "A contact id carries no name: give one.");
    return;
  }
  if (name) body.name = name;
  try {
    const c = await api("POST", "/api/contacts/import", body);
    input.value = "";
    nameInput.value = "";
    nameInput.hidden = true;
    await loadContacts();
    toast(`${c.name} added`);
  } catch (err) {
    showError("#add-contact-error", err);
    if (err instanceof ApiError && err.status === 400 && /name/.test(err.message)) {
      nameInput.hidden = false;  // no name on the card, or one already taken: ask for one
      nameInput.focus();
    }
  }
}

async function contactAction(action) {
  const id = state.selected;
  const c = contactById(id);
  $("#contact-menu").open = false;
  if (!c) return;
  const path = `/api/contacts/${encodeURIComponent(id)}`;
  try {
    if (action === "rename") {
      const name = await ask(`Rename ${c.name}`, c.name);
      if (!name || name === c.name) return;
      await api("POST", `${path}/rename`, { name });
    } else if (action === "block") {
      if (!(await confirmBox(`Block ${c.name}?`, "Their calls and messages are refused; they cannot tell you blocked them.", "Block"))) return;
      await api("POST", `${path}/block`);
    } else if (action === "allow") {
      await api("POST", `${path}/allow`);
    } else if (action === "remove") {
      if (!(await confirmBox(`Remove ${c.name}?`, "The history stays; they are no longer a contact.", "Remove"))) return;
      await api("DELETE", path);
      state.contacts.delete(id);
      selectContact(null);
    }
    await loadContacts();
  } catch (err) {
    toast(err.message);
  }
}

// -- the call log --------------------------------------------------------------------------

const CALL_WORDS = {
  missed: "Missed", declined: "Declined", refused: "Refused", cancelled: "Cancelled",
  failed: "Failed", answered: "Answered", ended: "", ringing: "Ringing",
};

async function loadCalls() {
  if (!state.callsRoute) return;
  let calls;
  try {
    calls = (await api("GET", "/api/calls?limit=20")).calls || [];
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
      state.callsRoute = false;
      $("#call-log").hidden = true;
      return;
    }
    calls = [];
  }
  const list = $("#call-log-list");
  clear(list);
  for (const c of calls) list.append(callItem(c));
  $("#call-log-empty").hidden = calls.length > 0;
  $("#call-log").hidden = false;
}

function callItem(c) {
  const who = c.direction === "in" ? c.from : c.to;
  const name = c.contact || displayName(who || "", "");
  const missed = c.direction === "in" && (c.state === "missed" || c.state === "refused");
  let what = CALL_WORDS[c.state] ?? c.state;
  if (c.state === "refused" && c.reason) what = `Refused (${c.reason})`;
  if ((c.state === "ended" || c.state === "answered") && c.duration_s != null) what = duration(c.duration_s);
  const attrs = { class: `call-entry ${c.direction}${missed ? " missed" : ""}`, "data-testid": missed ? "missed-call" : "call-entry",
                  "data-state": c.state, "data-direction": c.direction, "data-call": c.call || "" };
  const arrow = c.direction === "in" ? "↙" : "↗";
  const item = el("li", attrs,
    el("span", { class: "call-dir", "aria-label": c.direction === "in" ? "incoming" : "outgoing" }, arrow),
    el("span", { class: "call-who" }, name || "someone unknown"),
    el("span", { class: "call-what" }, `${c.media === "video" ? "video · " : ""}${what}`),
    el("time", { class: "call-when" }, ago(c.at)));
  if (who && contactById(who)) item.addEventListener("click", () => selectContact(who));
  return item;
}

function duration(s) {
  const m = Math.floor(s / 60);
  return m ? `${m} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`;
}

// -- small helpers -------------------------------------------------------------------------

function showError(sel, err) {
  const p = $(sel);
  p.textContent = typeof err === "string" ? err : err.message;
  p.hidden = false;
}

function hideError(sel) { $(sel).hidden = true; }

function autosize() {
  const t = $("#chat-input");
  t.rows = Math.min(6, Math.max(1, t.value.split("\n").length));
}

function connState(s) {
  const e = $("#conn-state");
  e.dataset.state = s;
  e.textContent = { open: "", closed: "reconnecting to your node…", unauthorized: "signed out",
                    connecting: "connecting…" }[s] ?? s;
  $("#signin").hidden = s !== "unauthorized";
}

// -- wiring --------------------------------------------------------------------------------

function wire() {
  $("#add-contact-form").addEventListener("submit", addContact);
  $("#composer").addEventListener("submit", sendText);
  $("#chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("#composer").requestSubmit();
    }
  });
  $("#chat-input").addEventListener("input", autosize);
  $("#file-input").addEventListener("change", sendFile);
  $("#status-select").addEventListener("change", setStatus);
  $("#show-card").addEventListener("click", showCard);
  $("#copy-card").addEventListener("click", copyCard);
  $("#back").addEventListener("click", () => selectContact(null));
  $("#chat-call-audio").addEventListener("click", () => startCall(state.selected, "audio"));
  $("#chat-call-video").addEventListener("click", () => startCall(state.selected, "video"));
  for (const action of ["rename", "block", "allow", "remove"]) {
    $(`#contact-${action}`).addEventListener("click", () => contactAction(action));
  }

  events.addEventListener("ws", async (e) => {
    connState(e.detail.state);
    if (e.detail.state === "open") {
      // (Re)connected: whatever happened meanwhile is in the API.
      await Promise.allSettled([loadMe(), loadContacts(), loadCalls()]);
      if (state.selected) loadHistory(state.selected);
    }
  });
  events.addEventListener("message", (e) => onIncoming(e.detail));
  events.addEventListener("file", (e) => { onFileEnded(e.detail); onIncoming(e.detail); });
  events.addEventListener("file-started", (e) => onFileStarted(e.detail));
  events.addEventListener("file-aborted", (e) => onFileEnded(e.detail));
  events.addEventListener("sent", (e) => onSent(e.detail));
  events.addEventListener("file-progress", (e) => onFileProgress(e.detail));
  events.addEventListener("file-sent", (e) => onFileSent(e.detail));
  events.addEventListener("connected", (e) => updateContact(e.detail.from || e.detail.to, { online: true, last_seen: e.detail.at }));
  events.addEventListener("closed", (e) => {
    if (!e.detail.links) updateContact(e.detail.from || e.detail.to, { online: false, last_seen: e.detail.at });
  });
  events.addEventListener("contact", () => loadContacts());
  events.addEventListener("presence", (e) => showStatus(e.detail.status));
  for (const kind of ["call", "missed", "call-ended", "ring-ended", "ring"]) {
    events.addEventListener(kind, () => loadCalls());
  }
  setInterval(() => { renderContacts(); if (state.selected) renderChatHead(); }, 60000);  // "last seen" ages
}

async function main() {
  wire();
  connState("connecting");
  try {
    await loadMe();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { connState("unauthorized"); return; }
  }
  startEvents();
  try {
    await import("./callui.js");
  } catch (err) {
    console.warn("calls are not available:", err);
  }
}

main();
