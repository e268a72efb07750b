"""The web app's side of the API server: its files, its sign-in and its headers.

Theory of operation
-------------------
The app (``hailing/web/``: HTML, ES modules, CSS, shipped as package data) is served from
the API's own origin, ``http://127.0.0.1:PORT/``. A page cannot send the bearer token
(not on a WebSocket, and it must not sit in the page), so the app signs in with a cookie:

1. Whoever holds the token (``hailing up`` itself, ``hailing open``) mints a **login
   code** (:meth:`WebAuth.mint_code`, ``POST /api/web/code``, bearer only): random, one
   use, valid :data:`CODE_TTL` seconds.
2. The browser opens ``/open?code=CODE``; :meth:`WebAuth.redeem` swaps the code for a
   **session** (random 256 bits) set as an ``HttpOnly; SameSite=Strict; Path=/`` cookie,
   and the answer is a 303 to ``/`` (``Cache-Control: no-store``, ``Referrer-Policy:
   no-referrer``): the code never stays in the address bar, is never sent as a
   ``Referer``, and is worthless once used or expired.
3. ``ApiServer._guard`` takes the cookie as it takes the token, except that a request
   that changes something (any method but GET/HEAD, and the WebSocket) must carry the
   API's own ``Origin``: the cookie alone is never enough to act.

Sessions live in memory: a daemon restart (a new token) signs every page out. Cookies are
not port-scoped, so the cookie's name carries the port (``hailing-PORT``): two daemons on
one machine do not overwrite each other's.

Every response gets the security headers of :func:`security_headers`: a strict
Content-Security-Policy (no inline script or style, nothing from another host),
``X-Content-Type-Options: nosniff``, ``frame-ancestors 'none'``, no referrer.

Static files are looked up by exact name in the package's ``web`` directory (flat: no
sub-directories, no dot files, only known types): nothing else can be named, so no path
leads out of it and no directory is ever listed.
"""

from __future__ import annotations

import hmac
import importlib.resources
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from importlib.resources.abc import Traversable
from typing import Any

from aiohttp import web

#: Seconds a login code stays valid (``hailing open``); the one ``hailing up`` prints
#: lives longer (:data:`UP_CODE_TTL`), as it may be read from a log a little later.
CODE_TTL = 60.0
UP_CODE_TTL = 600.0
#: Most codes waiting to be used, and most sessions, at once (the oldest go first).
MAX_CODES = 16
MAX_SESSIONS = 32

#: Where the app's files are: the ``web`` directory of this package (package data).
WEB_PACKAGE, WEB_DIR = "hailing", "web"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wav": "audio/wav",
    ".ogg": "audio/ogg",
}
#: How a request was authenticated: "bearer" or "cookie" (set by ApiServer._guard).
AUTH_KEY: Any = web.RequestKey("auth", str) if hasattr(web, "RequestKey") else "auth"
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}$")


def content_security_policy(ws_origin: str | None) -> str:
    """The CSP of every response. ``connect-src 'self'`` covers the WebSocket in current
    browsers; ``ws_origin`` (``ws://127.0.0.1:PORT``) is named too for older ones."""
    connect = "'self'" + (f" {ws_origin}" if ws_origin else "")
    return ("default-src 'self'; script-src 'self'; style-src 'self'; "
            "img-src 'self' data: blob:; media-src 'self' blob:; "
            f"connect-src {connect}; font-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")


def security_headers(response: web.StreamResponse, ws_origin: str | None,
                     api_path: bool) -> None:
    """Set the headers every answer carries (see the module's docstring)."""
    h = response.headers
    h["Content-Security-Policy"] = content_security_policy(ws_origin)
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"
    h["Referrer-Policy"] = "no-referrer"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Cross-Origin-Resource-Policy"] = "same-origin"
    if api_path:
        h["Cache-Control"] = "no-store"
    else:
        h.setdefault("Cache-Control", "no-cache")


class WebAuth:
    """Login codes and sessions of one API server (in memory). ``clock`` is injectable
    for tests (monotonic seconds)."""

    def __init__(self, port: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.port = port
        self._clock = clock
        self._codes: OrderedDict[str, float] = OrderedDict()  # code -> expires
        self._sessions: OrderedDict[str, float] = OrderedDict()  # session -> created
        self.refused = 0  # codes refused (unknown, used or expired)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    @property
    def cookie_name(self) -> str:
        return f"hailing-{self.port}"

    def mint_code(self, ttl: float = CODE_TTL) -> str:
        """A fresh one-time login code, valid ``ttl`` seconds."""
        self._expire()
        code = secrets.token_urlsafe(24)
        self._codes[code] = self._clock() + ttl
        while len(self._codes) > MAX_CODES:
            self._codes.popitem(last=False)
        return code

    def redeem(self, code: str) -> str | None:
        """A new session for a valid, unused, unexpired ``code`` (which is then used up),
        else None."""
        self._expire()
        found = None
        for known in list(self._codes):  # every one compared, in constant time each
            if hmac.compare_digest(known.encode(), code.encode()):
                found = known
        if found is None:
            self.refused += 1
            return None
        del self._codes[found]
        session = secrets.token_urlsafe(32)
        self._sessions[session] = self._clock()
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def session_ok(self, value: str) -> bool:
        ok = False
        for known in self._sessions:
            if hmac.compare_digest(known.encode(), value.encode()):
                ok = True
        return ok

    def _expire(self) -> None:
        now = self._clock()
        for code, expires in list(self._codes.items()):
            if expires <= now:
                del self._codes[code]


# -- the app's files -----------------------------------------------------------------------


def web_files() -> Traversable:
    """The directory of the app's files inside the installed package."""
    return importlib.resources.files(WEB_PACKAGE).joinpath(WEB_DIR)


def static_file(name: str) -> tuple[bytes, str] | None:
    """(content, content type) of the app's file ``name`` (``""`` is ``index.html``), or
    None when there is no such file: a name with a ``/``, a ``..``, a leading dot, or an
    unknown type never names anything."""
    name = name or "index.html"
    if not _NAME.fullmatch(name) or ".." in name:
        return None
    suffix = name[name.rfind("."):] if "." in name else ""
    ctype = CONTENT_TYPES.get(suffix)
    if ctype is None:
        return None
    entry = web_files().joinpath(name)
    try:
        if not entry.is_file():
            return None
        return entry.read_bytes(), ctype
    except OSError:
        return None


async def serve_static(request: web.Request) -> web.Response:
    found = static_file(request.match_info.get("name", ""))
    if found is None:
        raise web.HTTPNotFound(reason="no such page")
    body, ctype = found
    resp = web.Response(body=body, headers={"Content-Type": ctype})
    return resp


def expired_page() -> web.Response:
    """What ``/open`` answers for a code that is unknown, used or expired (403)."""
    found = static_file("signin.html")
    body = found[0] if found else b"This sign-in link was used or has expired.\n"
    ctype = found[1] if found else "text/plain; charset=utf-8"
    return web.Response(status=403, body=body, headers={"Content-Type": ctype})


def open_handler(auth: WebAuth) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        code = request.query.get("code", "")
        session = auth.redeem(code) if code else None
        if session is None:
            held = request.cookies.get(auth.cookie_name)
            if held is not None and auth.session_ok(held):  # signed in already: go on
                return web.Response(status=303, headers={"Location": "/",
                                                         "Cache-Control": "no-store"})
            return expired_page()
        resp = web.Response(status=303, headers={"Location": "/"})
        resp.set_cookie(auth.cookie_name, session, path="/", httponly=True,
                        samesite="Strict")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    return handle
