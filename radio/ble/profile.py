"""The Shoal GATT profile: UUIDs, advertisement payload, NodeInfo, resource entries, paging.

Why the sizes are what they are (see docs/ble-profile.md for the full byte tables):

* Every readable value is at most :data:`MAX_READ_VALUE` = 21 bytes: strictly shorter than one
  full Read Response (``MTU - 1`` = 22) at the minimum MTU of 23. A full response makes the
  central continue with Read Blob, and bless ignores the offset, so the value would come back
  corrupted; a value shorter than one response at *any* MTU makes long reads impossible.
* The advertisement carries only a 128-bit Service Data AD (no UUID list): flags (3) + service
  data header (18) leave 10 bytes in a legacy 31-byte advertisement; we use 8.
* Anything bigger (catalog pages, handover data) travels as framed messages over Control
  (write with response) and Events (notify); see :mod:`radio.ble.framing`.

All integers are little-endian, as in the rest of Bluetooth. Decoders validate strictly and
raise :class:`ProfileError`; encoders clamp the numeric fields whose meaning survives clamping
(size, version, temperature, reputation) and reject everything else.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from radio.base import SAFE_READ_VALUE_MAX, ServiceSpec

__all__ = [
    "ADVERT_PAYLOAD_SIZE",
    "BASE_UUID",
    "BLE_PROFILE_VERSION",
    "CONTROL_UUID",
    "DEFAULT_RESOURCE_SLOTS",
    "ENTRY_SIZE",
    "EVENTS_UUID",
    "MAX_READ_VALUE",
    "MAX_RESOURCE_SLOTS",
    "NODEINFO_SIZE",
    "NODEINFO_UUID",
    "SERVICE_UUID",
    "Advert",
    "CatalogPage",
    "CatalogPageRequest",
    "ControlError",
    "NodeInfo",
    "ProfileError",
    "ResourceEntry",
    "attribute_uuid",
    "decode_advert",
    "decode_control",
    "decode_slot",
    "encode_control",
    "page_entries_for",
    "resource_slot_uuid",
    "serve_page",
    "shoal_service_spec",
]


class ProfileError(ValueError):
    """A profile value is malformed (decoding) or cannot be represented (encoding)."""


BLE_PROFILE_VERSION = 1

# --- UUIDs -------------------------------------------------------------------------------------
# One random v4 UUID (generated once, frozen forever). Every Shoal attribute UUID is this base
# with bytes 2..3 (the low 16 bits of the first group) replaced by an attribute index, the way
# the Nordic UART service numbers its characteristics. The version and variant bits are not in
# that field, so every derived UUID is still a well-formed v4 UUID.
BASE_UUID = uuid.UUID("d4317022-7190-47eb-9a81-9262a3d82547")
_INDEX_SHIFT = 96
_INDEX_MASK = 0xFFFF << _INDEX_SHIFT

INDEX_SERVICE = 0x0000
INDEX_NODEINFO = 0x0001
INDEX_CONTROL = 0x0002
INDEX_EVENTS = 0x0003
INDEX_RESOURCE_BASE = 0x0100  # slot k -> 0x0100 + k, k in 0..255
MAX_RESOURCE_SLOTS = 256
DEFAULT_RESOURCE_SLOTS = 8  # each slot costs 2 GATT handles and discovery time


def attribute_uuid(index: int) -> str:
    """UUID string for attribute ``index`` (lower-case, the form bleak and bless compare)."""
    if not 0 <= index <= 0xFFFF:
        raise ProfileError(f"attribute index {index} does not fit 16 bits")
    return str(uuid.UUID(int=(BASE_UUID.int & ~_INDEX_MASK) | (index << _INDEX_SHIFT)))


def resource_slot_uuid(slot: int) -> str:
    """UUID of resource entry characteristic ``slot`` (0-based)."""
    if not 0 <= slot < MAX_RESOURCE_SLOTS:
        raise ProfileError(f"resource slot {slot} outside 0..{MAX_RESOURCE_SLOTS - 1}")
    return attribute_uuid(INDEX_RESOURCE_BASE + slot)


SERVICE_UUID = attribute_uuid(INDEX_SERVICE)  # d4310000-7190-47eb-9a81-9262a3d82547
NODEINFO_UUID = attribute_uuid(INDEX_NODEINFO)  # d4310001-...
CONTROL_UUID = attribute_uuid(INDEX_CONTROL)  # d4310002-...
EVENTS_UUID = attribute_uuid(INDEX_EVENTS)  # d4310003-...


def shoal_service_spec(resource_slots: int = DEFAULT_RESOURCE_SLOTS) -> ServiceSpec:
    """The Shoal service layout with ``resource_slots`` resource entry characteristics."""
    if not 0 <= resource_slots <= MAX_RESOURCE_SLOTS:
        raise ProfileError(f"resource_slots must be 0..{MAX_RESOURCE_SLOTS}")
    readable = (NODEINFO_UUID, *(resource_slot_uuid(i) for i in range(resource_slots)))
    return ServiceSpec(SERVICE_UUID, readable, CONTROL_UUID, EVENTS_UUID)


# --- size limits --------------------------------------------------------------------------------
MAX_READ_VALUE = SAFE_READ_VALUE_MAX  # 21, see radio.base
LEGACY_ADV_MAX = 31
_ADV_OVERHEAD = 3 + 2 + 16  # Flags AD + (length, type, 128-bit UUID) of the Service Data AD
ADV_DATA_BUDGET = LEGACY_ADV_MAX - _ADV_OVERHEAD  # 10 bytes of service data at most

NODE_TAG_SIZE = 6
DEVICE_ID_SIZE = 8
RESOURCE_PREFIX_SIZE = 8


def _u(value: int, bits: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise ProfileError(f"{name}={value!r} does not fit u{bits}")
    return value


def _clamp(value: int, bits: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProfileError(f"{name}={value!r} is not an integer")
    return max(0, min(value, (1 << bits) - 1))


def _fixed_bytes(value: bytes, size: int, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) != size:
        raise ProfileError(f"{name} must be exactly {size} bytes")
    return bytes(value)


# --- advertisement ------------------------------------------------------------------------------
_ADV = struct.Struct("<BB6s")
ADVERT_PAYLOAD_SIZE = _ADV.size  # 8


@dataclass(frozen=True, slots=True)
class Advert:
    """Service data of the Shoal advertisement.

    ``node_tag`` is a short *rotating* tag chosen by the agent (e.g. a keyed hash of the device
    key and the current epoch) so a passive observer cannot track the device across rotations,
    while paired peers can recognise it. The radio layer treats it as opaque bytes.
    """

    protocol_version: int
    node_tag: bytes
    flags: int = 0

    def encode(self) -> bytes:
        return _ADV.pack(
            _u(self.protocol_version, 8, "protocol_version"),
            _u(self.flags, 8, "flags"),
            _fixed_bytes(self.node_tag, NODE_TAG_SIZE, "node_tag"),
        )


def decode_advert(data: bytes) -> Advert:
    """Parse service data. Later versions may append up to 2 bytes; the first 8 are frozen."""
    if not ADVERT_PAYLOAD_SIZE <= len(data) <= ADV_DATA_BUDGET:
        raise ProfileError(f"advert service data of {len(data)} bytes")
    version, flags, tag = _ADV.unpack_from(data)
    if version == 0:
        raise ProfileError("protocol version 0 is invalid")
    if version == BLE_PROFILE_VERSION and len(data) != ADVERT_PAYLOAD_SIZE:
        raise ProfileError("v1 advert must be exactly 8 bytes")
    return Advert(version, tag, flags)


# --- NodeInfo -------------------------------------------------------------------------------------
_NODEINFO = struct.Struct("<BB8sHIHBB")
NODEINFO_SIZE = _NODEINFO.size  # 20
NODEINFO_FORMAT = 1

FLAG_LAN = 0x01  # a LAN port is open for the fast link
FLAG_WIFI_DIRECT = 0x02  # can hand over to a Wi-Fi Direct group
FLAG_CATALOG_PAGING = 0x04  # serves CatalogPageRequest on Control


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Small, always-readable summary of a node (20 bytes).

    ``populated_slots`` tells a central how many resource slot characteristics (from slot 0) hold
    entries, so it reads only those; ``catalog_count`` may be larger, the rest is paged.
    """

    device_id: bytes
    flags: int = 0
    catalog_count: int = 0
    catalog_generation: int = 0
    lan_port: int = 0
    populated_slots: int = 0

    def encode(self) -> bytes:
        data = _NODEINFO.pack(
            NODEINFO_FORMAT,
            _u(self.flags, 8, "flags"),
            _fixed_bytes(self.device_id, DEVICE_ID_SIZE, "device_id"),
            _clamp(self.catalog_count, 16, "catalog_count"),
            _u(self.catalog_generation, 32, "catalog_generation"),
            _u(self.lan_port, 16, "lan_port"),
            _u(self.populated_slots, 8, "populated_slots"),
            0,
        )
        assert len(data) <= MAX_READ_VALUE
        return data

    @classmethod
    def decode(cls, data: bytes) -> NodeInfo:
        if len(data) != NODEINFO_SIZE:
            raise ProfileError(f"NodeInfo must be {NODEINFO_SIZE} bytes, got {len(data)}")
        fmt, flags, dev, count, gen, port, slots, reserved = _NODEINFO.unpack(data)
        if fmt != NODEINFO_FORMAT:
            raise ProfileError(f"unknown NodeInfo format {fmt}")
        if reserved != 0:
            raise ProfileError("NodeInfo reserved byte must be 0")
        return cls(dev, flags, count, gen, port, slots)


