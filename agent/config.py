"""Typed configuration: one object, loaded from TOML over embedded defaults.

Why one object: every subsystem receives the slice it needs from the node, so there is no
hidden global state, and a bad value fails at start-up with a message that names the key and
the expected form instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
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
        # a command-line option (``--port``) is not a key of the config file
        msg = f"{'option' if key.startswith('-') else 'config key'} '{key}': expected {expected}"
        if got is not dataclasses.MISSING:
            msg += f", got {got!r}"
        super().__init__(msg)


class ConfigFileError(ConfigError):
    """The config file itself cannot be read or parsed (no key is at fault yet)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.key = "--config"
        ValueError.__init__(self, f"config file '{path}': {problem}")


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


def _kind(kind: str, default: Any) -> Any:
    """A field whose form is checked by :func:`_convert` (an address, a name...)."""
    return field(default=default, metadata={"kind": kind})


ADDRESS_FORM = "an IPv4 or IPv6 address such as 0.0.0.0 (every interface), 127.0.0.1 or ::1"
NAME_MAX = 64  # what the hello and pair_request carry (agent/peer/hello.py)
NAME_FORM = f"1-{NAME_MAX} printable characters (no control or format characters)"
IFNAME_FORM = ("a list of strings, interface names or patterns such as [\"eth0\", \"wg*\"] "
               "(1-15 characters each, no spaces or '/')")
ADAPTER_FORM = "a BlueZ adapter name such as \"hci0\""
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.:@*?\[\]-]{1,15}")
_ADAPTER_RE = re.compile(r"hci[0-9]{1,3}")


def check_address(value: object, key: str) -> str:
    """An IP address literal to listen on (host names are not resolved at start-up)."""
    if isinstance(value, str) and 0 < len(value) <= 64:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
    raise ConfigError(key, ADDRESS_FORM, value)


def check_name(value: object, key: str) -> str:
    """A device name: shown on other devices' screens, so printable and short."""
    if (not isinstance(value, str) or not 0 < len(value) <= NAME_MAX or value.strip() != value
            or not value.isprintable()):
        raise ConfigError(key, NAME_FORM, value)
    return value


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

    name: str = field(default_factory=socket.gethostname, metadata={"kind": "name"})
    # Which mesh this agent belongs to: it discovers, dials and accepts sessions only from
    # agents of the same mesh (docs/protocol.md). Same default everywhere, so agents on one
    # LAN find each other unless told to keep apart.
    mesh: str = _mesh()
    data_dir: Path = field(default_factory=default_data_dir)
    control_socket: Path | None = None  # default: <data_dir>/control.sock
    shutdown_timeout: float = _num(5.0, 0.1, 120.0)

    def __post_init__(self) -> None:
        if self.control_socket is not None and len(bytes(self.control_socket)) > 107:
            raise ConfigError("node.control_socket", "a path of at most 107 bytes (a Unix "
                              "socket limit)", str(self.control_socket))

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
    listen: str = _kind("address", "0.0.0.0")  # an IP literal; 0.0.0.0 = every interface
    port: int = _num(47474, 0, 65535)  # 0 = pick a free port
    mdns: bool = True
    interfaces: tuple[str, ...] = _kind("ifnames", ())  # empty = every suitable interface
    include_loopback: bool = False
    heartbeat_interval: float = _num(1.0, 0.05, 60.0)
    peer_timeout: float = _num(3.5, 0.2, 600.0)
    forget_after: float = _num(600.0, 1.0, 86400.0)  # s before an unseen stranger is pruned
    connect_timeout: float = _num(5.0, 0.1, 120.0)

    def __post_init__(self) -> None:
        if self.peer_timeout <= self.heartbeat_interval:
            raise ConfigError("lan.peer_timeout", "more seconds than lan.heartbeat_interval "
                              f"({self.heartbeat_interval}), or every peer times out",
                              self.peer_timeout)


@dataclass(frozen=True)
class TransferConfig:
    """Bulk transfer tuning."""

    max_sources: int = _num(4, 1, 64)
    initial_window: int = _num(4, 1, 256)
    max_window: int = _num(16, 1, 1024)
    request_timeout: float = _num(10.0, 0.5, 600.0)
    stall_timeout: float = _num(60.0, 1.0, 3600.0)  # wait this long for a lost source
    compress: bool = True
    # a held copy found to be the newest is served without asking holders again for this
    # long (0: ask on every fetch); an announced newer version ends it at once
    fresh_for: float = _num(30.0, 0.0, 86400.0)

    def __post_init__(self) -> None:
        if self.initial_window > self.max_window:
            raise ConfigError("transfer.initial_window", "at most transfer.max_window "
                              f"({self.max_window})", self.initial_window)


