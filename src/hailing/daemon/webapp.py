"""The API routes the web app needs beyond the CLI's: sign-in codes, the own contact card
(text and QR code), adding a contact from a pasted card, uploading a file to send, and
downloading a received one.

- ``POST /api/web/code`` (bearer only) -> ``{"code", "url", "expires_s"}``: a one-time
  login link for the app (``hailing open``).
- ``GET /api/card`` -> ``{"card", "contact_id", "name"}``; ``GET /api/card/qr.svg``: the
  card as a QR code (SVG drawn here, from :func:`hailing.identity.qr_matrix`).
- ``POST /api/contacts/import`` ``{"text": CARD_OR_CONTACT_ID, "name"?}`` -> the contact:
  a card gives the name (unless ``name`` is given) and the rotation secret; a bare
  contact id needs ``name``.
- ``POST /api/upload?contact=C[&timeout=S]`` (multipart/form-data, one part ``file``):
  streamed into ``DATA_DIR/uploads/RANDOM/NAME`` (at most :data:`MAX_UPLOAD` bytes), sent
  with the daemon's ``send_file`` (``file-progress`` events), then removed. The answer is
  ``/api/send``'s.
- ``GET /api/files/{id}``: the file a history entry received, as an attachment, only
  from the downloads directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import unicodedata
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from ..errors import LocalProtocolError, NotFoundError
from ..identity import format_contact_id, make_card, parse_card, parse_contact_id, qr_matrix
from .web import AUTH_KEY, CODE_TTL

if TYPE_CHECKING:
    from .service import Daemon

#: Largest file the app may upload (bytes).
MAX_UPLOAD = 2 * 1024**3
#: Uploads at once (each holds a file on disk until it is sent).
MAX_UPLOADS = 4
UPLOADS_DIR = "uploads"
_CHUNK = 256 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTACT_ID = re.compile(r"^hl[a-z2-7]{58}$")


def clean_uploads(data_dir: Path) -> None:
    """Remove what uploads a stopped (or killed) daemon left."""
    with contextlib.suppress(OSError):
        shutil.rmtree(data_dir / UPLOADS_DIR)


def safe_name(name: str | None) -> str:
    """A file name fit to create and to show: the last path component, no control
    characters, at most 200 bytes of UTF-8, never empty, ``.`` or ``..``."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _CONTROL.sub("", name).strip().lstrip(".")
    while len(name.encode("utf-8")) > 200:
        name = name[:-1]
    return name or "file"


def card_svg(text: str) -> str:
    """``text`` as a QR code in SVG (one path; dark modules on white)."""
    matrix = qr_matrix(text.upper(), border=2)  # upper-case: QR's alphanumeric mode
    size = len(matrix)
    cells = [f"M{x} {y}h1v1h-1z" for y, row in enumerate(matrix) for x, dark in enumerate(row)
             if dark]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" '
            f'shape-rendering="crispEdges"><rect width="{size}" height="{size}" fill="#fff"/>'
            f'<path fill="#000" d="{"".join(cells)}"/></svg>')


class ServerRoutes:
    """A group of routes for one :class:`~hailing.daemon.api.ApiServer` (``server``), which
    ``add_to`` adds to its application."""

    def __init__(self, server: Any) -> None:
        self.server = server  # ApiServer: .daemon, .auth, .port

    @property
    def daemon(self) -> Daemon:
        daemon: Daemon = self.server.daemon
        return daemon


