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

import { api, events, startEvents, ApiError } from "./api.js";
import { $, el, clear, initials, ago, bytes, clock, day, toast, ask, confirmBox, hue, svgIcon, ICONS } from "./ui.js";
import { state, hooks, contactById, displayName } from "./state.js";
import { renderTransfers, pickedFiles, sendFile, onFileProgress, onFileSent, onFileStarted, onFileEnded } from "./files.js";
import { loadCalls } from "./calllog.js";
import "./couple.js";  // "Connect by text": offers and answers as texts or QR codes

// -- contacts ------------------------------------------------------------------------------

function presenceText(c) {
  if (c.state === "blocked") return "blocked";
  if (c.online) return "connected";
  const seen = Math.max(c.last_seen || 0, state.callSeen.get(c.contact_id) || 0);
  if (seen) return `last seen ${ago(seen)}`;
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
  showUnread();
}

function showUnread() {
  const total = [...state.unread.values()].reduce((a, b) => a + b, 0);
  document.title = total ? `(${total}) hailing` : "hailing";
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
  for (const sel of ["#chat-input", "#chat-send", "#file-input"]) $(sel).disabled = blocked;
  $("#chat-input").placeholder = blocked ? `${c.name} is blocked: allow them (⋮) to chat` : "Message";
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
  if (m.failed && m.kind === "text") {
    const retry = el("button", { type: "button", class: "link", "data-testid": "retry" }, "Retry");
    retry.addEventListener("click", () => resend(state.selected, m));
    meta.append(" · ", retry);
  }
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
  await deliver(contact, m);
}

async function resend(contact, m) {
  m.failed = null;
  m.pending = true;
  m.at = Date.now() / 1000;
  if (state.selected === contact) renderMessages();
  await deliver(contact, m);
}

async function deliver(contact, m) {
  const text = m.text;
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
  const what = ev.event === "file" ? `sent a file: ${ev.name}` : ev.text;
  if (!contactById(from)) {
    // Someone not in the book (the daemon accepts anyone not blocked): offer to add them.
    toast(`Someone not in your contacts (${from.slice(0, 12)}…): ${what}`, () => {
      $("#add-contact-input").value = from;
      $("#add-contact-name").hidden = false;
      $("#add-contact-name").focus();
    });
    return;
  }
  updateContact(from, { online: true, last_seen: ev.at });
  const who = displayName(from, ev.contact);
  if (state.selected === from) {
    addMessage(from, m);
  } else {
    state.unread.set(from, (state.unread.get(from) || 0) + 1);
    renderContacts();
    toast(ev.event === "file" ? `${who} ${what}` : `${who}: ${what}`, () => selectContact(from));
  }
  if (document.hidden) notify(who, what, from);
}

function notify(title, body, from) {
  // A system notification when the tab is in the background (if the user allowed them,
  // e.g. with the calls' "allow call notifications" button).
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const n = new Notification(title, { body, tag: `hailing-message-${from}` });
    n.onclick = () => { window.focus(); selectContact(from); n.close(); };
  } catch {
    // some browsers only allow notifications from a service worker: the toast stays
  }
}

// -- me: status and card -------------------------------------------------------------------

async function loadMe() {
  state.me = await api("GET", "/api/status");
  $("#me-name").textContent = state.me.name || "Me";
  $("#me-avatar").textContent = initials(state.me.name || "Me");
  $("#me-avatar").dataset.hue = hue(state.me.contact_id);
  showStatus(state.me.status, state.me.accept_any);
}

function showStatus(status, acceptAny = undefined) {
  $("#status-select").value = status;
  $("#status-dot").dataset.status = status;
  if (state.me) {
    state.me.status = status;
    if (acceptAny !== undefined) state.me.accept_any = acceptAny;
  }
  if (acceptAny !== undefined) {
    $("#reach-anyone").checked = acceptAny;
    $("#reach-contacts").checked = !acceptAny;
  }
}

async function setReach() {
  const acceptAny = $("#reach-anyone").checked;
  try {
    const now = await api("POST", "/api/status", { accept_any: acceptAny });
    showStatus(now.status, now.accept_any);
  } catch (err) {
    toast(`not changed: ${err.message}`);
    if (state.me) showStatus(state.me.status, state.me.accept_any);
  }
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
  hooks.refresh = () => { renderContacts(); if (state.selected) renderChatHead(); };
  hooks.open = (id) => selectContact(id);
  hooks.call = (id, media) => startCall(id, media);
  hooks.addMessage = (contact, m) => addMessage(contact, m);
  $("#add-contact-form").addEventListener("submit", addContact);
  $("#add-contact-input").addEventListener("input", () => hideError("#add-contact-error"));
  $("#composer").addEventListener("submit", sendText);
  $("#chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("#composer").requestSubmit();
    }
  });
  $("#chat-input").addEventListener("input", autosize);
  $("#file-input").addEventListener("change", pickedFiles);
  // Files dropped on the conversation are sent too.
  const chat = $("#chat");
  chat.addEventListener("dragover", (e) => {
    if (![...e.dataTransfer.types].includes("Files")) return;
    e.preventDefault();
    chat.dataset.drop = "true";
  });
  chat.addEventListener("dragleave", (e) => {
    if (!chat.contains(e.relatedTarget)) delete chat.dataset.drop;
  });
  chat.addEventListener("drop", (e) => {
    delete chat.dataset.drop;
    if (!e.dataTransfer.files.length) return;
    e.preventDefault();
    for (const file of e.dataTransfer.files) sendFile(file);
  });
  $("#status-select").addEventListener("change", setStatus);
  $("#show-card").addEventListener("click", showCard);
  $("#show-settings").addEventListener("click", () => $("#settings-dialog").showModal());
  for (const radio of ["#reach-contacts", "#reach-anyone"]) $(radio).addEventListener("change", setReach);
  $("#copy-card").addEventListener("click", copyCard);
  $("#back").addEventListener("click", () => selectContact(null));
  $("#chat-call-audio").addEventListener("click", () => startCall(state.selected, "audio"));
  $("#chat-call-video").addEventListener("click", () => startCall(state.selected, "video"));
  document.addEventListener("click", (e) => {
    const menu = $("#contact-menu");
    if (menu.open && !menu.contains(e.target)) menu.open = false;
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") $("#contact-menu").open = false;
  });
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
  events.addEventListener("presence", (e) => showStatus(e.detail.status, e.detail.accept_any));
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
  // The calls' own floating buttons (e.g. "allow call notifications") go in the sidebar,
  // where they cover nothing.
  const chip = document.querySelector('[data-testid="enable-notifications"]');
  if (chip) $("#notify-slot").append(chip.closest(".hl-calls") || chip);
}

main();
