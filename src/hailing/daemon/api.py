"""The daemon's local control API: HTTP + WebSocket on 127.0.0.1 (aiohttp).

Every request passes three checks, in this order (see ``docs/daemon.md``):

1. ``Host`` is the API's own (``127.0.0.1:PORT`` or ``localhost:PORT``), against DNS
   rebinding: a web page of another site that resolves its name to 127.0.0.1 still sends
   its own name. Otherwise 403.
2. ``Origin``, when present, is the API's own origin; any other web page is refused
   (403), so no site a browser visits can drive the daemon, not even its WebSocket.
3. ``Authorization: Bearer TOKEN`` with the token of ``DATA_DIR/api.json`` (mode 600:
   readable by the user who runs the daemon only), or the web app's session cookie
   (:mod:`hailing.daemon.web`); with the cookie, a request that changes something (any
   method but GET/HEAD, and the WebSocket) must carry the API's own ``Origin`` (403
   without). Missing or wrong: 401. The app's own files and ``/open`` (the sign-in link)
   need neither; the Host and Origin checks apply to them too.

Bodies are JSON objects of at most :data:`MAX_BODY` bytes; anything else is a 4xx with
``{"error": "..."}`` and the daemon goes on serving. Routes live under ``/api/``; the
rest of the URL space is the web app's (:mod:`hailing.daemon.web`). Every response
carries the security headers of :func:`hailing.daemon.web.security_headers`.

The handlers are thin: they check types and call the :class:`~hailing.daemon.service.Daemon`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web

from ..errors import (
    DaemonError,
    HailingError,
    LocalProtocolError,
    NotFoundError,
    QueryTimeout,
    StorageError,
)
from ..node import Addr
from .text import TextRoutes
from .web import AUTH_KEY, UP_CODE_TTL, WebAuth, open_handler, security_headers, serve_static
from .webapp import WebRoutes

if TYPE_CHECKING:
    from .calls import Calls
    from .service import Daemon

log = logging.getLogger(__name__)

#: Largest request body (a 64 KiB text fits even fully escaped).
MAX_BODY = 512 * 1024
#: Longest a send may wait for the callee, in seconds.
MAX_TIMEOUT = 300.0
DEFAULT_TIMEOUT = 30.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: HailingError subclasses and the status they map to (first match wins).
_STATUS: tuple[tuple[type[HailingError], int], ...] = (
    (LocalProtocolError, 400),
    (NotFoundError, 404),
    (QueryTimeout, 504),
    (DaemonError, 409),
    (StorageError, 500),
    (HailingError, 502),
)


def _error(status: int, message: str, kind: str = "") -> web.Response:
    body: dict[str, Any] = {"error": message}
    if kind:
        body["kind"] = kind
    return web.json_response(body, status=status)


class ApiServer:
    """The API of one daemon. :meth:`start` returns (url, port, token)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.token = secrets.token_urlsafe(32)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.auth = WebAuth()
        self.web = WebRoutes(self)
        self.text = TextRoutes(self)

    async def start(self, bind: Addr) -> tuple[str, int, str]:
        host, port = bind
        if host not in ("127.0.0.1", "localhost"):
            raise LocalProtocolError("the API listens on 127.0.0.1 only")
        app = web.Application(middlewares=[self._errors, self._guard], client_max_size=MAX_BODY)
        self._routes(app)
        app.on_response_prepare.append(self._headers)
        # handler_cancellation: a client that goes away (Ctrl-C on `hailing send --file`)
        # cancels what it asked for, as the one-shot command would.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=False)
        try:
            await site.start()
        except OSError as exc:
            await self.aclose()
            raise DaemonError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
        sockets: Any = getattr(site._server, "sockets", None)
        assert sockets, "the API's site has no socket"
        self.port = int(sockets[0].getsockname()[1])
        self.auth.port = self.port
        return f"http://127.0.0.1:{self.port}", self.port, self.token

    def login_url(self, code: str | None = None) -> str:
        """A sign-in link for the web app (a fresh code, valid :data:`UP_CODE_TTL` s,
        unless ``code`` is given)."""
        code = code or self.auth.mint_code(UP_CODE_TTL)
        return f"http://127.0.0.1:{self.port}/open?code={code}"

    async def aclose(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"daemon stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- checks --------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            text = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
            return _error(exc.status, (text or exc.reason).removeprefix(f"{exc.status}: "))
        except HailingError as exc:
            status = next(code for cls, code in _STATUS if isinstance(exc, cls))
            return _error(status, str(exc) or type(exc).__name__, type(exc).__name__)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: answer, log, keep serving
            log.exception("API handler failed")
            return _error(500, f"internal error: {type(exc).__name__}")

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        own = (f"127.0.0.1:{self.port}", f"localhost:{self.port}")
        if request.headers.get("Host", "") not in own:
            return _error(403, "wrong Host header: this API answers only to "
                          f"127.0.0.1:{self.port}")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in tuple(f"http://{h}" for h in own):
            return _error(403, "requests from other web pages are refused")
        if not request.path.startswith("/api/"):
            return await handler(request)  # the app's files and /open: no secret needed
        auth = request.headers.get("Authorization")
        cookie = request.cookies.get(self.auth.cookie_name)
        if auth is None and cookie is not None:
            if not self.auth.session_ok(cookie):
                return _error(401, "this page is signed out (the daemon restarted?): run "
                              "'hailing open'")
            acting = request.method not in ("GET", "HEAD") or _is_websocket(request)
            if acting and origin is None:
                return _error(403, "a request of the web app must carry its Origin")
            request[AUTH_KEY] = "cookie"
            return await handler(request)
        scheme, _, given = (auth or "").partition(" ")
        if not auth or scheme.lower() != "bearer":
            return _error(401, "missing token: send 'Authorization: Bearer TOKEN' (the "
                          "token is in DATA_DIR/api.json)")
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return _error(401, "wrong token")
        request[AUTH_KEY] = "bearer"
        return await handler(request)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        own = request.headers.get("Host", "") in (f"127.0.0.1:{self.port}",
                                                  f"localhost:{self.port}")
        ws = f"ws://{request.headers['Host']}" if own else None
        security_headers(response, ws, request.path.startswith("/api/")
                         or request.path == "/open")

    # -- routes --------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/status", self.get_status)
        r.add_post("/api/status", self.post_status)
        r.add_get("/api/contacts", self.get_contacts)
        r.add_post("/api/contacts", self.add_contact)
        r.add_get("/api/contacts/{contact}", self.get_contact)
        r.add_delete("/api/contacts/{contact}", self.remove_contact)
        r.add_post("/api/contacts/{contact}/block", self.block_contact)
        r.add_post("/api/contacts/{contact}/allow", self.allow_contact)
        r.add_post("/api/contacts/{contact}/rename", self.rename_contact)
        r.add_post("/api/connect", self.connect)
        r.add_post("/api/send", self.send)
        r.add_post("/api/endpoint", self.publish_endpoint)
        r.add_get("/api/endpoints", self.get_endpoints)
        r.add_get("/api/history", self.get_history)
        r.add_get("/api/links", self.get_links)
        r.add_delete("/api/links/{contact}", self.hang_up)
        r.add_post("/api/refresh", self.refresh)
        r.add_get("/api/ice", self.get_ice)
        r.add_get("/api/events", self.events)
        r.add_post("/api/calls", self.place_call)
        r.add_get("/api/calls", self.get_calls)
        r.add_get("/api/calls/{call}", self.get_call)
        r.add_delete("/api/calls/{call}", self.cancel_call)
        r.add_post("/api/calls/{call}/accept", self.accept_call)
        r.add_post("/api/calls/{call}/decline", self.decline_call)
        r.add_post("/api/calls/{call}/verify", self.verify_call)
        r.add_post("/api/calls/{call}/end", self.end_call)
        self.web.add_to(app)
        self.text.add_to(app)  # /api/couple/...: the text coupler (hailing.daemon.text)
        # The web app: /open (sign-in link), then its files (last: anything else is 404).
        r.add_get("/open", open_handler(self.auth))
        r.add_get("/{name:[^/]*}", serve_static)

    async def get_status(self, request: web.Request) -> web.Response:
        return web.json_response({**self.daemon.status(), "web": self.web_stats()})

    def web_stats(self) -> dict[str, int]:
        """The web app's counters: signed-in sessions, refused sign-in codes, refused
        uploads."""
        return {"sessions": self.auth.sessions, "codes_refused": self.auth.refused,
                "uploads_refused": self.web.refused}

    async def post_status(self, request: web.Request) -> web.Response:
        body = await _body(request)
        status = _opt(body, "status", str)
        accept_any = _opt(body, "accept_any", bool)
        return web.json_response(await self.daemon.set_presence(status, accept_any))

    async def get_contacts(self, request: web.Request) -> web.Response:
        return web.json_response({"contacts": self.daemon.contacts()})

    async def get_contact(self, request: web.Request) -> web.Response:
        return web.json_response(self.daemon.contact(request.match_info["contact"]))

    async def add_contact(self, request: web.Request) -> web.Response:
        body = await _body(request)
        c = await self.daemon.add_contact(_req(body, "contact", str), _req(body, "name", str))
        return web.json_response(c)

    async def remove_contact(self, request: web.Request) -> web.Response:
        return web.json_response(await self.daemon.remove_contact(request.match_info["contact"]))

    async def block_contact(self, request: web.Request) -> web.Response:
        return await self._set_state(request, "blocked")

    async def allow_contact(self, request: web.Request) -> web.Response:
        return await self._set_state(request, "allowed")

    async def _set_state(self, request: web.Request, state: str) -> web.Response:
        body = await _body(request, empty_ok=True)
        c = await self.daemon.set_contact_state(request.match_info["contact"], state,
                                                _opt(body, "name", str))
        return web.json_response(c)

    async def rename_contact(self, request: web.Request) -> web.Response:
        body = await _body(request)
        c = await self.daemon.rename_contact(request.match_info["contact"], _req(body, "name", str))
        return web.json_response(c)

    async def connect(self, request: web.Request) -> web.Response:
        body = await _body(request)
        result = await self.daemon.connect(_req(body, "contact", str), _timeout(body))
        return web.json_response(result)

    async def send(self, request: web.Request) -> web.Response:
        body = await _body(request)
        contact = _req(body, "contact", str)
        text, path = _opt(body, "text", str), _opt(body, "file", str)
        if (text is None) == (path is None):
            raise LocalProtocolError("give either 'text' or 'file'")
        if text is not None:
            result = await self.daemon.send_text(contact, text, _timeout(body))
        else:
            assert path is not None
            result = await self.daemon.send_file(contact, path, _timeout(body))
        return web.json_response(result)

    async def publish_endpoint(self, request: web.Request) -> web.Response:
        body = await _body(request)
        extra = _opt(body, "extra", dict) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise LocalProtocolError("'extra' maps text to text")
        result = await self.daemon.publish_endpoint(
            _req(body, "to", str), _req(body, "kind", str), _req(body, "endpoint", str), extra)
        return web.json_response(result)

    async def get_endpoints(self, request: web.Request) -> web.Response:
        contact = request.query.get("contact") or None
        return web.json_response({"endpoints": self.daemon.endpoints(contact)})

    async def get_history(self, request: web.Request) -> web.Response:
        q = request.query
        limit = _query_int(q.get("limit"), "limit", 50)
        before = _query_int(q.get("before"), "before", None)
        page = self.daemon.history_page(q.get("contact") or None, limit, before)
        return web.json_response({"messages": page})

    async def get_links(self, request: web.Request) -> web.Response:
        return web.json_response({"links": [link.to_json() for link in self.daemon.links.list()]})

    async def get_ice(self, request: web.Request) -> web.Response:
        """The ICE servers for the web app's peer connections (the daemon's own)."""
        return web.json_response(await self.daemon.ice_servers())

    async def hang_up(self, request: web.Request) -> web.Response:
        """Hang up every link to a contact (the next send calls again)."""
        return web.json_response(await self.daemon.hang_up(request.match_info["contact"]))

    async def refresh(self, request: web.Request) -> web.Response:
        await self.daemon.refresh()
        return web.json_response({"refreshed": True})

    # -- browser calls (hailing.daemon.calls) ----------------------------------------------

    def _calls(self) -> Calls:
        if self.daemon.calls is None:
            raise DaemonError("the daemon is not started")
        return self.daemon.calls

    async def place_call(self, request: web.Request) -> web.Response:
        """The page's offer, dialed; answered when the callee's page accepted. Aborting
        the request (or ``DELETE /api/calls/{id}``) cancels the call."""
        body = await _body(request)
        calls = self._calls()
        peer = self.daemon.resolve(_req(body, "contact", str))
        result = await calls.place(peer, _req(body, "sdp", str), _req(body, "media", str),
                                   _opt(body, "call", str), _timeout(body))
        return web.json_response(result)

    async def get_calls(self, request: web.Request) -> web.Response:
        limit = _query_int(request.query.get("limit"), "limit", 50)
        return web.json_response({"calls": self._calls().list(limit)})

    async def get_call(self, request: web.Request) -> web.Response:
        return web.json_response(self._calls().get(request.match_info["call"]))

    async def cancel_call(self, request: web.Request) -> web.Response:
        return web.json_response(self._calls().cancel(request.match_info["call"]))

    async def accept_call(self, request: web.Request) -> web.Response:
        body = await _body(request)
        result = await self._calls().accept(request.match_info["call"], _req(body, "sdp", str))
        return web.json_response(result)

    async def decline_call(self, request: web.Request) -> web.Response:
        await _body(request, empty_ok=True)
        return web.json_response(self._calls().decline(request.match_info["call"]))

    async def verify_call(self, request: web.Request) -> web.Response:
        body = await _body(request)
        ok = self._calls().verify(request.match_info["call"], _req(body, "proof", str))
        return web.json_response({"ok": ok})

    async def end_call(self, request: web.Request) -> web.Response:
        body = await _body(request, empty_ok=True)
        return web.json_response(
            self._calls().end(request.match_info["call"], _opt(body, "reason", str)))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The event stream: one JSON text frame per event, from the moment the handshake
        completed. A client too slow to keep up is closed (1013, try again later)."""
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        with self.daemon.events.subscribe() as sub:
            await ws.prepare(request)
            self._sockets.add(ws)

            async def forward() -> None:
                while True:
                    event = await sub.get()
                    if sub.lagged:
                        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
                        return
                    await ws.send_str(json.dumps(event))

            forwarder = asyncio.ensure_future(forward())
            try:
                async for _ in ws:  # nothing is expected from the client; this sees close
                    pass
            finally:
                forwarder.cancel()
                await asyncio.gather(forwarder, return_exceptions=True)
        return ws


# -- request parsing ---------------------------------------------------------------------


def _is_websocket(request: web.Request) -> bool:
    return (request.headers.get("Upgrade", "").lower() == "websocket"
            or "upgrade" in request.headers.get("Connection", "").lower())


async def _body(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    raw = await request.read()  # HTTPRequestEntityTooLarge (413) past MAX_BODY
    if not raw.strip() and empty_ok:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(reason="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="the body is not a JSON object")
    return body


def _req(body: dict[str, Any], key: str, kind: type[Any]) -> Any:
    if key not in body:
        raise LocalProtocolError(f"'{key}' is missing")
    return _opt(body, key, kind)


def _opt(body: dict[str, Any], key: str, kind: type[Any]) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise LocalProtocolError(f"'{key}' must be {_KIND_NAMES.get(kind, kind.__name__)}")
    return value


_KIND_NAMES = {str: "text", bool: "true or false", dict: "an object", int: "a whole number"}


def _timeout(body: dict[str, Any]) -> float:
    value = body.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LocalProtocolError("'timeout' must be a number of seconds")
    if not 0 < value <= MAX_TIMEOUT:
        raise LocalProtocolError(f"'timeout' must be more than 0 and at most {MAX_TIMEOUT:.0f}")
    return float(value)


def _query_int(text: str | None, name: str, default: int | None) -> Any:
    if text is None or text == "":
        return default
    if not text.isdigit() or len(text) > 18:
        raise LocalProtocolError(f"'{name}' must be a whole number")
    return int(text)
