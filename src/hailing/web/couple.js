// "Connect by text": an offer and its answer as texts (or QR codes) that people carry,
// for two nodes with no network to signal through (the daemon's text coupler,
// /api/couple/...). The caller makes an offer for a contact and later pastes the answer
// (Connect); the callee pastes the offer and gives back the answer text. The daemon holds
// each side's connection in between; a finished link is the contact's link (chat, files).
//
// Keyboard: Escape closes (the <dialog>'s own cancel); the two sides are a tab list (the
// arrow keys, Home and End move between them, Tab goes on into the side shown); focus
// goes to the first thing to do on opening, and to the Copy button once a text is made.

import { api, events } from "./api.js";
import { $, el, clear, toast } from "./ui.js";
import { state, hooks, displayName } from "./state.js";

const dialog = () => $("#couple-dialog");
let answered = null;  // the caller whose offer we answered: its link shows "Connected"

function svgSrc(svg) {
  return `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
}

function showError(err) {
  const box = $("#couple-error");
  box.textContent = err ? (err.message || String(err)) : "";
  box.hidden = !err;
}

function showStatus(text) {
  const box = $("#couple-status");
  box.textContent = text || "";
  box.hidden = !text;
}

const SIDES = ["offer", "answer"];

function tab(which, { focus = false } = {}) {
  for (const name of SIDES) {
    const button = $(`#couple-tab-${name}`);
    button.setAttribute("aria-selected", String(name === which));
    button.tabIndex = name === which ? 0 : -1;  // one tab stop for the list (roving)
    $(`#couple-${name}`).hidden = name !== which;
  }
  if (focus) $(`#couple-tab-${which}`).focus();
  showError(null);
  showStatus("");
}

/** The tab list's keys: Left/Right (wrapping), Home and End select and focus a side. */
function tabKeys(event) {
  const now = SIDES.findIndex((n) => $(`#couple-tab-${n}`).getAttribute("aria-selected") === "true");
  const moves = { ArrowLeft: now - 1, ArrowRight: now + 1, Home: 0, End: SIDES.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  tab(SIDES[(moves[event.key] + SIDES.length) % SIDES.length], { focus: true });
}

function fillContacts(selected) {
  const pick = $("#couple-contact");
  clear(pick);
  const contacts = [...state.contacts.values()].filter((c) => c.state !== "blocked")
    .sort((a, b) => a.name.localeCompare(b.name));
  for (const c of contacts) pick.append(el("option", { value: c.contact_id }, c.name));
  if (selected) pick.value = selected;
  $("#couple-make-offer").disabled = contacts.length === 0;
}

/** Open the dialog (on the offer side, for `contact` if given). */
export function openCouple(contact = null) {
  fillContacts(contact || state.selected);
  tab("offer");
  $("#couple-offer-out").hidden = true;
  $("#couple-answer-out").hidden = true;
  if (!dialog().open) dialog().showModal();
  const first = $("#couple-contact");
  (first.options.length ? first : $("#couple-tab-answer")).focus();
}

async function busy(button, work) {
  button.disabled = true;
  showError(null);
  showStatus("");
  try {
    await work();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
    // a disabled button loses the focus: give it back unless it went on somewhere
    if (dialog().open && !dialog().contains(document.activeElement)) button.focus();
  }
}

function makeOffer() {
  return busy($("#couple-make-offer"), async () => {
    const contact = $("#couple-contact").value;
    const offer = await api("POST", "/api/couple/offer", { contact });
    const minutes = Math.round(offer.expires_s / 60);
    $("#couple-offer-note").textContent =
      `Give this offer to ${displayName(contact)} (valid ${minutes} minutes), then paste their answer below.`;
    $("#couple-offer-qr").src = svgSrc(offer.qr_svg);
    $("#couple-offer-text").textContent = offer.text;
    $("#couple-answer-in").value = "";
    $("#couple-offer-out").hidden = false;
    $("#couple-copy-offer").focus();
  });
}

function finish() {
  return busy($("#couple-finish"), async () => {
    const text = $("#couple-answer-in").value;
    if (!text.trim()) throw new Error("paste their answer text first");
    showStatus("Connecting…");
    const link = await api("POST", "/api/couple/finish", { text });
    showStatus(`Connected to ${displayName(link.to)}.`);
    toast(`Connected to ${displayName(link.to)} by text`);
    $("#couple-offer-out").hidden = true;
    $('[data-testid="close-couple"]').focus();
  });
}

function makeAnswer() {
  return busy($("#couple-make-answer"), async () => {
    const text = $("#couple-offer-in").value;
    if (!text.trim()) throw new Error("paste the offer text first");
    const answer = await api("POST", "/api/couple/answer", { text });
    const within = Math.round(answer.finish_within_s);
    $("#couple-answer-note").textContent =
      `An offer from ${displayName(answer.from, answer.name)}: give this answer back; they must paste it within ${within} seconds.`;
    $("#couple-answer-qr").src = svgSrc(answer.qr_svg);
    $("#couple-answer-text").textContent = answer.text;
    $("#couple-answer-out").hidden = false;
    $("#couple-copy-answer").focus();
    answered = answer.from;
  });
}

async function copy(sel, what) {
  const node = $(sel);
  try {
    await navigator.clipboard.writeText(node.textContent);
    toast(`${what} copied`);
  } catch {
    const range = document.createRange();
    range.selectNodeContents(node);
    const sel2 = window.getSelection();
    sel2.removeAllRanges();
    sel2.addRange(range);
  }
}

function wire() {
  $("#show-couple").addEventListener("click", () => openCouple());
  $("#contact-couple").addEventListener("click", () => {
    $("#contact-menu").open = false;
    openCouple(state.selected);
  });
  $("#couple-tab-offer").addEventListener("click", () => tab("offer"));
  $("#couple-tab-answer").addEventListener("click", () => tab("answer"));
  $(".couple-tabs").addEventListener("keydown", tabKeys);
  $("#couple-make-offer").addEventListener("click", makeOffer);
  $("#couple-finish").addEventListener("click", finish);
  $("#couple-make-answer").addEventListener("click", makeAnswer);
  $("#couple-copy-offer").addEventListener("click", () => copy("#couple-offer-text", "Offer"));
  $("#couple-copy-answer").addEventListener("click", () => copy("#couple-answer-text", "Answer"));
  hooks.couple = openCouple;
  events.addEventListener("connected", (e) => {
    if (!answered || e.detail.from !== answered) return;
    showStatus(`Connected to ${displayName(answered)}.`);
    answered = null;
  });
}

wire();
