"""The web app's server side: its files, the sign-in link and cookie, the guard's cookie
path, the card, contact import, uploads and downloads. A real :class:`Daemon` and its
real API on 127.0.0.1, with a stand-in Peer (no network: these are the API's rules, the
browser tests drive the rest)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hailing.daemon import web as webmod
from hailing.daemon.service import Daemon
from hailing.daemon.web import WebAuth, static_file, web_files
from hailing.daemon.webapp import card_svg, safe_name
from hailing.identity import load_or_create_identity, make_card, parse_card
from hailing.services.contacts import ContactBook
from hailing.signaling.store import SignalStore

WEB_FILES = ("index.html", "app.js", "api.js", "ui.js", "state.js", "files.js", "calllog.js",
             "style.css", "couple.css", "couple.js", "icon.svg", "signin.html")


class FakePeer:
    """What the daemon uses of a Peer, without any network."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.downloads = data_dir / "downloads"
        self.calls: asyncio.Queue[Any] = asyncio.Queue()
        self.couplers: list[Any] = []
        self.contacts: Any = None
        self.store: Any = None
        self.identity: Any = None

    @property
    def contact_id(self) -> str:
        cid: str = self.identity.contact_id
        return cid

    async def start(self) -> None:
        self.identity = load_or_create_identity(self.data_dir)
        self.contacts = ContactBook(self.data_dir)
        self.store = SignalStore(self.data_dir)
        self.downloads.mkdir(exist_ok=True)

    async def stop(self) -> None:
        self.contacts.close()
        self.store.close()

    async def refresh(self) -> None:
        pass

    async def incoming(self) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield None


class Client:
    """Plain HTTP/1.1 requests (http.client in a thread: no cookie jar, headers exact)."""

    def __init__(self, daemon: Daemon) -> None:
        assert daemon.api_info is not None
        self.port = daemon.api_info.port
        self.token = daemon.api_info.token
        self.origin = f"http://127.0.0.1:{self.port}"

    async def request(self, method: str, path: str, body: Any = None, *,
                      headers: dict[str, str] | None = None, raw: bytes | None = None,
                      bearer: bool = False) -> tuple[int, dict[str, str], bytes]:
        h = {"Authorization": f"Bearer {self.token}"} if bearer else {}
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)

        def go() -> tuple[int, dict[str, str], bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            payload = resp.read()
            out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
            # several Set-Cookie would be merged by the dict: none of these tests sends two
            conn.close()
            return out

        return await asyncio.to_thread(go)

    async def sign_in(self) -> str:
        status, _, body = await self.request("POST", "/api/web/code", bearer=True)
        assert status == 200, body
        code = json.loads(body)["code"]
        status, headers, _ = await self.request("GET", f"/open?code={code}")
        assert status == 303, headers
        m = re.match(rf"hailing-{self.port}=([^;]+);", headers["set-cookie"])
        assert m, headers["set-cookie"]
        return f"hailing-{self.port}={m.group(1)}"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = Daemon(tmp_path / "me", lambda _node: FakePeer(tmp_path / "me"), idle_close=0)
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


def _json(body: bytes) -> Any:
    return json.loads(body)


# -- the files -----------------------------------------------------------------------------


def test_the_app_files_ship_in_the_package() -> None:
    files = web_files()
    for name in WEB_FILES:
        assert files.joinpath(name).is_file(), name
    index = files.joinpath("index.html").read_text()
    # No inline script or style: every script is a module file, no style attribute.
    assert "<script" in index and not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", index)
    assert not re.search(r"\sstyle=", index) and "<style" not in index
    assert not re.search(r"\son[a-z]+=", index)  # no inline event handlers
    for name in WEB_FILES:  # nothing from another host
        text = files.joinpath(name).read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name
    hooks = ("add-contact-input", "add-contact", "my-card", "chat-input", "chat-send",
             "status-select", "file-input", "call-area")
    for hook in hooks:
        assert f'data-testid="{hook}"' in index, hook
    sheets = re.findall(r'<link rel="stylesheet" href="/([\w.-]+)">', index)
    assert sheets and all(files.joinpath(name).is_file() for name in sheets), sheets


def test_the_app_talks_to_no_other_host_and_builds_no_html_from_strings() -> None:
    files = web_files()
    for entry in files.iterdir():
        if not entry.name.endswith((".js", ".html", ".css")):
            continue
        text = entry.read_text()
        for url in re.findall(r"\b(?:https?|wss?):/+[^\s\"'`)]*", text):
            assert url.startswith("http://www.w3.org/"), (entry.name, url)  # namespaces only
        if entry.name.endswith(".js"):
            code = re.sub(r"//[^\n]*", "", text)  # comments may name what is not done
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                         "eval(", "new Function", "setAttribute(\"style\""):
                assert sink not in code, (entry.name, sink)


