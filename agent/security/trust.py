"""Trust store: the devices this one has paired with, their names and roles.

Kept as one small JSON file written atomically; read fully at start (it holds tens of
entries, not thousands). Strictly parsed: a damaged file is an error, never a silent reset,
because silently forgetting trust would be a security surprise.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.errors import ErrorKind, ShoalError
from agent.fsutil import atomic_write_bytes
from agent.security.identity import format_device_id, parse_device_id

ROLES = ("member", "guest")
"""member: full access (fetch anything, mirror, vote); guest: may fetch, never serves policy."""

TRUST_FILE = "trust.json"
MAX_DEVICES = 1024


class TrustError(ShoalError):
    """The trust store file is damaged or a request names an unknown device."""

    kind = ErrorKind.NOT_FOUND


@dataclass(frozen=True)
class TrustedDevice:
    device_id: str  # 64 hex chars
    public_key: str  # 64 hex chars (raw X25519)
    name: str
    role: str
    paired_at: float

    @property
    def display_id(self) -> str:
        return format_device_id(bytes.fromhex(self.device_id))


def _validate(entry: object) -> TrustedDevice:
    if not isinstance(entry, dict) or set(entry) != {
        "device_id", "public_key", "name", "role", "paired_at"
    }:
        raise TrustError("trust store entry has the wrong keys")
    d = TrustedDevice(**entry)
    for hexfield in (d.device_id, d.public_key):
        if not isinstance(hexfield, str) or len(hexfield) != 64:
            raise TrustError("trust store entry has a malformed key or ID")
        bytes.fromhex(hexfield)
    if not isinstance(d.name, str) or not 0 < len(d.name) <= 64:
        raise TrustError("trust store entry has a malformed name")
    if d.role not in ROLES:
        raise TrustError(f"trust store entry has unknown role {d.role!r}")
    if not isinstance(d.paired_at, (int, float)):
        raise TrustError("trust store entry has a malformed time")
    return d


class TrustStore:
    """Paired devices keyed by device ID (hex). Thread-safe; every change is persisted."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / TRUST_FILE
        self._lock = threading.Lock()
        self._devices: dict[str, TrustedDevice] = {}
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_bytes())
            except (OSError, ValueError) as e:
                raise TrustError(f"trust store {self.path} is unreadable: {e}") from e
            if not isinstance(doc, dict) or doc.get("version") != 1:
                raise TrustError(f"trust store {self.path}: unknown format")
            devices = doc.get("devices")
            if not isinstance(devices, list) or len(devices) > MAX_DEVICES:
                raise TrustError(f"trust store {self.path}: malformed device list")
            for raw in devices:
                d = _validate(raw)
                self._devices[d.device_id] = d

    def _save(self) -> None:
        doc = {"version": 1, "devices": [asdict(d) for d in self._devices.values()]}
        atomic_write_bytes(self.path, json.dumps(doc, indent=1).encode(), mode=0o600)

    def is_trusted(self, device_id: bytes) -> bool:
        return device_id.hex() in self._devices

    def get(self, device_id: bytes) -> TrustedDevice | None:
        return self._devices.get(device_id.hex())

    def list(self) -> list[TrustedDevice]:
        return sorted(self._devices.values(), key=lambda d: d.name)

    def add(self, device_id: bytes, public_key: bytes, name: str, role: str = "member") -> None:
        if role not in ROLES:
            raise TrustError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        clean = "".join(c for c in name if c.isprintable())[:64] or "unnamed"
        with self._lock:
            if len(self._devices) >= MAX_DEVICES and device_id.hex() not in self._devices:
                raise TrustError(f"trust store is full ({MAX_DEVICES} devices)")
            self._devices[device_id.hex()] = TrustedDevice(
                device_id.hex(), public_key.hex(), clean, role, time.time()
            )
            self._save()

    def resolve(self, text: str) -> TrustedDevice:
        """Find a paired device by name, full display ID, short ID prefix or hex ID."""
        t = text.strip()
        matches = [d for d in self._devices.values() if d.name == t or d.device_id == t.lower()]
        if not matches:
            try:
                prefix = parse_device_id(t).hex()
                matches = [d for d in self._devices.values() if d.device_id.startswith(prefix)]
            except ValueError:
                up = t.upper()
                if len(up.replace("-", "")) >= 4:
                    matches = [d for d in self._devices.values() if d.display_id.startswith(up)]
        if not matches:
            raise TrustError(f"no paired device matches {text!r} (see: shoal trust list)")
        if len(matches) > 1:
            raise TrustError(f"{text!r} matches {len(matches)} paired devices; use the full ID")
        return matches[0]

    def remove(self, device_id_hex: str) -> bool:
        with self._lock:
            if self._devices.pop(device_id_hex, None) is None:
                return False
            self._save()
            return True