class WebRoutes(ServerRoutes):
    """The routes above, for one :class:`~hailing.daemon.api.ApiServer`."""

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.max_upload = MAX_UPLOAD
        self._uploads = asyncio.Semaphore(MAX_UPLOADS)
        self.refused = 0  # uploads refused: not multipart, damaged, too large

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/web/code", self.mint_code)
        r.add_get("/api/card", self.get_card)
        r.add_get("/api/card/qr.svg", self.get_card_qr)
        r.add_post("/api/contacts/import", self.import_contact)
        r.add_post("/api/upload", self.upload)
        r.add_get("/api/files/{id}", self.download)

    # -- sign-in -------------------------------------------------------------------------

    async def mint_code(self, request: web.Request) -> web.Response:
        if request.get(AUTH_KEY) != "bearer":
            raise web.HTTPForbidden(reason="login codes are made with the token only "
                                    "('hailing open')")
        code = self.server.auth.mint_code(CODE_TTL)
        return web.json_response({"code": code, "url": self.server.login_url(code),
                                  "expires_s": CODE_TTL})

    # -- the own card --------------------------------------------------------------------

    def card(self) -> dict[str, Any]:
        from ..chain.wallet import load_or_create_rotation

        peer = self.daemon.peer
        name = peer.contacts.name()
        secret = load_or_create_rotation(self.daemon.data_dir)
        card = make_card(peer.identity, name, (secret.prefix, secret.user_id))
        return {"card": card, "contact_id": peer.contact_id, "name": name}

    async def get_card(self, request: web.Request) -> web.Response:
        return web.json_response(self.card())

    async def get_card_qr(self, request: web.Request) -> web.Response:
        svg = card_svg(self.card()["card"])
        return web.Response(text=svg, content_type="image/svg+xml")

    # -- adding a contact ----------------------------------------------------------------

    async def import_contact(self, request: web.Request) -> web.Response:
        from .api import _body, _opt, _req

        body = await _body(request)
        text = re.sub(r"\s+", "", _req(body, "text", str))
        name: str | None = _opt(body, "name", str)
        name = name.strip() if name else None
        daemon = self.daemon
        book = daemon.peer.contacts
        rotation: tuple[str, str] | None = None
        if _CONTACT_ID.fullmatch(text.lower()):
            pubkey = parse_contact_id(text.lower())
            if not name:
                raise LocalProtocolError("a contact id carries no name: give one")
        else:
            card = parse_card(text)
            pubkey = card.public_key
            name = name or card.name
            if not name:
                raise LocalProtocolError("this card carries no name: give one")
            if card.has_rotation:
                rotation = (card.rotation_prefix, card.rotation_user_id)
        if pubkey == daemon.peer.identity.public_key:
            raise LocalProtocolError("this is your own card: give it to your friends")
        clash = [c for c in book.list()
                 if c.pubkey != pubkey and c.name.casefold() == name.casefold()]
        if clash:
            raise LocalProtocolError(f"another contact is already named {clash[0].name!r}: "
                                     "give another name")
        if rotation is not None:
            daemon.peer.store.set_rotation(pubkey, *rotation)
        contact = await daemon.add_contact(format_contact_id(pubkey), name)
        return web.json_response({**contact, "rotation": rotation is not None})

    # -- files ---------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        from .api import _timeout

        q = request.query
        contact = q.get("contact", "")
        self.daemon.resolve(contact)  # 404 / 400 before reading anything
        given: dict[str, Any] = {}
        if q.get("timeout"):
            try:
                given["timeout"] = float(q["timeout"])
            except ValueError:
                raise LocalProtocolError("'timeout' must be a number of seconds") from None
        timeout = _timeout(given)
        if self._uploads.locked():
            raise web.HTTPServiceUnavailable(reason="too many uploads at once: try again")
        async with self._uploads:
            folder = self.daemon.data_dir / UPLOADS_DIR / secrets.token_hex(8)
            try:
                try:
                    path = await self._receive(request, folder)
                except (LocalProtocolError, web.HTTPException):
                    self.refused += 1
                    raise
                result = await self.daemon.send_file(contact, str(path), timeout)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        return web.json_response(result)

    async def _receive(self, request: web.Request, folder: Path) -> Path:
        """The upload's ``file`` part, written to ``folder``; 400 for anything that is not
        a multipart body with one, 413 past :attr:`max_upload`."""
        if request.content_length is not None and request.content_length > self.max_upload + 64 * 1024:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_upload,
                                                actual_size=request.content_length)
        try:
            reader = await request.multipart()
            part = await reader.next()
            while part is not None and (not isinstance(part, BodyPartReader)
                                        or part.name != "file"):
                if isinstance(part, BodyPartReader):
                    await part.release()
                part = await reader.next()
        except (ValueError, AssertionError, KeyError, LookupError) as exc:
            raise LocalProtocolError(f"not a multipart/form-data upload ({exc})") from None
        if part is None:
            raise LocalProtocolError("the upload has no 'file' part")
        name = safe_name(part.filename)
        folder.mkdir(parents=True, mode=0o700)
        path = folder / name
        size = 0
        try:
            with path.open("xb") as f:
                while chunk := await part.read_chunk(_CHUNK):
                    size += len(chunk)
                    if size > self.max_upload:
                        raise web.HTTPRequestEntityTooLarge(max_size=self.max_upload,
                                                            actual_size=size)
                    f.write(chunk)
        except (ValueError, AssertionError) as exc:
            raise LocalProtocolError(f"the upload is damaged ({exc})") from None
        return path

    async def download(self, request: web.Request) -> web.StreamResponse:
        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise NotFoundError("no such file")
        entry = self.daemon._history().entry(int(raw))
        if entry is None or entry.kind != "file" or entry.direction != "in" or not entry.path:
            raise NotFoundError("no such received file")
        downloads = getattr(self.daemon.peer, "downloads", None)
        if not isinstance(downloads, str | os.PathLike):
            raise NotFoundError("no downloads directory")
        root = Path(downloads).resolve()
        path = Path(entry.path).resolve()
        if not path.is_relative_to(root) or path == root or not path.is_file():
            raise NotFoundError("this file is no longer in the downloads directory")
        name = safe_name(entry.name or path.name)
        ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
        disposition = (f'attachment; filename="{ascii_name}"; '
                       f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream",
                                               "Content-Disposition": disposition})
