// The app's state, shared by its modules (app.js, files.js, calllog.js).

export const state = {
  me: null,                 // GET /api/status
  contacts: new Map(),      // contact_id -> {contact_id, name, state, online, last_seen}
  selected: null,           // contact_id
  messages: new Map(),      // contact_id -> [entry] (history entries and pending sends)
  oldest: new Map(),        // contact_id -> smallest history id loaded (paging back)
  unread: new Map(),        // contact_id -> count
  transfers: new Map(),     // key -> {row, progress}
  callsRoute: true,         // GET /api/calls exists (false after a 404)
  callSeen: new Map(),      // contact_id -> when the call log last saw them
};

/** Set by app.js: what the other modules call back into. */
export const hooks = {
  refresh: () => {},            // contacts (presence) changed: render them again
  open: (_contact) => {},       // open the conversation with a contact
  call: (_contact, _media) => {},  // start a call
  addMessage: (_contact, _m) => {},  // show a message in a conversation
  couple: (_contact) => {},     // open "Connect by text" (couple.js)
};

export function contactById(id) { return state.contacts.get(id) || null; }

export function displayName(id, fallback) {
  const c = contactById(id);
  return c ? c.name : (fallback || `${id.slice(0, 10)}…`);
}
