"""Typed configuration: one object, loaded from TOML over embedded defaults.

Why one object: every subsystem receives the slice it needs from the node, so there is no
hidden global state, and a bad value fails at start-up with a message that names the key and
the expected form instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

import platformdirs

from radio.mesh import DEFAULT_MESH, MESH_FORM, MESH_RE

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SERVICE_CONFIG_PATH = Path("/etc/shoal/shoal.toml")
SERVICE_DATA_DIR = Path("/var/lib/shoal")

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_RATE_UNITS = {
    "": 1, "b/s": 1, "bps": 1 / 8, "bit": 1 / 8,
    "kb/s": 1000, "kib/s": 1024, "kbit": 125, "kbps": 125,
    "mb/s": 1000**2, "mib/s": 1024**2, "mbit": 125_000, "mbps": 125_000,
    "gb/s": 1000**3, "gib/s": 1024**3, "gbit": 125_000_000, "gbps": 125_000_000,
}
_NUM_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z/]*)\s*$")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the expected form."""

    def __init__(self, key: str, expected: str, got: Any = dataclasses.MISSING) -> None:
        self.key = key
        msg = f"config key '{key}': expected {expected}"
        if got is not dataclasses.MISSING:
            msg += f", got {got!r}"
        super().__init__(msg)


def parse_size(value: Any, key: str) -> int:
    """Parse a byte size: an integer or a string like '256KiB', '10 GB'."""
    expected = "a byte size such as 262144, '256KiB' or '10GiB'"
    if isinstance(value, bool):
        raise ConfigError(key, expected, value)
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(key, expected + " (not negative)", value)
        return value
    if isinstance(value, str):
        m = _NUM_UNIT.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ConfigError(key, expected, value)


def parse_rate(value: Any, key: str) -> int:
    """Parse a rate in bytes/s: an integer or a string like '20Mbit', '5MB/s'; 0 = unlimited."""
    expected = "a rate such as 0 (unlimited), 2500000, '20Mbit' or '5MB/s'"
    if isinstance(value, bool):
        raise ConfigError(key, expected, value)
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(key, expected + " (not negative)", value)
        return value
    if isinstance(value, str):
        m = _NUM_UNIT.match(value)
        if m and m.group(2).lower() in _RATE_UNITS:
            return int(float(m.group(1)) * _RATE_UNITS[m.group(2).lower()])
    raise ConfigError(key, expected, value)


def _size(default: int, lo: int | None = None, hi: int | None = None) -> Any:
    return field(default=default, metadata={"kind": "size", "lo": lo, "hi": hi})


def _rate(default: int) -> Any:
    return field(default=default, metadata={"kind": "rate"})


def _num(default: float, lo: float, hi: float) -> Any:
    return field(default=default, metadata={"lo": lo, "hi": hi})