@dataclass(frozen=True)
class BandwidthConfig:
    """Link sharing: weights per traffic class and hard limits (bytes/s, 0 = unlimited)."""

    global_limit: int = _rate(0)
    per_peer_limit: int = _rate(0)
    demand_weight: int = _num(16, 1, 1000)
    relay_weight: int = _num(8, 1, 1000)  # bytes forwarded for others (agent/relay/)
    mirror_weight: int = _num(4, 1, 1000)
    prefetch_weight: int = _num(1, 1, 1000)


@dataclass(frozen=True)
class RelayConfig:
    """Multi-hop reach (agent/relay/): circuits through paired intermediates."""

    forward: bool = True  # carry circuits for others (as an intermediate)
    paired_only: bool = True  # forward only between paired neighbours on both sides
    max_relays: int = _num(3, 1, 3)  # relays a circuit this device opens may cross
    max_circuits: int = _num(32, 1, 1024)  # circuits held at once (forwarded + own)
    max_per_peer: int = _num(8, 1, 1024)  # circuits one neighbour may have opened here
    idle_timeout: float = _num(120.0, 1.0, 86400.0)  # s without a frame before a close
    open_timeout: float = _num(10.0, 0.5, 120.0)  # s to open a circuit and its handshake


@dataclass(frozen=True)
class PairingConfig:
    """Pairing window and limits."""

    window_seconds: float = _num(120.0, 5.0, 3600.0)
    max_pending: int = _num(4, 1, 64)


@dataclass(frozen=True)
class BleConfig:
    """BLE radio (off by default: needs a BlueZ adapter)."""

    enabled: bool = False
    adapter: str = _kind("adapter", "hci0")
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
class UsageConfig:
    """Access log: what this device saw (requesters as keyed hashes), bounded and local."""

    enabled: bool = True
    max_bytes: int = _size(4 * 1024 * 1024, 64 * 1024, 1024**3)
    max_age: float = _num(7 * 86400.0, 60.0, 366 * 86400.0)  # seconds
    segment_bytes: int = _size(256 * 1024, 4 * 1024, 64 * 1024 * 1024)
    flush_interval: float = _num(2.0, 0.05, 600.0)  # seconds between writes of the buffer
    max_buffered: int = _num(4096, 16, 1_000_000)  # records; more are dropped and counted
    key_rotation: float = _num(86400.0, 60.0, 366 * 86400.0)  # requester key epoch, seconds
    half_life: float = _num(3600.0, 1.0, 365 * 86400.0)  # resource temperature, seconds

    def __post_init__(self) -> None:
        if self.segment_bytes > self.max_bytes:
            raise ConfigError("usage.segment_bytes", "at most usage.max_bytes",
                              self.segment_bytes)
        if self.max_age < 2 * self.key_rotation:
            raise ConfigError("usage.max_age", "at least twice usage.key_rotation (a "
                              "period is shared once it is complete)", self.max_age)