# --- resource entries ----------------------------------------------------------------------------
_ENTRY = struct.Struct("<8s5sHBBBH")
ENTRY_SIZE = _ENTRY.size  # 20
MAX_RESOURCE_SIZE = (1 << 40) - 1

ENTRY_FLAG_SIZE_CLAMPED = 0x01  # set by the encoder when size did not fit 40 bits
ENTRY_FLAG_MIRROR = 0x02  # this holder is a mirror, not the origin
ENTRY_FLAG_AUTHORITY = 0x04  # this holder is the current authority


@dataclass(frozen=True, slots=True)
class ResourceEntry:
    """One catalog entry: enough to decide whether to ask for a resource over the fast link.

    ``generation`` carries the low 16 bits of the catalog generation the entry belongs to, so a
    central that reads several slots can tell when the catalog changed between its reads.
    """

    resource_prefix: bytes
    size: int
    version: int = 0
    temperature: int = 0
    reputation: int = 0
    flags: int = 0
    generation: int = 0

    def encode(self) -> bytes:
        flags = _u(self.flags, 8, "flags")
        size = _clamp(self.size, 40, "size")
        if size != self.size:
            flags |= ENTRY_FLAG_SIZE_CLAMPED
        return _ENTRY.pack(
            _fixed_bytes(self.resource_prefix, RESOURCE_PREFIX_SIZE, "resource_prefix"),
            size.to_bytes(5, "little"),
            _clamp(self.version, 16, "version"),
            _clamp(self.temperature, 8, "temperature"),
            _clamp(self.reputation, 8, "reputation"),
            flags,
            _u(self.generation, 64, "generation") & 0xFFFF,
        )

    @classmethod
    def decode(cls, data: bytes) -> ResourceEntry:
        if len(data) != ENTRY_SIZE:
            raise ProfileError(f"resource entry must be {ENTRY_SIZE} bytes, got {len(data)}")
        prefix, size, version, temp, rep, flags, gen = _ENTRY.unpack(data)
        return cls(prefix, int.from_bytes(size, "little"), version, temp, rep, flags, gen)


