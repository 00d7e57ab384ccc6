from pathlib import Path

import pytest

from agent.config import (
    Config,
    ConfigError,
    config_from_dict,
    load_config,
    parse_rate,
    parse_size,
    render_defaults,
)
from radio.mesh import DEFAULT_MESH


def test_defaults_need_no_file():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.store.avg_chunk_size == 256 * 1024
    assert cfg.node.control_socket_path == cfg.node.data_dir / "control.sock"


def test_toml_overrides_and_units(tmp_path: Path):
    p = tmp_path / "shoal.toml"
    p.write_text(
        '[node]\nname = "pi-kitchen"\ndata_dir = "/srv/shoal"\n'
        '[store]\navg_chunk_size = "64KiB"\nquota = "2GiB"\n'
        '[bandwidth]\nglobal_limit = "20Mbit"\n[lan]\ninterfaces = ["eth0"]\nport = 0\n'
    )
    cfg = load_config(p)
    assert cfg.node.name == "pi-kitchen"
    assert cfg.node.data_dir == Path("/srv/shoal")
    assert cfg.store.avg_chunk_size == 65536
    assert cfg.store.quota == 2 * 1024**3
    assert cfg.bandwidth.global_limit == 2_500_000
    assert cfg.lan.interfaces == ("eth0",)


@pytest.mark.parametrize(
    ("doc", "key", "hint"),
    [
        ({"store": {"avg_chunk_size": "lots"}}, "store.avg_chunk_size", "byte size"),
        ({"store": {"avg_chunk_size": 1024}}, "store.avg_chunk_size", "between"),
        ({"lan": {"port": 70000}}, "lan.port", "between 0 and 65535"),
        ({"lan": {"port": "80"}}, "lan.port", "number"),
        ({"lan": {"mdns": "yes"}}, "lan.mdns", "true or false"),
        ({"lan": {"nope": 1}}, "lan.nope", "known keys"),
        ({"bogus": {}}, "bogus", "known keys"),
        ({"node": "x"}, "node", "table"),
        ({"lan": {"interfaces": "eth0"}}, "lan.interfaces", "list of strings"),
        ({"bandwidth": {"global_limit": "fast"}}, "bandwidth.global_limit", "rate"),
        ({"transfer": {"max_sources": 2.5}}, "transfer.max_sources", "whole number"),
    ],
)
def test_bad_values_name_key_and_form(doc, key, hint):
    with pytest.raises(ConfigError) as exc:
        config_from_dict(doc)
    assert exc.value.key == key
    assert f"'{key}'" in str(exc.value)
    assert hint in str(exc.value)


def test_bad_toml_and_missing_file(tmp_path: Path):
    p = tmp_path / "bad.toml"
    p.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read it") as e:
        load_config(tmp_path / "missing.toml")
    # the file is named as a file, not as a "config key '--config'"
    assert str(e.value).startswith(f"config file '{tmp_path / 'missing.toml'}'")
    assert "config key" not in str(e.value)


def test_command_line_options_are_not_called_config_keys():
    assert str(ConfigError("--port", "a port")).startswith("option '--port': expected a port")
    assert str(ConfigError("lan.port", "a port")).startswith("config key 'lan.port'")


def test_parsers():
    assert parse_size("1.5 MiB", "k") == 1572864
    assert parse_size(10, "k") == 10
    assert parse_rate("100mbit", "k") == 12_500_000
    assert parse_rate("5MB/s", "k") == 5_000_000
    for bad in (True, -1, "1 parsec", None):
        with pytest.raises(ConfigError):
            parse_size(bad, "k")


def test_rendered_defaults_parse_back(tmp_path: Path):
    p = tmp_path / "d.toml"
    p.write_text(render_defaults())
    cfg = load_config(p)
    assert cfg.store == Config().store
    assert cfg.lan == Config().lan


def test_mesh_default_file_env_and_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SHOAL_MESH", raising=False)
    assert Config().node.mesh == DEFAULT_MESH == "shoal"
    assert config_from_dict({"node": {"mesh": "home-2.lab_A"}}).node.mesh == "home-2.lab_A"
    assert config_from_dict({"node": {"mesh": "m" * 32}}).node.mesh == "m" * 32
    for bad in ("", "m" * 33, "two words", "café", 'q"', "a/b", 7, True, ["x"]):
        with pytest.raises(ConfigError) as exc:
            config_from_dict({"node": {"mesh": bad}})
        assert exc.value.key == "node.mesh" and "1-32 characters" in str(exc.value)
    monkeypatch.setenv("SHOAL_MESH", "from-env")
    assert Config().node.mesh == "from-env"
    assert config_from_dict({"node": {"mesh": "file"}}).node.mesh == "file"  # file wins
    monkeypatch.setenv("SHOAL_MESH", "not valid")
    with pytest.raises(ConfigError, match=r"SHOAL_MESH"):
        Config()
    monkeypatch.setenv("SHOAL_MESH", "rendered")
    p = tmp_path / "d.toml"
    p.write_text(render_defaults())
    monkeypatch.delenv("SHOAL_MESH")
    assert load_config(p).node.mesh == "rendered"


def test_cli_mesh_flag_overrides_config(tmp_path: Path):
    from agent.control.cli import build_parser, resolve_config

    p = tmp_path / "c.toml"
    p.write_text('[node]\nmesh = "file"\n')
    args = build_parser().parse_args(["--config", str(p), "run", "--mesh", "flag"])
    assert resolve_config(args).node.mesh == "flag"
    args = build_parser().parse_args(["--config", str(p), "run"])
    assert resolve_config(args).node.mesh == "file"
    args = build_parser().parse_args(["run", "--mesh", "bad mesh"])
    with pytest.raises(ConfigError, match="--mesh"):
        resolve_config(args)


