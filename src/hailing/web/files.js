// Files: uploading one to send (with progress: the upload to the daemon, then the
// transfer reported by the daemon's file-progress events), and incoming ones on their way.

import { upload } from "./api.js";
import { $, el, clear, bytes, svgIcon, ICONS } from "./ui.js";
import { state, hooks, contactById } from "./state.js";

function transferKey(contact, name) { return `${contact}\n${name}`; }

export function renderTransfers() {
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

export async function pickedFiles() {
  const input = $("#file-input");
  const files = [...(input.files || [])];
  input.value = "";
  for (const file of files) sendFile(file);
}

export async function sendFile(file) {
  const contact = state.selected;
  const c = contactById(contact);
  if (!file || !c || c.state === "blocked") return;
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

export function onFileProgress(ev) {
  const t = transfer(ev.to, ev.name, ev.size, "");
  t.row.dataset.phase = "send";
  t.progress.max = Math.max(ev.size, 1);
  t.progress.value = ev.sent;
  const pct = ev.size ? Math.floor((100 * ev.sent) / ev.size) : 100;
  t.status.textContent = `${pct}% · ${bytes(ev.sent)} of ${bytes(ev.size)}`;
}

export function onFileSent(ev) {
  endTransfer(ev.to, ev.name);
  hooks.addMessage(ev.to, { id: ev.id, direction: "out", kind: "file", name: ev.name, size: ev.size, at: ev.at });
}

export function onFileStarted(ev) {
  const t = transfer(ev.from, ev.name, ev.size, `receiving ${bytes(ev.size)}…`);
  t.row.dataset.phase = "receive";
  t.progress.removeAttribute("value");
}

export function onFileEnded(ev) {
  endTransfer(ev.from, ev.name);
}