def test_the_app_modules_import_what_exists() -> None:
    """Every ``import {a, b as c} from "./x.js"`` (and ``import("./x.js")``) of the app's
    modules names a file of the app that exports those names: a renamed or moved function
    breaks this test, not the page."""
    files = web_files()
    sources = {e.name: e.read_text() for e in files.iterdir() if e.name.endswith(".js")}
    exported: dict[str, set[str]] = {}
    for name, text in sources.items():
        names = set(re.findall(r"^export (?:async )?(?:function\*?|class|const|let|var) "
                               r"([A-Za-z_$][\w$]*)", text, re.M))
        for group in re.findall(r"^export \{([^}]*)\}", text, re.M):
            names |= {n.split(" as ")[-1].strip() for n in group.split(",") if n.strip()}
        exported[name] = names
    for name, text in sources.items():
        for spec, target in re.findall(r"^import \{([^}]*)\} from \"\./([\w.-]+)\";", text, re.M):
            assert target in sources, (name, target)
            for item in spec.split(","):
                wanted = item.split(" as ")[0].strip()
                if wanted:
                    assert wanted in exported[target], (name, target, wanted)
        for target in re.findall(r"import\(\"\./([\w.-]+)\"\)", text):
            assert target in sources, (name, target)
    index = files.joinpath("index.html").read_text()
    for src in re.findall(r'<script[^>]*src="/([\w.-]+)"', index):
        assert src in sources, src


def test_pyproject_ships_the_web_files() -> None:
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"web/*"' in text.split("[tool.setuptools.package-data]")[1].split("\n")[1]
    deps = text.split("[project.optional-dependencies]")[0]
    assert '"qrcode>=8"' in deps  # a core dependency: the app's QR code needs it


@pytest.mark.parametrize("name", ["../pyproject.toml", "..", ".hidden.js", "a/b.js",
                                  "daemon.lock", "index.html/", "%2e%2e", "x.py", "app"])
def test_static_lookup_names_nothing_outside(name: str) -> None:
    assert static_file(name) is None


async def test_static_files_types_and_headers(node: Daemon) -> None:
    c = Client(node)
    expected = {"/": "text/html; charset=utf-8", "/index.html": "text/html; charset=utf-8",
                "/app.js": "text/javascript; charset=utf-8",
                "/api.js": "text/javascript; charset=utf-8",
                "/style.css": "text/css; charset=utf-8", "/icon.svg": "image/svg+xml"}
    for path, ctype in expected.items():
        status, h, body = await c.request("GET", path)
        assert status == 200 and h["content-type"] == ctype, (path, status, h)
        csp = h["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert f"ws://127.0.0.1:{c.port}" in csp
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
        assert body == static_file(path.lstrip("/"))[0]  # type: ignore[index]
    # Every answer has them, errors and the API included.
    for path in ("/nothing.js", "/api/status"):
        status, h, _ = await c.request("GET", path)
        assert status in (401, 404) and "frame-ancestors 'none'" in h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/../pyproject.toml", "/%2e%2e/%2e%2e/pyproject.toml",
                                  "/..%2f..%2fpyproject.toml", "/web/", "/hailing/",
                                  "/.%2e/api.json", "/api.json", "/history.sqlite3",
                                  "/%2e%2e%2fapi.json", "//etc/passwd", "/app.js%00.html"])
async def test_no_path_leads_out_of_the_app(node: Daemon, path: str) -> None:
    (node.data_dir / "secret.txt").write_text("secret")
    c = Client(node)
    status, _, body = await c.request("GET", path)
    assert status in (400, 404), (path, status)
    assert b"secret" not in body and node.api_info is not None
    assert node.api_info.token.encode() not in body