def default_data_dir() -> Path:
    """Per-user data directory (e.g. ~/.local/share/shoal); overridable by $SHOAL_DATA_DIR."""
    env = os.environ.get("SHOAL_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("shoal", appauthor=False))


def default_mesh() -> str:
    """The mesh ID: $SHOAL_MESH if set (test runs, demos), else the default mesh."""
    env = os.environ.get("SHOAL_MESH")
    if env is None:
        return DEFAULT_MESH
    if not MESH_RE.fullmatch(env):
        raise ConfigError("node.mesh", f"{MESH_FORM} (from $SHOAL_MESH)", env)
    return env


def _mesh() -> Any:
    return field(default_factory=default_mesh, metadata={"kind": "mesh"})


@dataclass(frozen=True)
class NodeConfig:
    """Who this device is and where it keeps its state."""

    name: str = field(default_factory=socket.gethostname)
    # Which mesh this agent belongs to: it discovers, dials and accepts sessions only from
    # agents of the same mesh (docs/protocol.md). Same default everywhere, so agents on one
    # LAN find each other unless told to keep apart.
    mesh: str = _mesh()
    data_dir: Path = field(default_factory=default_data_dir)
    control_socket: Path | None = None  # default: <data_dir>/control.sock
    shutdown_timeout: float = _num(5.0, 0.1, 120.0)

    @property
    def control_socket_path(self) -> Path:
        env = os.environ.get("SHOAL_CONTROL_SOCKET")
        return self.control_socket or (Path(env) if env else self.data_dir / "control.sock")


@dataclass(frozen=True)
class StoreConfig:
    """Content store: chunking and disk budget."""

    avg_chunk_size: int = _size(256 * 1024, 16 * 1024, 4 * 1024 * 1024)
    quota: int = _size(0)  # 0 = unlimited
    keep_versions: int = _num(5, 1, 1000)


@dataclass(frozen=True)
class LanConfig:
    """LAN link: TCP listener and mDNS discovery."""

    enabled: bool = True
    listen: str = "0.0.0.0"
    port: int = _num(47474, 0, 65535)  # 0 = pick a free port
    mdns: bool = True
    interfaces: tuple[str, ...] = ()  # empty = every suitable interface
    include_loopback: bool = False
    heartbeat_interval: float = _num(1.0, 0.05, 60.0)
    peer_timeout: float = _num(3.5, 0.2, 600.0)
    forget_after: float = _num(600.0, 1.0, 86400.0)  # s before an unseen stranger is pruned
    connect_timeout: float = _num(5.0, 0.1, 120.0)


@dataclass(frozen=True)
class TransferConfig:
    """Bulk transfer tuning."""

    max_sources: int = _num(4, 1, 64)
    initial_window: int = _num(4, 1, 256)
    max_window: int = _num(16, 1, 1024)
    request_timeout: float = _num(10.0, 0.5, 600.0)
    stall_timeout: float = _num(60.0, 1.0, 3600.0)  # wait this long for a lost source
    compress: bool = True


@dataclass(frozen=True)
class BandwidthConfig:
    """Link sharing: weights per traffic class and hard limits (bytes/s, 0 = unlimited)."""

    global_limit: int = _rate(0)
    per_peer_limit: int = _rate(0)
    demand_weight: int = _num(16, 1, 1000)
    mirror_weight: int = _num(4, 1, 1000)
    prefetch_weight: int = _num(1, 1, 1000)


@dataclass(frozen=True)
class PairingConfig:
    """Pairing window and limits."""

    window_seconds: float = _num(120.0, 5.0, 3600.0)
    max_pending: int = _num(4, 1, 64)


@dataclass(frozen=True)
class BleConfig:
    """BLE radio (off by default: needs a BlueZ adapter)."""

    enabled: bool = False
    adapter: str = "hci0"
    advertise: bool = True  # peripheral role: advertise, serve NodeInfo/catalog/Control
    scan: bool = True  # central role: scan, connect, authenticate, hand over
    resource_slots: int = _num(8, 0, 64)
    handover: bool = True  # move to the LAN link once a BLE session exists
    connect_timeout: float = _num(15.0, 1.0, 120.0)


@dataclass(frozen=True)
class AuthorityConfig:
    """Dynamic authority: Raft over paired members, reputation with hysteresis."""

    enabled: bool = True
    hysteresis: float = _num(0.15, 0.0, 10.0)  # a challenger must beat the incumbent by 15 %


@dataclass(frozen=True)
class Config:
    """The whole agent configuration. Every field has an embedded default."""

    node: NodeConfig = field(default_factory=NodeConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    lan: LanConfig = field(default_factory=LanConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    bandwidth: BandwidthConfig = field(default_factory=BandwidthConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    ble: BleConfig = field(default_factory=BleConfig)
    authority: AuthorityConfig = field(default_factory=AuthorityConfig)


def _convert(key: str, f: dataclasses.Field[Any], hint: Any, raw: Any) -> Any:
    meta = f.metadata
    kind = meta.get("kind")
    if kind == "size":
        value = parse_size(raw, key)
        lo, hi = meta.get("lo"), meta.get("hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(key, f"a byte size between {lo} and {hi}", raw)
        return value
    if kind == "rate":
        return parse_rate(raw, key)
    if kind == "mesh":
        if not isinstance(raw, str) or not MESH_RE.fullmatch(raw):
            raise ConfigError(key, MESH_FORM, raw)
        return raw
    text = str(hint)
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(key, "true or false", raw)
        return raw
    if hint is int or hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(key, f"a number between {meta['lo']} and {meta['hi']}", raw)
        if hint is int and not isinstance(raw, int):
            raise ConfigError(key, "a whole number", raw)
        if not meta["lo"] <= raw <= meta["hi"]:
            raise ConfigError(key, f"a number between {meta['lo']} and {meta['hi']}", raw)
        return hint(raw)
    if hint is str:
        if not isinstance(raw, str) or not raw or len(raw) > 255:
            raise ConfigError(key, "a non-empty string of at most 255 characters", raw)
        return raw
    if "Path" in text:
        if not isinstance(raw, str) or not raw:
            raise ConfigError(key, "a filesystem path string", raw)
        return Path(raw).expanduser()
    if "tuple" in text:
        if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
            raise ConfigError(key, "a list of strings", raw)
        return tuple(raw)
    raise ConfigError(key, f"a value of type {text}", raw)  # pragma: no cover


_T = TypeVar("_T", bound="DataclassInstance")


def _build(cls: type[_T], raw: dict[str, Any], prefix: str) -> _T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{prefix}{unknown[0]}", f"one of the known keys ({known})")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        f, hint = fields[name], hints[name]
        key = f"{prefix}{name}"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(key, f"a [{key}] table", value)
            kwargs[name] = _build(hint, value, key + ".")
        else:
            kwargs[name] = _convert(key, f, hint, value)
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a validated Config from a parsed TOML document (missing keys take defaults)."""
    return _build(Config, raw, "")


def load_config(path: Path | None) -> Config:
    """Load *path* (TOML) over the defaults; ``None`` means defaults only."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError("--config", f"a readable TOML file ({e.strerror})", str(path)) from e
    try:
        raw = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError("--config", f"valid TOML in {path} ({e})") from e
    return config_from_dict(raw)


def with_overrides(cfg: Config, **sections: dict[str, Any]) -> Config:
    """Return *cfg* with fields replaced per section, e.g. ``node={"data_dir": p}``."""
    changes = {
        name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()
    }
    return dataclasses.replace(cfg, **changes)


def render_defaults() -> str:
    """The documented default configuration as TOML text (for `shoal config defaults`)."""
    lines = ["# Shoal configuration: every key is optional; these are the defaults."]
    cfg = Config()
    for section in dataclasses.fields(Config):
        lines.append(f"\n[{section.name}]")
        sub = getattr(cfg, section.name)
        doc = (type(sub).__doc__ or "").strip().splitlines()[0]
        lines.append(f"# {doc}")
        for f in dataclasses.fields(sub):
            v = getattr(sub, f.name)
            if v is None:
                lines.append(f"# {f.name} = (unset)")
            elif isinstance(v, bool):
                lines.append(f"{f.name} = {'true' if v else 'false'}")
            elif isinstance(v, (int, float)):
                lines.append(f"{f.name} = {v}")
            elif isinstance(v, tuple):
                lines.append(f"{f.name} = [{', '.join(repr(x) for x in v)}]")
            else:
                lines.append(f'{f.name} = "{v}"')
    return "\n".join(lines) + "\n"