def decode_slot(data: bytes) -> ResourceEntry | None:
    """Decode a resource slot value; an empty value means the slot is unused."""
    return None if len(data) == 0 else ResourceEntry.decode(data)


# --- Control / Events messages (carried inside framed messages) -------------------------------
# First byte = message type. 0x00-0x3F belong to this profile (plaintext, pre-session);
# 0x40-0xFF are reserved for the session layer above the radio.
MSG_CATALOG_PAGE_REQUEST = 0x01
MSG_CATALOG_PAGE = 0x02
MSG_ERROR = 0x3F
SESSION_TYPES_START = 0x40
MAX_PAGE_ENTRIES = 64

_PAGE_REQ = struct.Struct("<BIB")
_PAGE_HEAD = struct.Struct("<BIIIB")
_ERROR = struct.Struct("<BB")

ERR_BAD_REQUEST = 1
ERR_UNSUPPORTED = 2
ERR_BUSY = 3


@dataclass(frozen=True, slots=True)
class CatalogPageRequest:
    """Central asks for up to ``max_entries`` catalog entries starting at index ``start``."""

    start: int
    max_entries: int


@dataclass(frozen=True, slots=True)
class CatalogPage:
    """Peripheral's answer; ``total`` lets the central know when it has paged everything."""

    generation: int
    start: int
    total: int
    entries: tuple[ResourceEntry, ...]