@dataclass(frozen=True)
class PredictConfig:
    """Prediction: sharing usage aggregates with paired devices (docs/privacy.md)."""

    share: bool = True  # false: nothing about usage leaves this device
    share_interval: float = _num(600.0, 0.2, 86400.0)  # seconds, +- share_jitter
    share_jitter: float = _num(0.2, 0.0, 0.9)  # fraction of the interval
    share_k: int = _num(3, 1, 10_000)  # an n-gram needs >= k distinct requesters
    share_epsilon: float = _num(0.0, 0.0, 10.0)  # > 0: differential privacy per period
    share_delta: float = _num(1e-6, 1e-12, 0.01)
    share_max_grams: int = _num(4, 1, 4096)  # per requester per period (DP bound m)
    share_top_n: int = _num(8, 1, 256)  # next resources kept per context
    share_max_entries: int = _num(2048, 16, 4096)  # n-grams per aggregate
    prefetch_base: int = _size(1024 * 1024)  # budget of a cold resource
    prefetch_max: int = _size(64 * 1024 * 1024)  # approached by the hottest
    prefetch_hot: float = _num(8.0, 0.001, 1e9)  # temperature that gets half the extra
    # the model lifecycle (docs/prediction-lifecycle.md)
    train: bool = True  # false: this device never trains (it still runs received models)
    model_interval: float = _num(300.0, 0.2, 86400.0)  # seconds between lifecycle rounds
    train_min_interval: float = _num(6 * 3600.0, 1.0, 30 * 86400.0)  # between runs
    train_max_age: float = _num(86400.0, 1.0, 90 * 86400.0)  # retrain a model this old
    train_drift: float = _num(0.1, 0.0, 1.0)  # JS divergence (bits) that triggers a run
    train_budget: float = _num(120.0, 0.0, 86400.0)  # CPU-seconds per rolling day
    train_epochs: int = _num(8, 1, 64)
    train_memory: int = _size(256 * 1024 * 1024, 64 * 1024 * 1024, 8 * 1024**3)  # RLIMIT_AS
    model_max_bytes: int = _size(1024 * 1024, 1024, 1024 * 1024)  # larger models refused

    def __post_init__(self) -> None:
        if self.prefetch_max < self.prefetch_base:
            raise ConfigError("predict.prefetch_max", "at least predict.prefetch_base",
                              self.prefetch_max)
        if self.train_max_age < self.train_min_interval:
            raise ConfigError("predict.train_max_age", "at least predict.train_min_interval",
                              self.train_max_age)


@dataclass(frozen=True)
class PrefetchConfig:
    """Prefetch and mirrors: act on predictions (docs/architecture.md, "Prefetch and mirrors")."""

    enabled: bool = True  # the one switch: false = no prefetch, no mirrors asked or hosted
    interval: float = _num(10.0, 0.1, 3600.0)  # seconds between planning rounds
    depth: int = _num(4, 1, 16)  # predictions considered per round
    # a prediction below this is not acted on: the default predictor's scores are chances of
    # use, and 0.25 is where its offline curve keeps precision >= 0.55 (docs/benchmarks.md)
    min_score: float = _num(0.25, 0.0, 1.0)
    device_budget: int = _size(256 * 1024 * 1024, 0, 1024**4)  # prefetched copies kept here
    reserve: int = _size(64 * 1024 * 1024, 0, 1024**4)  # store space never used by prefetch
    max_seconds: float = _num(120.0, 1.0, 86400.0)  # skip what the link cannot bring sooner
    max_pending: int = _num(2, 1, 16)  # prefetch fetches running at once
    active_window: float = _num(3600.0, 1.0, 30 * 86400.0)  # idle longer: act on nothing
    mirrors: bool = True  # ask paired devices to mirror, and mirror for them
    mirror_temperature: float = _num(2.0, 0.0, 1e9)  # create a mirror at this temperature
    mirror_keep: float = _num(0.5, 0.0, 1e9)  # below it for cold_after: discard
    mirror_cold_after: float = _num(600.0, 0.0, 30 * 86400.0)  # seconds
    mirror_dwell: float = _num(300.0, 0.0, 30 * 86400.0)  # a mirror stays at least this long
    mirror_margin: float = _num(0.25, 0.0, 10.0)  # a move needs a score this much better
    max_mirrors: int = _num(8, 0, 256)  # mirrors this device uses at once
    host_budget: int = _size(512 * 1024 * 1024, 0, 1024**4)  # bytes mirrored for others
    host_max: int = _num(32, 0, 1024)  # mirrors this device hosts
    lease: float = _num(900.0, 1.0, 7 * 86400.0)  # a hosted mirror not renewed is dropped
    sync_interval: float = _num(300.0, 0.1, 86400.0)  # mirrors check for a new version

    def __post_init__(self) -> None:
        if self.mirror_keep > self.mirror_temperature:
            raise ConfigError("prefetch.mirror_keep", "at most prefetch.mirror_temperature",
                              self.mirror_keep)


