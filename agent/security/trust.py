"""Trust store: the devices this one has paired with, their names and roles.

Kept as one small JSON file written atomically; read fully at start (it holds tens of
entries, not thousands). Strictly parsed: a damaged file is an error, never a silent reset,
because silently forgetting trust would be a security surprise.

Format version 2 adds each device's Ed25519 ``signing_key`` (hex, or null for a device
paired before signing keys existed, whose ``device_id`` is still its v1 ID). Version 1 files
load unchanged. When such a device connects again presenting a v2 ID, the Noise handshake
has proved it holds the X25519 key we paired with, and its v2 ID commits to that same key:
:meth:`TrustStore.recognise` moves the entry to the v2 ID and records the signing key.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.errors import ErrorKind, ShoalError
from agent.fsutil import atomic_write_bytes
from agent.security.identity import (
    device_id_for,
    format_device_id,
    legacy_device_id,
    parse_device_id,
)

ROLES = ("member", "guest")
"""member: full access (fetch anything, mirror, vote); guest: may fetch, never serves policy."""

TRUST_FILE = "trust.json"
FORMAT = 2
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
    signing_key: str | None = None  # 64 hex chars (raw Ed25519); None: paired before v2

    @property
    def display_id(self) -> str:
        return format_device_id(bytes.fromhex(self.device_id))


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _entry_label(index: int, entry: object) -> str:
    """How an entry is named in an error: its position and, if it has a usable one, its ID
    (the file is hostile too: only lower-case hex is echoed, never raw text)."""
    dev = entry.get("device_id") if isinstance(entry, dict) else None
    shown = dev[:16] if isinstance(dev, str) and re.fullmatch(r"[0-9a-fA-F]{1,64}", dev) else "?"
    return f"entry {index + 1} (device_id {shown})"


def _validate(entry: object) -> TrustedDevice:
    """One device entry, strictly: exact keys, 64 lower-case hex digits for the ID and the
    keys, the ID equal to what the keys derive, a short printable name, a known role and a
    finite time. TrustError with a short reason otherwise (the caller adds file and entry)."""
    base = {"device_id", "public_key", "name", "role", "paired_at"}
    if not isinstance(entry, dict) or set(entry) not in (base, base | {"signing_key"}):
        raise TrustError("has the wrong keys")
    for key in ("device_id", "public_key", "signing_key"):
        value = entry.get(key)
        if key == "signing_key" and value is None:
            continue
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            raise TrustError(f"{key} is not 64 lower-case hex digits")
    d = TrustedDevice(**entry)
    signing = bytes.fromhex(d.signing_key) if d.signing_key else None
    if device_id_for(bytes.fromhex(d.public_key), signing).hex() != d.device_id:
        raise TrustError("its keys do not match its device_id")
    if not isinstance(d.name, str) or not 0 < len(d.name) <= 64:
        raise TrustError("has a malformed name")
    if d.role not in ROLES:
        raise TrustError("has an unknown role")
    if (not isinstance(d.paired_at, (int, float)) or isinstance(d.paired_at, bool)
            or not math.isfinite(d.paired_at)):
        raise TrustError("has a malformed paired_at time")
    return d


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


class TrustStore:
    """Paired devices keyed by device ID (hex). Thread-safe; every change is persisted."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / TRUST_FILE
        self._lock = threading.Lock()
        self._devices: dict[str, TrustedDevice] = {}
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_bytes(), parse_constant=_no_constant)
            except (OSError, ValueError) as e:
                raise TrustError(f"trust store {self.path} is unreadable: {e}") from e
            if not isinstance(doc, dict) or doc.get("version") not in (1, FORMAT):
                raise TrustError(f"trust store {self.path}: unknown format")
            devices = doc.get("devices")
            if not isinstance(devices, list) or len(devices) > MAX_DEVICES:
                raise TrustError(f"trust store {self.path}: malformed device list")
            for i, raw in enumerate(devices):
                try:
                    d = _validate(raw)
                except TrustError as e:
                    raise TrustError(f"trust store {self.path}: {_entry_label(i, raw)} {e}; "
                                     "fix or remove that entry (or the file, then pair "
                                     "again)") from None
                self._devices[d.device_id] = d

    def _save(self) -> None:
        doc = {"version": FORMAT, "devices": [asdict(d) for d in self._devices.values()]}
        atomic_write_bytes(self.path, json.dumps(doc, indent=1).encode(), mode=0o600)

    def is_trusted(self, device_id: bytes) -> bool:
        return device_id.hex() in self._devices

    def get(self, device_id: bytes) -> TrustedDevice | None:
        return self._devices.get(device_id.hex())

    def list(self) -> list[TrustedDevice]:
        return sorted(self._devices.values(), key=lambda d: d.name)

    def add(self, device_id: bytes, public_key: bytes, name: str, role: str = "member",
            signing_key: bytes | None = None) -> None:
        """Trust a device. *device_id* must be what its keys derive (v2 with *signing_key*,
        else v1), so an entry can never name keys that are not the device's."""
        if role not in ROLES:
            raise TrustError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if device_id_for(public_key, signing_key) != device_id:
            raise TrustError("the device ID does not match the device's keys")
        clean = "".join(c for c in name if c.isprintable())[:64] or "unnamed"
        with self._lock:
            if len(self._devices) >= MAX_DEVICES and device_id.hex() not in self._devices:
                raise TrustError(f"trust store is full ({MAX_DEVICES} devices)")
            self._devices[device_id.hex()] = TrustedDevice(
                device_id.hex(), public_key.hex(), clean, role, time.time(),
                signing_key.hex() if signing_key is not None else None,
            )
            self._save()

    def recognise(self, device_id: bytes, public_key: bytes,
                  signing_key: bytes | None) -> bool:
        """Is the device that just authenticated with X25519 *public_key* trusted?

        Call with the keys the session proved (Noise) and announced (hello). A device
        paired under its v1 ID (before it had a signing key) that now presents a v2 ID for
        the same X25519 key is the same device: its entry moves to the v2 ID, keeping name,
        role and pairing time. Never the other way: a v2 entry is not downgraded.
        """
        if device_id.hex() in self._devices:
            return True
        if signing_key is None or device_id_for(public_key, signing_key) != device_id:
            return False
        old_id = legacy_device_id(public_key).hex()
        with self._lock:
            old = self._devices.get(old_id)
            if old is None or old.signing_key is not None or old.public_key != public_key.hex():
                return False
            del self._devices[old_id]
            self._devices[device_id.hex()] = TrustedDevice(
                device_id.hex(), old.public_key, old.name, old.role, old.paired_at,
                signing_key.hex())
            self._save()
        return True

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