@pytest.mark.parametrize("path", ["/%61pi/status", "/./api/status", "//api/status",
                                  "/api/../api/status", "/API/status", "/api/%2e%2e/api/status",
                                  "/x/../api/status", "/api/status/", "/api/status?x=/open"])
async def test_no_spelling_of_an_api_path_skips_the_token(node: Daemon, path: str) -> None:
    status, _, body = await Client(node).request("GET", path)
    assert status in (400, 401, 404), (path, status, body)
    assert node.peer.contact_id.encode() not in body


async def test_static_files_keep_the_host_check(node: Daemon) -> None:
    c = Client(node)
    for host in ("evil.example", f"evil.example:{c.port}", f"127.0.0.1:{c.port + 1}"):
        for path in ("/", "/app.js", "/open?code=x"):
            status, _, _ = await c.request("GET", path, headers={"Host": host})
            assert status == 403, (host, path)
    status, _, _ = await c.request("GET", "/", headers={"Origin": "http://evil.example"})
    assert status == 403


# -- signing in ----------------------------------------------------------------------------


async def test_open_swaps_a_code_for_a_cookie_once(node: Daemon) -> None:
    c = Client(node)
    status, _, body = await c.request("POST", "/api/web/code", bearer=True)
    answer = _json(body)
    assert status == 200 and answer["url"] == f"{c.origin}/open?code={answer['code']}"
    status, h, _ = await c.request("GET", f"/open?code={answer['code']}")
    assert status == 303 and h["location"] == "/"
    cookie = h["set-cookie"]
    name, _, rest = cookie.partition("=")
    assert name == f"hailing-{c.port}"
    flags = {f.strip().lower() for f in rest.split(";")[1:]}
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert h["cache-control"] == "no-store" and h["referrer-policy"] == "no-referrer"
    session = cookie.split(";")[0]
    status, _, body = await c.request("GET", "/api/status", headers={"Cookie": session})
    assert status == 200 and _json(body)["contact_id"] == node.peer.contact_id

    # The same code again: refused, no cookie.
    status, h, body = await c.request("GET", f"/open?code={answer['code']}")
    assert status == 403 and "set-cookie" not in h and b"hailing open" in body
    for bad in ("", "nope", "x" * 200):
        status, h, _ = await c.request("GET", f"/open?code={bad}")
        assert status == 403 and "set-cookie" not in h
    # A browser signed in already that opens a spent link again simply goes on to the app.
    status, h, _ = await c.request("GET", f"/open?code={answer['code']}",
                                   headers={"Cookie": session})
    assert status == 303 and h["location"] == "/" and "set-cookie" not in h
    web = _json((await c.request("GET", "/api/status", bearer=True))[2])["web"]
    assert web["sessions"] == 1 and web["codes_refused"] == 4  # "" is not even tried


def test_a_code_expires_and_codes_are_bounded() -> None:
    now = [1000.0]
    auth = WebAuth(port=5, clock=lambda: now[0])
    old = auth.mint_code(60)
    now[0] += 61
    assert auth.redeem(old) is None
    fresh = auth.mint_code(60)
    now[0] += 59
    session = auth.redeem(fresh)
    assert session and auth.session_ok(session) and not auth.session_ok(session + "x")
    assert auth.redeem(fresh) is None
    codes = [auth.mint_code() for _ in range(webmod.MAX_CODES + 5)]
    assert auth.redeem(codes[0]) is None and auth.redeem(codes[-1]) is not None
    assert auth.cookie_name == "hailing-5"


async def test_up_code_is_a_working_sign_in_link(node: Daemon) -> None:
    c = Client(node)
    url = node.login_url()
    assert url.startswith(f"{c.origin}/open?code=")
    status, h, _ = await c.request("GET", url[len(c.origin):])
    assert status == 303 and h["set-cookie"].startswith(f"hailing-{c.port}=")