@pytest.mark.parametrize(
    ("doc", "key", "hint"),
    [
        ({"lan": {"listen": "not-an-ip"}}, "lan.listen", "IPv4 or IPv6 address"),
        ({"lan": {"listen": "localhost"}}, "lan.listen", "IPv4 or IPv6 address"),
        ({"lan": {"listen": "10.0.0.300"}}, "lan.listen", "IPv4 or IPv6 address"),
        ({"lan": {"listen": 127}}, "lan.listen", "IPv4 or IPv6 address"),
        ({"lan": {"port": -1}}, "lan.port", "between 0 and 65535"),
        ({"lan": {"heartbeat_interval": float("nan")}}, "lan.heartbeat_interval", "between"),
        ({"lan": {"connect_timeout": float("inf")}}, "lan.connect_timeout", "between"),
        ({"lan": {"connect_timeout": 0}}, "lan.connect_timeout", "between"),
        ({"lan": {"peer_timeout": 1.0, "heartbeat_interval": 2.0}}, "lan.peer_timeout",
         "more seconds than lan.heartbeat_interval"),
        ({"lan": {"interfaces": ["eth0", "has space"]}}, "lan.interfaces", "interface names"),
        ({"lan": {"interfaces": ["a" * 16]}}, "lan.interfaces", "interface names"),
        ({"lan": {"interfaces": ["../etc"]}}, "lan.interfaces", "interface names"),
        ({"node": {"name": ""}}, "node.name", "printable"),
        ({"node": {"name": "n" * 65}}, "node.name", "1-64"),
        ({"node": {"name": "evil\x1b[31m"}}, "node.name", "control or format"),
        ({"node": {"name": "a\u202eb"}}, "node.name", "control or format"),
        ({"node": {"control_socket": "/" + "s" * 120}}, "node.control_socket", "107 bytes"),
        ({"pairing": {"window_seconds": float("inf")}}, "pairing.window_seconds", "between"),
        ({"transfer": {"initial_window": 32, "max_window": 8}}, "transfer.initial_window",
         "at most transfer.max_window"),
        ({"ble": {"adapter": "wlan0"}}, "ble.adapter", "hci0"),
    ],
)
def test_checkable_forms_are_checked(doc, key, hint):
    """Values whose form can be checked fail at load time, naming the key and the form, on
    one line (they used to pass `config check` and fail at start-up with a traceback)."""
    with pytest.raises(ConfigError) as exc:
        config_from_dict(doc)
    assert exc.value.key == key
    assert hint in str(exc.value) and "\n" not in str(exc.value)


def test_good_forms_still_load():
    cfg = config_from_dict({
        "node": {"name": "pi kitchen \u00e9"},
        "lan": {"listen": "::", "interfaces": ["eth0", "wg*", "enp0s31f6"]},
        "ble": {"adapter": "hci1"},
        "transfer": {"initial_window": 16, "max_window": 16},
    })
    assert cfg.lan.listen == "::" and cfg.lan.interfaces == ("eth0", "wg*", "enp0s31f6")
    assert config_from_dict({"lan": {"listen": "127.0.0.1"}}).lan.listen == "127.0.0.1"
    assert config_from_dict({"lan": {"listen": "::1"}}).lan.listen == "::1"


def test_config_check_refuses_a_bad_listen_address(tmp_path: Path, capsys):
    from agent.control.cli import main

    p = tmp_path / "c.toml"
    p.write_text('[lan]\nlisten = "not-an-ip"\n')
    assert main(["--config", str(p), "config", "check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'lan.listen'" in err and "IPv4 or IPv6" in err


def test_cli_overrides_are_checked_like_the_file(tmp_path: Path):
    from agent.control.cli import build_parser, resolve_config

    args = build_parser().parse_args(["--data-dir", str(tmp_path), "run", "--listen", "nope"])
    with pytest.raises(ConfigError) as exc:
        resolve_config(args)
    assert exc.value.key == "lan.listen"
    args = build_parser().parse_args(["--data-dir", str(tmp_path), "run", "--name", "x\x07"])
    with pytest.raises(ConfigError, match=r"node\.name"):
        resolve_config(args)
    args = build_parser().parse_args(["--data-dir", str(tmp_path), "run", "--listen", "::1"])
    cfg = resolve_config(args)
    assert cfg.lan.listen == "::1" and cfg.node.data_dir == tmp_path.resolve()


def test_cli_local_flag_keeps_the_agent_on_this_machine(tmp_path: Path):
    from agent.control.cli import CliError, build_parser, resolve_config

    p = tmp_path / "c.toml"
    p.write_text('[lan]\nport = 5000\ninterfaces = ["eth0"]\n[ble]\nenabled = true\n')
    cfg = resolve_config(build_parser().parse_args(["--config", str(p), "run", "--local"]))
    assert (cfg.lan.listen, cfg.lan.port) == ("127.0.0.1", 0)  # any free port
    assert cfg.lan.interfaces == ("lo",) and cfg.lan.include_loopback  # mDNS on lo only
    assert not cfg.ble.enabled
    cfg = resolve_config(build_parser().parse_args(["run", "--local", "--port", "7000"]))
    assert (cfg.lan.listen, cfg.lan.port) == ("127.0.0.1", 7000)
    with pytest.raises(CliError, match="drop --listen"):
        resolve_config(build_parser().parse_args(["run", "--local", "--listen", "0.0.0.0"]))
