// Small DOM helpers (no framework, no innerHTML: text always goes in as text).

export const $ = (sel, root = document) => root.querySelector(sel);

/** el("li", {class: "x", "data-testid": "y"}, child, "text", ...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === "") continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

export function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
  const first = [...(parts[0] || "?")][0];
  const last = parts.length > 1 ? [...parts[parts.length - 1]][0] : "";
  return (first + last).toUpperCase();
}

/** "just now", "5 min ago", "3 h ago", "yesterday", "12 Mar" */
export function ago(at) {
  if (!at) return "";
  const s = Date.now() / 1000 - at;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 2 * 86400) return "yesterday";
  return new Date(at * 1000).toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

export function clock(at) {
  return new Date(at * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

export function day(at) {
  const d = new Date(at * 1000);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return "Today";
  const y = new Date(today);
  y.setDate(today.getDate() - 1);
  if (d.toDateString() === y.toDateString()) return "Yesterday";
  return d.toLocaleDateString(undefined, { weekday: "short", day: "numeric", month: "short" });
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** A short note at the bottom of the screen; `onClick` makes it a button. */
export function toast(text, onClick = null) {
  const box = $("#toasts");
  const note = el(onClick ? "button" : "div", { class: "toast", "data-testid": "toast", role: "status" }, text);
  if (onClick) {
    note.type = "button";
    note.addEventListener("click", () => { note.remove(); onClick(); });
  }
  box.append(note);
  setTimeout(() => note.remove(), 6000);
}

function dialog({ title, text = "", value = null, ok = "OK" }) {
  return new Promise((resolve) => {
    const dlg = $("#prompt-dialog");
    $("#prompt-title").textContent = title;
    $("#prompt-text").textContent = text;
    $("#prompt-text").hidden = !text;
    const input = $("#prompt-input");
    input.hidden = value === null;
    input.value = value ?? "";
    $("#prompt-ok").textContent = ok;
    dlg.returnValue = "";
    input.onkeydown = (e) => {
      if (e.key === "Enter") { e.preventDefault(); dlg.close("ok"); }
    };
    dlg.addEventListener("close", () => {
      if (dlg.returnValue !== "ok") resolve(null);
      else resolve(value === null ? true : input.value.trim());
    }, { once: true });
    dlg.showModal();
    if (value !== null) input.select();
  });
}

export const ask = (title, value) => dialog({ title, value, ok: "Save" });
export const confirmBox = async (title, text, ok) => Boolean(await dialog({ title, text, ok }));

/** A stable colour (0-11) for an id: avatars. */
export function hue(id) {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) % 12;
  return String(h);
}

export const ICONS = {
  phone: "M6.6 10.8a15 15 0 006.6 6.6l2.2-2.2a1 1 0 011-.25 11.4 11.4 0 003.6.57 1 1 0 011 1V20a1 1 0 01-1 1A17 17 0 013 4a1 1 0 011-1h3.5a1 1 0 011 1c0 1.25.2 2.45.57 3.57a1 1 0 01-.25 1z",
  video: "M17 10.5V7a1 1 0 00-1-1H4a1 1 0 00-1 1v10a1 1 0 001 1h12a1 1 0 001-1v-3.5l4 4v-11z",
  file: "M14 2H6a2 2 0 00-2 2v16a2 2 0 002 2h12a2 2 0 002-2V8zM14 2v6h6",
};

export function svgIcon(d) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", d);
  svg.append(path);
  return svg;
}
