"""The default data directory and DATA_DIR/config.toml: resolution, the ``config``
commands, settings reaching the commands' options, and one-line errors for a bad file.

Most tests call ``hailing.cli.main`` in process (fast); the error paths also run
``python -m hailing`` in a subprocess to prove there is no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hailing.cli import build_parser, main
from hailing.cli._config import default_data_dir, load_config
from hailing.cli._shared import prepare
from hailing.errors import StorageError
from hailing.identity import load_or_create_identity

HAILING = [sys.executable, "-m", "hailing"]


@pytest.fixture(autouse=True)
def xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """XDG_DATA_HOME in tmp_path and no HAILING_DATA_DIR: the default data directory is
    tmp_path/xdg/hailing."""
    monkeypatch.delenv("HAILING_DATA_DIR", raising=False)
    monkeypatch.delenv("HAILING_ICE_HOSTS", raising=False)
    monkeypatch.delenv("HAILING_PASSPHRASE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "hailing"


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), repr(err)
    return err.strip()


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HAILING, *map(str, argv)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=dict(os.environ))


# -- where the data directory is -----------------------------------------------------------


def test_default_data_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"HOME": str(home)}
    monkeypatch.setenv("HOME", str(home))
    assert default_data_dir(env) == home / ".local" / "share" / "hailing"
    assert default_data_dir({**env, "XDG_DATA_HOME": "/x/data"}) == Path("/x/data/hailing")
    # a relative XDG_DATA_HOME is invalid (XDG spec) and ignored
    assert default_data_dir({**env, "XDG_DATA_HOME": "rel"}) == home / ".local/share/hailing"
    assert default_data_dir({**env, "XDG_DATA_HOME": "/x/data",
                             "HAILING_DATA_DIR": "/y/mine"}) == Path("/y/mine")


def test_id_new_without_data_dir_uses_xdg(xdg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "id", "new", "--name", "alice")
    assert code == 0
    assert (xdg / "identity.key").exists()
    code, shown, _ = cli(capsys, "id", "show")
    assert code == 0 and shown.splitlines() == [out.splitlines()[0], "name alice"]


def test_hailing_data_dir_wins_over_xdg(xdg: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    monkeypatch.setenv("HAILING_DATA_DIR", str(mine))
    assert cli(capsys, "id", "new")[0] == 0
    assert (mine / "identity.key").exists() and not xdg.exists()
    code, out, _ = cli(capsys, "config", "show")
    assert code == 0 and f"# data directory: {mine} (from $HAILING_DATA_DIR)" in out
    # --data-dir wins over both
    other = tmp_path / "other"
    assert cli(capsys, "id", "new", "--data-dir", other)[0] == 0
    assert (other / "identity.key").exists()


@pytest.mark.parametrize("argv", [
    ["id", "show"], ["status"], ["contact", "list"], ["rotation", "show"],
    ["wallet", "rotating", "--date", "2024-01-01"], ["endpoint", "list"], ["config", "show"],
])
def test_data_dir_is_optional_everywhere(argv: list[str], xdg: Path) -> None:
    args = build_parser().parse_args(argv)
    prepare(args)
    assert args.data_dir == str(xdg)


# -- the config commands -------------------------------------------------------------------


def test_config_set_show_unset(xdg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "config", "show")
    assert code == 0
    assert "(not created yet)" in out and "# bootstrap (not set)" in out
    assert not xdg.exists()  # showing creates nothing

    code, out, _ = cli(capsys, "config", "set", "bootstrap", "127.0.0.1:6881", "[::1]:7")
    assert (code, out) == (0, 'bootstrap = ["127.0.0.1:6881", "[::1]:7"]\n')
    assert cli(capsys, "config", "set", "ice-hosts", "127.0.0.1")[1] == 'ice_hosts = ["127.0.0.1"]\n'
    assert cli(capsys, "config", "set", "bind", "0.0.0.0:6881")[0] == 0
    assert cli(capsys, "config", "set", "via", "contract")[0] == 0

    config = load_config(xdg)
    assert config.bootstrap == [("127.0.0.1", 6881), ("::1", 7)]
    assert config.bind == ("0.0.0.0", 6881) and config.via == "contract"
    assert config.ice_hosts == ["127.0.0.1"]

    code, out, _ = cli(capsys, "config", "show")
    assert 'bootstrap = ["127.0.0.1:6881", "[::1]:7"]' in out.splitlines()
    assert "# bootstrap (not set)" not in out and "# relay (not set)" in out
    import tomllib
    assert tomllib.loads(out)["via"] == "contract"  # show prints valid TOML

    assert cli(capsys, "config", "unset", "via")[1] == "unset via\n"
    assert cli(capsys, "config", "unset", "via")[1] == "unset via (it was not set)\n"
    assert load_config(xdg).via is None


@pytest.mark.parametrize(("argv", "words"), [
    (["config", "set", "bootstrap", "nohost"], ["HOST:PORT", "nohost"]),
    (["config", "set", "bind", "1.2.3.4:1", "1.2.3.4:2"], ["one value"]),
    (["config", "set", "ice_hosts", "not-an-ip"], ["not-an-ip"]),
    (["config", "set", "via", "pigeon"], ["dht", "contract"]),
    (["config", "set", "relay", "http://x"], ["ws://"]),
    (["config", "set", "colour", "blue"], ["unknown setting", "colour", "bootstrap"]),
    (["config", "unset", "colour"], ["unknown setting"]),
])
def test_config_set_refuses_bad_values(argv: list[str], words: list[str], xdg: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 1 and out == ""
    msg = one_error_line(err)
    for word in words:
        assert word in msg
    assert not (xdg / "config.toml").exists()


# -- settings reach the commands -----------------------------------------------------------


def test_settings_fill_what_the_command_line_left_out(xdg: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["bootstrap", "127.0.0.1:6881"], ["bind", "127.0.0.1:7000"],
                 ["ice_hosts", "127.0.0.1"], ["downloads", "inbox"], ["via", "dht"]):
        assert cli(capsys, "config", "set", *argv)[0] == 0
    bob = load_or_create_identity(tmp_path / "bob").contact_id

    args = build_parser().parse_args(["send", bob, "hi"])
    prepare(args)
    assert args.data_dir == str(xdg)
    assert args.bootstrap == [("127.0.0.1", 6881)] and args.bind == ("127.0.0.1", 7000)
    assert args.ice_host == ["127.0.0.1"] and args.via == "dht"
    assert args.downloads == str(xdg / "inbox")

    args = build_parser().parse_args(["listen", "--bootstrap", "127.0.0.1:1", "--ice-host",
                                      "127.0.0.2", "--via", "contract"])
    prepare(args)  # flags win
    assert args.bootstrap == [("127.0.0.1", 1)] and args.ice_host == ["127.0.0.2"]
    assert args.via == "contract"

    args = build_parser().parse_args(["dht", "get", "ab" * 20])
    prepare(args)
    assert args.bootstrap == [("127.0.0.1", 6881)]


def test_hailing_ice_hosts_wins_over_the_file(xdg: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "config", "set", "ice_hosts", "127.0.0.1")[0] == 0
    monkeypatch.setenv("HAILING_ICE_HOSTS", "127.0.0.3")
    args = build_parser().parse_args(["listen"])
    prepare(args)
    assert args.ice_host == []  # hailing.rtc applies the environment variable itself


def test_endpoint_publish_via_defaults_to_contract_unless_configured(
        xdg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    to = load_or_create_identity(xdg.parent / "x").contact_id
    argv = ["endpoint", "publish", "--to", to, "--kind", "sip", "--endpoint", "h:5060"]
    args = build_parser().parse_args(argv)
    prepare(args)
    assert args.via == "contract"
    assert cli(capsys, "config", "set", "via", "dht")[0] == 0
    args = build_parser().parse_args(argv)
    prepare(args)
    assert args.via == "dht"


def test_missing_bootstrap_names_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "dht", "get", "ab" * 20)
    assert code == 2 and out == ""
    msg = one_error_line(err)
    assert "--bootstrap" in msg and "hailing config set bootstrap" in msg


# -- a bad config.toml -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "words"), [
    ('bootstrap = ["127.0.0.1:1"]\nbind = \n', 2, ["not valid TOML"]),
    ('# c\n\nbootstrap = "127.0.0.1:1"\nvia = 3\n', 4, ["via must be a string"]),
    ('bootstrap = [1, 2]\n', 1, ["bootstrap must be a list of strings"]),
    ('bind = "0.0.0.0:6881"\nboostrap = ["x:1"]\n', 2, ["unknown setting 'boostrap'"]),
    ('bootstrap = ["127.0.0.1:1", "nope"]\n', 1, ["expected HOST:PORT", "nope"]),
    ('[contract]\nrpc = "x"\n', 1, ["unknown setting 'contract'"]),
    ('bootstrap = ["127.0.0.1:1"', 1, ["not valid TOML"]),
    ('via = "dht"\n\xff = 1\n', 2, ["not UTF-8"]),
])
def test_a_bad_config_file_is_one_line_naming_file_and_line(
        text: str, line: int, words: list[str], xdg: Path) -> None:
    xdg.mkdir(parents=True)
    path = xdg / "config.toml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(StorageError) as info:
        load_config(xdg)
    msg = str(info.value)
    assert msg.startswith(f"{path}, line {line}: "), msg
    for word in words:
        assert word in msg, msg


def test_a_bad_config_file_stops_a_command_with_one_line(xdg: Path, tmp_path: Path) -> None:
    xdg.mkdir(parents=True)
    (xdg / "config.toml").write_text('bootstrap = ["127.0.0.1:1"]\nbind = "x"\n')
    bob = load_or_create_identity(tmp_path / "bob").contact_id
    for argv in (["send", bob, "hi"], ["config", "show"], ["config", "set", "via", "dht"]):
        done = run(*argv)
        assert done.returncode == 1, (argv, done.stderr)
        msg = one_error_line(done.stderr)
        assert f"{xdg / 'config.toml'}, line 2:" in msg and "hailing config" in msg
        assert done.stdout == ""
    # commands that need no setting still work
    assert run("status").returncode == 0