async def test_cookie_rules(node: Daemon) -> None:
    c = Client(node)
    cookie = await c.sign_in()
    own = {"Cookie": cookie, "Origin": c.origin}

    async def status_of(method: str, path: str, body: Any = None, **headers: str) -> int:
        return (await c.request(method, path, body, headers=headers))[0]

    # Reads with the cookie alone; changes need the own Origin too.
    assert await status_of("GET", "/api/contacts", Cookie=cookie) == 200
    assert await status_of("POST", "/api/status", {"status": "busy"}, **own) == 200
    assert await status_of("POST", "/api/status", {"status": "dnd"}, Cookie=cookie) == 403
    assert await status_of("POST", "/api/status", {"status": "dnd"}, Cookie=cookie,
                           Origin="http://evil.example") == 403
    assert await status_of("POST", "/api/status", {"status": "dnd"}, Cookie=cookie,
                           Origin="null") == 403
    assert await status_of("DELETE", "/api/contacts/x", Cookie=cookie) == 403
    assert node.presence()["status"] == "busy"  # none of the refused ones changed it
    # A wrong or foreign cookie is no session; neither is another port's.
    for bad in (f"hailing-{c.port}=forged", f"hailing-{c.port}=", f"hailing-{c.port + 1}="
                + cookie.split("=", 1)[1], "other=1"):
        assert await status_of("GET", "/api/status", Cookie=bad) == 401, bad
        assert await status_of("POST", "/api/status", {"status": "dnd"}, Cookie=bad,
                               Origin=c.origin) == 401, bad
    # The cookie cannot mint codes; the token still works as before.
    assert await status_of("POST", "/api/web/code", **own) == 403
    assert (await c.request("GET", "/api/status", bearer=True))[0] == 200
    assert (await c.request("POST", "/api/status", {"status": "available"}, bearer=True))[0] == 200