@dataclass(frozen=True)
class WatchConfig:
    """Watched publishes (`shoal publish PATH --watch`): when a change becomes a version."""

    enabled: bool = True
    quiet: float = _num(2.0, 0.01, 3600.0)  # seconds without a change before publishing
    min_interval: float = _num(10.0, 0.0, 86400.0)  # at most one version per this many s
    max_watched: int = _num(32, 1, 1024)  # paths watched at once (files or folders)
    max_dirs: int = _num(4096, 1, 65536)  # inotify watches (directories) in all


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics over HTTP (off by default; needs the `metrics` extra)."""

    enabled: bool = False
    listen: str = _kind("address", "127.0.0.1")  # loopback: scraped by a local Prometheus
    port: int = _num(9474, 0, 65535)


@dataclass(frozen=True)
class DashboardConfig:
    """The local web dashboard (agent/dashboard; `shoal dashboard` prints its URL)."""

    enabled: bool = True
    listen: str = _kind("address", "127.0.0.1")  # loopback: never on the LAN unless asked
    port: int = _num(47480, 0, 65535)  # 0: any free port (`shoal dashboard` knows which)
    interval: float = _num(1.0, 0.2, 60.0)  # live view: at most one update per this many s
    max_upload: int = _size(1 << 30, 0, 1 << 40)  # bytes one uploaded file may have
    max_streams: int = _num(8, 1, 64)  # live views (SSE streams) open at once


@dataclass(frozen=True)
class DhtConfig:
    """The DHT over paired sessions (agent/dht/service.py, docs/dht.md)."""

    enabled: bool = True  # false: no DHT traffic; fetches ask the neighbours only
    # a fetch looks holders up in the DHT first when more than this many sessions are live
    # (asking every neighbour costs 2 messages each; measured in docs/dht.md, "Threshold")
    threshold: int = _num(12, 0, 100_000)
    # a lookup stops at the first reply with this many holders: a storing device returns
    # every record it has for the key, so 1 already brings all of them but in rare cases
    want: int = _num(1, 1, 20)
    request_timeout: float = _num(2.0, 0.1, 60.0)  # one DHT request (a timeout = no answer)
    lookup_timeout: float = _num(10.0, 0.5, 600.0)  # one whole lookup
    refresh: float = _num(600.0, 1.0, 86400.0)  # a bucket no lookup touched this long
    republish: float = _num(79200.0, 10.0, 86400.0)  # holders announce again this often (22 h)
    tick: float = _num(30.0, 0.05, 3600.0)  # how often timers are checked


@dataclass(frozen=True)
class Config:
    """The whole agent configuration. Every field has an embedded default."""

    node: NodeConfig = field(default_factory=NodeConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    lan: LanConfig = field(default_factory=LanConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    bandwidth: BandwidthConfig = field(default_factory=BandwidthConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    ble: BleConfig = field(default_factory=BleConfig)
    authority: AuthorityConfig = field(default_factory=AuthorityConfig)
    usage: UsageConfig = field(default_factory=UsageConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    prefetch: PrefetchConfig = field(default_factory=PrefetchConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dht: DhtConfig = field(default_factory=DhtConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)


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
    if kind == "address":
        return check_address(raw, key)
    if kind == "name":
        return check_name(raw, key)
    if kind == "ifnames":
        if not isinstance(raw, list | tuple) or not all(
                isinstance(x, str) and _IFNAME_RE.fullmatch(x) for x in raw):
            raise ConfigError(key, IFNAME_FORM, raw)
        return tuple(raw)
    if kind == "adapter":
        if not isinstance(raw, str) or not _ADAPTER_RE.fullmatch(raw):
            raise ConfigError(key, ADAPTER_FORM, raw)
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
        if not math.isfinite(raw) or not meta["lo"] <= raw <= meta["hi"]:
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
        raise ConfigFileError(path, f"cannot read it ({e.strerror})") from e
    try:
        raw = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigFileError(path, f"not valid TOML ({e})") from e
    return config_from_dict(raw)


def with_overrides(cfg: Config, **sections: dict[str, Any]) -> Config:
    """Return *cfg* with fields replaced per section, e.g. ``node={"data_dir": p}``.

    Each value is checked exactly as the same key in a file would be (command-line flags
    come here), so ``--listen not-an-ip`` fails here, with the key named, not at start-up.
    """
    changes = {}
    for name, values in sections.items():
        current = getattr(cfg, name)
        hints = get_type_hints(type(current))
        fields = {f.name: f for f in dataclasses.fields(current)}
        checked = {}
        for k, v in values.items():
            raw = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            checked[k] = _convert(f"{name}.{k}", fields[k], hints[k], raw)
        changes[name] = dataclasses.replace(current, **checked)
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