@dataclass(frozen=True, slots=True)
class ControlError:
    """Peripheral could not serve a request (code is one of ``ERR_*``)."""

    code: int


ControlMessage = CatalogPageRequest | CatalogPage | ControlError


def encode_control(msg: ControlMessage) -> bytes:
    """Encode a profile-level Control/Events message."""
    if isinstance(msg, CatalogPageRequest):
        if not 1 <= msg.max_entries <= MAX_PAGE_ENTRIES:
            raise ProfileError(f"max_entries must be 1..{MAX_PAGE_ENTRIES}")
        return _PAGE_REQ.pack(MSG_CATALOG_PAGE_REQUEST, _u(msg.start, 32, "start"), msg.max_entries)
    if isinstance(msg, CatalogPage):
        if len(msg.entries) > MAX_PAGE_ENTRIES:
            raise ProfileError(f"a page holds at most {MAX_PAGE_ENTRIES} entries")
        head = _PAGE_HEAD.pack(
            MSG_CATALOG_PAGE,
            _u(msg.generation, 32, "generation"),
            _u(msg.start, 32, "start"),
            _u(msg.total, 32, "total"),
            len(msg.entries),
        )
        return head + b"".join(e.encode() for e in msg.entries)
    if isinstance(msg, ControlError):
        return _ERROR.pack(MSG_ERROR, _u(msg.code, 8, "code"))
    raise ProfileError(f"not a profile message: {type(msg).__name__}")


def decode_control(data: bytes) -> ControlMessage:
    """Decode a profile-level message; session-layer types raise :class:`ProfileError`."""
    if not data:
        raise ProfileError("empty control message")
    kind = data[0]
    if kind == MSG_CATALOG_PAGE_REQUEST:
        if len(data) != _PAGE_REQ.size:
            raise ProfileError("bad CatalogPageRequest length")
        _, start, count = _PAGE_REQ.unpack(data)
        if not 1 <= count <= MAX_PAGE_ENTRIES:
            raise ProfileError("CatalogPageRequest max_entries out of range")
        return CatalogPageRequest(start, count)
    if kind == MSG_CATALOG_PAGE:
        if len(data) < _PAGE_HEAD.size:
            raise ProfileError("short CatalogPage")
        _, gen, start, total, n = _PAGE_HEAD.unpack_from(data)
        body = data[_PAGE_HEAD.size :]
        if n > MAX_PAGE_ENTRIES or len(body) != n * ENTRY_SIZE:
            raise ProfileError("CatalogPage entry count does not match its length")
        if start + n > total:
            raise ProfileError("CatalogPage runs past the announced total")
        entries = tuple(
            ResourceEntry.decode(body[i : i + ENTRY_SIZE]) for i in range(0, len(body), ENTRY_SIZE)
        )
        return CatalogPage(gen, start, total, entries)
    if kind == MSG_ERROR:
        if len(data) != _ERROR.size:
            raise ProfileError("bad ControlError length")
        return ControlError(data[1])
    raise ProfileError(f"message type {kind:#04x} is not a profile message")


def page_entries_for(max_message_size: int) -> int:
    """How many entries fit one CatalogPage message of at most ``max_message_size`` bytes."""
    return max(0, min(MAX_PAGE_ENTRIES, (max_message_size - _PAGE_HEAD.size) // ENTRY_SIZE))


def serve_page(
    request: CatalogPageRequest, catalog: Sequence[ResourceEntry], generation: int
) -> CatalogPage:
    """Build the page answering ``request`` from an in-memory catalog (pure helper)."""
    start = min(request.start, len(catalog))
    chunk = tuple(catalog[start : start + request.max_entries])
    return CatalogPage(generation & 0xFFFFFFFF, start, len(catalog), chunk)