def _ws_handshake(port: int, headers: dict[str, str]) -> bytes:
    lines = ["GET /api/events HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall("\r\n".join(lines).encode())
        return s.recv(200)


async def test_the_event_socket_with_the_cookie_needs_the_own_origin(node: Daemon) -> None:
    c = Client(node)
    cookie = await c.sign_in()
    shake = lambda **h: asyncio.to_thread(_ws_handshake, c.port, h)  # noqa: E731
    assert (await shake(Cookie=cookie)).startswith(b"HTTP/1.1 403")
    assert (await shake(Cookie=cookie, Origin="http://evil.example")).startswith(b"HTTP/1.1 403")
    assert (await shake(Cookie="hailing-1=x", Origin=c.origin)).startswith(b"HTTP/1.1 401")
    assert (await shake(Cookie=cookie, Origin=c.origin)).startswith(b"HTTP/1.1 101")


# -- the card and contacts -----------------------------------------------------------------


async def test_card_and_its_qr_code(node: Daemon) -> None:
    c = Client(node)
    status, _, body = await c.request("GET", "/api/card", bearer=True)
    card = _json(body)
    assert status == 200 and parse_card(card["card"]).contact_id == node.peer.contact_id
    assert card["contact_id"] == node.peer.contact_id
    status, h, svg = await c.request("GET", "/api/card/qr.svg", bearer=True)
    assert status == 200 and h["content-type"].startswith("image/svg+xml")
    assert svg.startswith(b"<svg") and b"<script" not in svg
    assert svg.decode() == card_svg(card["card"])


async def test_import_a_card_or_an_id(node: Daemon, tmp_path: Path) -> None:
    c = Client(node)
    friend = load_or_create_identity(tmp_path / "friend")
    card = make_card(friend, "Friend", ("prefix-1", "u" * 16))
    wrapped = "\n".join(card[i:i + 40] for i in range(0, len(card), 40))  # as mailed
    status, _, body = await c.request("POST", "/api/contacts/import", {"text": wrapped},
                                      bearer=True)
    got = _json(body)
    assert status == 200, got
    assert got["name"] == "Friend" and got["contact_id"] == friend.contact_id and got["rotation"]
    assert node.peer.store.rotation(friend.public_key) is not None
    contacts = {x["contact_id"]: x for x in node.contacts()}
    assert contacts[friend.contact_id]["online"] is False
    assert contacts[friend.contact_id]["last_seen"] is None

    other = load_or_create_identity(tmp_path / "other")
    cases = {
        "id without name": ({"text": other.contact_id}, 400),
        "same name": ({"text": other.contact_id, "name": "friend"}, 400),
        "damaged": ({"text": card[:-3]}, 400),
        "garbage": ({"text": "hello"}, 400),
        "own card": ({"text": _json((await c.request("GET", "/api/card", bearer=True))[2])
                      ["card"]}, 400),
        "not text": ({"text": 5}, 400),
    }
    for what, (body_in, code) in cases.items():
        status, _, body = await c.request("POST", "/api/contacts/import", body_in, bearer=True)
        assert status == code and _json(body)["error"], (what, status, body)
    status, _, body = await c.request("POST", "/api/contacts/import",
                                      {"text": other.contact_id, "name": "Other"}, bearer=True)
    assert status == 200 and _json(body)["name"] == "Other"


# -- files ---------------------------------------------------------------------------------


def _multipart(name: str, data: bytes, field: str = "file") -> tuple[bytes, str]:
    boundary = "----hailingtest7MA4YWxkTrZu0gW"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def test_upload_sends_the_file_then_removes_it(node: Daemon, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    c = Client(node)
    friend = load_or_create_identity(tmp_path / "friend")
    await node.add_contact(friend.contact_id, "friend")
    sent: list[tuple[str, Path, bytes]] = []

    async def send_file(ref: str, path: str, timeout: float) -> dict[str, Any]:
        p = Path(path)
        sent.append((ref, p, p.read_bytes()))
        return {"to": friend.contact_id, "delivered": True, "bytes": p.stat().st_size}

    monkeypatch.setattr(node, "send_file", send_file)
    data = bytes(range(256)) * 1000
    raw, ctype = _multipart("../../holiday photo.jpg", data)
    status, _, body = await c.request("POST", "/api/upload?contact=friend", raw=raw,
                                      headers={"Content-Type": ctype}, bearer=True)
    assert status == 200, body
    ref, path, content = sent[0]
    assert ref == "friend" and content == data and path.name == "holiday photo.jpg"
    assert path.is_relative_to(node.data_dir / "uploads") and not path.exists()

    # The cap: refused, nothing sent, nothing left.
    node._api.web.max_upload = 1000
    raw, ctype = _multipart("big.bin", b"x" * 5000)
    status, _, body = await c.request("POST", "/api/upload?contact=friend", raw=raw,
                                      headers={"Content-Type": ctype}, bearer=True)
    assert status == 413 and len(sent) == 1, body
    assert not any((node.data_dir / "uploads").rglob("*.bin"))

    garbage = {
        "not multipart": (b"just bytes", "application/octet-stream"),
        "bad boundary": (b"--nope\r\n\r\nxx", "multipart/form-data; boundary=other"),
        "no boundary": (b"--x\r\n", "multipart/form-data"),
        "no file part": _multipart("a.txt", b"hi", field="other"),
        "truncated": (_multipart("a.txt", b"hi")[0][:70], _multipart("a.txt", b"")[1]),
    }
    for what, (raw, ctype) in garbage.items():
        status, _, body = await c.request("POST", "/api/upload?contact=friend", raw=raw,
                                          headers={"Content-Type": ctype}, bearer=True)
        assert status == 400 and _json(body)["error"], (what, status, body)
    status, _, _ = await c.request("POST", "/api/upload?contact=nobody", raw=b"",
                                   headers={"Content-Type": ctype}, bearer=True)
    assert status == 404
    assert len(sent) == 1 and not any(p.is_file() for p in (node.data_dir / "uploads").rglob("*"))
    status, _, body = await c.request("GET", "/api/status", bearer=True)
    assert _json(body)["web"]["uploads_refused"] == 1 + len(garbage)  # counted


async def test_download_serves_received_files_only(node: Daemon, tmp_path: Path) -> None:
    c = Client(node)
    history = node.history
    assert history is not None
    peer = load_or_create_identity(tmp_path / "friend").public_key
    downloads = node.peer.downloads
    data = b"<html><script>alert(1)</script></html>"
    (downloads / "page.html").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    got = history.add_file(peer, "in", name="page.html", path=str(downloads / "page.html"),
                           size=len(data), sha256=digest)
    (tmp_path / "outside.txt").write_text("outside")
    outside = history.add_file(peer, "in", name="outside.txt", path=str(tmp_path / "outside.txt"),
                               size=7, sha256="0" * 64)
    traversal = history.add_file(peer, "in", name="x", path=str(downloads / ".." / "api.json"),
                                 size=1, sha256="0" * 64)
    sent = history.add_file(peer, "out", name="o.txt", path=str(tmp_path / "outside.txt"),
                            size=7, sha256="0" * 64)
    text = history.add_text(peer, "in", "hello")
    gone = history.add_file(peer, "in", name="gone", path=str(downloads / "gone"), size=1,
                            sha256="0" * 64)

    status, h, body = await c.request("GET", f"/api/files/{got}", bearer=True)
    assert status == 200 and body == data
    assert h["content-type"] == "application/octet-stream"  # never rendered on our origin
    assert h["content-disposition"].startswith('attachment; filename="page.html"')
    assert h["x-content-type-options"] == "nosniff"
    for entry in (outside, traversal, sent, text, gone, 99999, "abc", "-1", "1e3"):
        status, _, body = await c.request("GET", f"/api/files/{entry}", bearer=True)
        assert status == 404, (entry, status)
        assert b"outside" not in body and b"token" not in body


def test_safe_names() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\Users\\x\\a.txt") == "a.txt"
    assert safe_name("..") == "file" and safe_name("") == "file" and safe_name(None) == "file"
    assert safe_name(".bashrc") == "bashrc"
    assert safe_name("a\x00b\nc.txt") == "abc.txt"
    assert len(safe_name("é" * 300).encode()) <= 200


async def test_contacts_show_presence_from_history(node: Daemon, tmp_path: Path) -> None:
    friend = load_or_create_identity(tmp_path / "friend")
    await node.add_contact(friend.contact_id, "friend")
    assert node.history is not None
    before = time.time()
    node.history.add_text(friend.public_key, "in", "hi")
    (c,) = node.contacts()
    assert c["online"] is False and c["last_seen"] >= before


# -- the command line: `hailing up`'s web line and `hailing open` ----------------------------


@pytest.fixture(scope="module")
def bootstrap() -> Any:
    from pytest_helpers import run_testnet

    yield from run_testnet(4)


def test_up_prints_a_sign_in_link_and_open_prints_a_fresh_one(bootstrap: str,
                                                                tmp_path: Path) -> None:
    from test_cli_peer import daemon, new_ids, ok, one_error_line, run

    ids = new_ids(tmp_path, "bob")
    d_dir = tmp_path / "bob"
    assert "no daemon runs" in one_error_line(run("open", "--print", "--data-dir", d_dir), 1)
    with daemon("up", "--data-dir", d_dir, "--bootstrap", bootstrap) as d:
        first = d.first_line()
        assert first.startswith(f"up {ids['bob']} dht "), d.out.lines
        port = int(first.rsplit(":", 1)[1])
        d.out.wait_for(lambda _: True, 1)
        web_line = d.out.lines[1]
        m = re.fullmatch(rf"web http://127\.0\.0\.1:{port}/open\?code=([A-Za-z0-9_-]{{20,}})",
                         web_line)
        assert m, d.out.lines

        def get(path: str) -> tuple[int, dict[str, str]]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}

        status, h = get(f"/open?code={m.group(1)}")
        assert status == 303 and "httponly" in h["set-cookie"].lower()
        assert get(f"/open?code={m.group(1)}")[0] == 403  # once only

        (url,) = ok(run("open", "--print", "--data-dir", d_dir))
        code = re.fullmatch(rf"http://127\.0\.0\.1:{port}/open\?code=([A-Za-z0-9_-]+)", url)
        assert code and code.group(1) != m.group(1)
        assert get(f"/open?code={code.group(1)}")[0] == 303
        # Without a display (and no $BROWSER), no text browser takes the terminal: the
        # link is printed with a one-line note.
        bare = run("open", "--data-dir", d_dir, DISPLAY="", WAYLAND_DISPLAY="", BROWSER="")
        (printed,) = ok(bare)
        assert printed.startswith(f"http://127.0.0.1:{port}/open?code=")
        assert "no browser" in one_error_line(bare, 0)
        # The events that follow are JSON lines, as before.
        assert all(line.startswith("{") for line in d.out.lines[2:])
        assert d.stop() == 0


async def test_a_restart_removes_what_uploads_left(tmp_path: Path) -> None:
    left = tmp_path / "me" / "uploads" / "0123abcd" / "half.bin"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"x" * 100)  # a daemon killed in the middle of an upload
    d = Daemon(tmp_path / "me", lambda _node: FakePeer(tmp_path / "me"), idle_close=0)
    await d.start()
    try:
        assert not (tmp_path / "me" / "uploads").exists()
    finally:
        await d.stop()
