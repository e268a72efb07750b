// The call log (GET /api/calls, newest first): missed calls and refused callers (on the
// callee only), answered calls with their length, a button to call back. Until the
// daemon has the route (404), the section stays hidden.

import { api, ApiError } from "./api.js";
import { $, el, clear, ago, svgIcon, ICONS } from "./ui.js";
import { state, hooks, contactById, displayName } from "./state.js";

const CALL_WORDS = {
  missed: "Missed", declined: "Declined", refused: "Refused", cancelled: "Cancelled",
  failed: "Failed", answered: "Answered", ended: "", ringing: "Ringing",
};

export async function loadCalls() {
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
  seenInCalls(calls);
  const list = $("#call-log-list");
  clear(list);
  for (const c of calls) list.append(callItem(c));
  $("#call-log-empty").hidden = calls.length > 0;
  $("#call-log").hidden = false;
}

function seenInCalls(calls) {
  // A call they made (rung, refused or missed) or answered says they were there then.
  for (const call of calls) {
    const there = call.direction === "in" || ["answered", "ended"].includes(call.state);
    const who = call.direction === "in" ? call.from : call.to;
    const at = call.ended_at || call.at;
    if (there && who && at && !(state.callSeen.get(who) >= at)) state.callSeen.set(who, at);
  }
  hooks.refresh();
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
  const known = who ? contactById(who) : null;
  if (known) {
    item.classList.add("known");
    item.addEventListener("click", () => hooks.open(who));
    if (known.state !== "blocked") {
      const media = c.media === "video" ? "video" : "audio";
      const back = el("button", { type: "button", class: "icon-btn call-back", "data-testid": "call-back",
                                  title: `Call ${known.name}`, "aria-label": `Call ${known.name}` },
                      svgIcon(media === "video" ? ICONS.video : ICONS.phone));
      back.addEventListener("click", (e) => { e.stopPropagation(); hooks.call(who, media); });
      item.append(back);
    }
  }
  return item;
}

function duration(s) {
  const m = Math.floor(s / 60);
  return m ? `${m} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`;
}
