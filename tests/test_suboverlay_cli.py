"""``--bootstrap public`` and ``bootstrap = ["public"]``: expanded to the public DHT's
routers when parsed, resolved only when a node joins; nothing here resolves or sends."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hailing.cli import build_parser, main
from hailing.cli._config import load_config
from hailing.cli._shared import prepare
from hailing.node import PUBLIC_BOOTSTRAP, parse_hostport

PUBLIC = [parse_hostport(t) for t in PUBLIC_BOOTSTRAP]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsing a bootstrap list must not resolve names")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.delenv("HAILING_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "hailing"


@pytest.mark.parametrize("argv", [
    ["listen", "--bootstrap", "public"],
    ["up", "--bootstrap", "public"],
    ["dht", "get", "ab" * 20, "--bootstrap", "public"],
    ["dht", "serve", "--bind", "127.0.0.1:0", "--bootstrap", "public"],
])
def test_the_word_public_expands_to_the_routers(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).bootstrap == PUBLIC


def test_public_mixes_with_addresses() -> None:
    args = build_parser().parse_args(
        ["listen", "--bootstrap", "127.0.0.1:1", "--bootstrap", "public"])
    assert args.bootstrap == [("127.0.0.1", 1), *PUBLIC]
    assert build_parser().parse_args(["listen", "--bootstrap", "127.0.0.1:1"]).bootstrap == [
        ("127.0.0.1", 1)]


def test_config_keeps_the_word(offline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "set", "bootstrap", "public", "127.0.0.1:6881"]) == 0
    assert capsys.readouterr().out == 'bootstrap = ["public", "127.0.0.1:6881"]\n'
    assert load_config(offline).bootstrap == [*PUBLIC, ("127.0.0.1", 6881)]
    args = build_parser().parse_args(["listen"])
    prepare(args)
    assert args.bootstrap == [*PUBLIC, ("127.0.0.1", 6881)]
