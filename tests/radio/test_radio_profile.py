"""GATT profile encodings: exact layouts, strict decoding, clamping, fuzzing."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radio.base import SAFE_READ_VALUE_MAX, ServiceSpec
from radio.ble import profile as p
from radio.ble.profile import (
    Advert,
    CatalogPage,
    CatalogPageRequest,
    ControlError,
    NodeInfo,
    ProfileError,
    ResourceEntry,
)


def test_documented_uuids_are_frozen() -> None:
    assert p.SERVICE_UUID == "d4310000-7190-47eb-9a81-9262a3d82547"
    assert p.NODEINFO_UUID == "d4310001-7190-47eb-9a81-9262a3d82547"
    assert p.CONTROL_UUID == "d4310002-7190-47eb-9a81-9262a3d82547"
    assert p.EVENTS_UUID == "d4310003-7190-47eb-9a81-9262a3d82547"
    assert p.resource_slot_uuid(0) == "d4310100-7190-47eb-9a81-9262a3d82547"
    assert p.resource_slot_uuid(255) == "d43101ff-7190-47eb-9a81-9262a3d82547"


def test_derived_uuids_are_valid_v4_and_distinct() -> None:
    all_uuids = [p.SERVICE_UUID, p.NODEINFO_UUID, p.CONTROL_UUID, p.EVENTS_UUID]
    all_uuids += [p.resource_slot_uuid(i) for i in range(p.MAX_RESOURCE_SLOTS)]
    assert len(set(all_uuids)) == len(all_uuids)
    for u in all_uuids:
        parsed = uuid.UUID(u)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert u == u.lower()


@pytest.mark.parametrize("bad", [-1, 256])
def test_slot_range(bad: int) -> None:
    with pytest.raises(ProfileError):
        p.resource_slot_uuid(bad)
    with pytest.raises(ProfileError):
        p.attribute_uuid(0x10000)


def test_service_spec() -> None:
    spec = p.shoal_service_spec(3)
    assert isinstance(spec, ServiceSpec)
    assert spec.readable == (p.NODEINFO_UUID, *(p.resource_slot_uuid(i) for i in range(3)))
    assert (spec.control_uuid, spec.events_uuid) == (p.CONTROL_UUID, p.EVENTS_UUID)
    with pytest.raises(ProfileError):
        p.shoal_service_spec(257)
    with pytest.raises(ValueError):
        ServiceSpec("A", (), "b", "c")
    with pytest.raises(ValueError):
        ServiceSpec("a", ("a",), "b", "c")


# --- advert -----------------------------------------------------------------------------------
def test_advert_layout_and_budget() -> None:
    raw = Advert(1, b"\x01\x02\x03\x04\x05\x06", 0x05).encode()
    assert raw == b"\x01\x05\x01\x02\x03\x04\x05\x06"
    # flags AD (3) + service data AD header (18) + payload must fit a legacy advertisement
    assert 3 + 18 + len(raw) <= 31
    assert p.decode_advert(raw) == Advert(1, b"\x01\x02\x03\x04\x05\x06", 5)


def test_advert_future_version_may_append() -> None:
    assert p.decode_advert(b"\x02\x00abcdef\xee\xff").protocol_version == 2


@pytest.mark.parametrize(
    "raw", [b"", b"\x01\x00abcde", b"\x00\x00abcdef", b"\x01\x00abcdefg", b"\x02" + bytes(10)]
)
def test_advert_rejects(raw: bytes) -> None:
    with pytest.raises(ProfileError):
        p.decode_advert(raw)


def test_advert_encode_validates() -> None:
    with pytest.raises(ProfileError):
        Advert(1, b"short").encode()
    with pytest.raises(ProfileError):
        Advert(256, b"abcdef").encode()
    with pytest.raises(ProfileError):
        Advert(1, b"abcdef", flags=-1).encode()


# --- NodeInfo ---------------------------------------------------------------------------------
def test_nodeinfo_exact_layout() -> None:
    info = NodeInfo(b"ABCDEFGH", 0x03, 513, 0x01020304, 8080, 4)
    raw = info.encode()
    assert raw == (
        b"\x01\x03ABCDEFGH"
        + (513).to_bytes(2, "little")
        + bytes([4, 3, 2, 1])
        + (8080).to_bytes(2, "little")
        + b"\x04\x00"
    )
    assert len(raw) == p.NODEINFO_SIZE == 20 <= SAFE_READ_VALUE_MAX
    assert NodeInfo.decode(raw) == info


def test_nodeinfo_clamps_count_and_rejects_overflow() -> None:
    assert NodeInfo.decode(NodeInfo(b"x" * 8, catalog_count=10**6).encode()).catalog_count == 65535
    with pytest.raises(ProfileError):
        NodeInfo(b"x" * 8, lan_port=70000).encode()
    with pytest.raises(ProfileError):
        NodeInfo(b"x" * 7).encode()
    with pytest.raises(ProfileError):
        NodeInfo(b"x" * 8, catalog_generation=-1).encode()
    with pytest.raises(ProfileError):
        NodeInfo(b"x" * 8, flags=True).encode()  # bools are not integers here


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r[:-1],
        lambda r: r + b"\x00",
        lambda r: b"\x02" + r[1:],
        lambda r: r[:-1] + b"\x01",
    ],
)
def test_nodeinfo_strict_decode(mutate) -> None:  # type: ignore[no-untyped-def]
    raw = NodeInfo(b"ABCDEFGH").encode()
    with pytest.raises(ProfileError):
        NodeInfo.decode(mutate(raw))


# --- resource entries -------------------------------------------------------------------------
def test_entry_exact_layout() -> None:
    e = ResourceEntry(b"\xaa" * 8, 0x0102030405, 7, 200, 99, 0x02, 0x1234)
    raw = e.encode()
    assert raw == (
        b"\xaa" * 8 + bytes([5, 4, 3, 2, 1]) + b"\x07\x00" + bytes([200, 99, 2]) + b"\x34\x12"
    )
    assert len(raw) == p.ENTRY_SIZE == 20 <= SAFE_READ_VALUE_MAX
    assert ResourceEntry.decode(raw) == e


def test_entry_clamping() -> None:
    e = ResourceEntry(
        b"\x01" * 8, 1 << 45, version=70000, temperature=999, reputation=-5, generation=0x1_0002
    )
    back = ResourceEntry.decode(e.encode())
    assert back.size == (1 << 40) - 1
    assert back.flags & p.ENTRY_FLAG_SIZE_CLAMPED
    assert (back.version, back.temperature, back.reputation) == (65535, 255, 0)
    assert back.generation == 2  # low 16 bits
    assert not ResourceEntry.decode(ResourceEntry(b"\x01" * 8, 10).encode()).flags


def test_entry_rejects() -> None:
    with pytest.raises(ProfileError):
        ResourceEntry(b"short", 1).encode()
    with pytest.raises(ProfileError):
        ResourceEntry(b"\x00" * 8, 1, flags=256).encode()
    with pytest.raises(ProfileError):
        ResourceEntry.decode(bytes(19))
    assert p.decode_slot(b"") is None
    assert p.decode_slot(bytes(20)) == ResourceEntry(bytes(8), 0)


# --- control messages -------------------------------------------------------------------------
def _entries(n: int) -> tuple[ResourceEntry, ...]:
    return tuple(ResourceEntry(i.to_bytes(8, "little"), i * 1000, i) for i in range(n))


@pytest.mark.parametrize(
    "msg",
    [
        CatalogPageRequest(0, 1),
        CatalogPageRequest(2**32 - 1, 64),
        CatalogPage(9, 0, 0, ()),
        CatalogPage(9, 10, 74, _entries(64)),
        ControlError(p.ERR_BUSY),
    ],
)
def test_control_round_trip(msg: p.ControlMessage) -> None:
    assert p.decode_control(p.encode_control(msg)) == msg


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01\x00\x00\x00\x00",
        b"\x01\x00\x00\x00\x00\x00",  # max_entries 0
        b"\x01\x00\x00\x00\x00\x41",  # max_entries 65
        b"\x02" + bytes(12) + b"\x01",  # count 1, no body
        b"\x02"
        + bytes(4)
        + (5).to_bytes(4, "little")
        + (5).to_bytes(4, "little")
        + b"\x01"
        + bytes(20),  # start + n > total
        b"\x3f",
        b"\x40hello",  # session-layer type
    ],
)
def test_control_rejects(raw: bytes) -> None:
    with pytest.raises(ProfileError):
        p.decode_control(raw)


def test_control_encode_rejects() -> None:
    with pytest.raises(ProfileError):
        p.encode_control(CatalogPageRequest(0, 0))
    with pytest.raises(ProfileError):
        p.encode_control(CatalogPage(0, 0, 100, _entries(65)))
    with pytest.raises(ProfileError):
        p.encode_control("nope")  # type: ignore[arg-type]


def test_serve_page_and_page_size() -> None:
    catalog = list(_entries(10))
    page = p.serve_page(CatalogPageRequest(8, 5), catalog, 3)
    assert (page.start, page.total, len(page.entries)) == (8, 10, 2)
    assert p.serve_page(CatalogPageRequest(50, 5), catalog, 3).entries == ()
    assert p.page_entries_for(8192) == 64
    assert p.page_entries_for(14 + 20 * 3) == 3
    assert len(p.encode_control(CatalogPage(0, 0, 3, _entries(3)))) == 14 + 60


# --- fuzz -------------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decoders_only_raise_profile_error(raw: bytes) -> None:
    for decode in (
        p.decode_advert,
        NodeInfo.decode,
        ResourceEntry.decode,
        p.decode_control,
        p.decode_slot,
    ):
        with contextlib.suppress(ProfileError):
            decode(raw)


entries_st = st.builds(
    ResourceEntry,
    st.binary(min_size=8, max_size=8),
    st.integers(0, 2**50),
    st.integers(0, 2**20),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.integers(0, 255),
    st.integers(0, 2**40),
)


@settings(max_examples=200, deadline=None)
@given(entries_st)
def test_entry_encoding_is_always_read_safe_and_idempotent(entry: ResourceEntry) -> None:
    raw = entry.encode()
    assert len(raw) <= SAFE_READ_VALUE_MAX
    assert ResourceEntry.decode(raw).encode() == raw


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=8, max_size=8),
    st.integers(0, 255),
    st.integers(0, 2**20),
    st.integers(0, 2**32 - 1),
    st.integers(0, 65535),
    st.integers(0, 255),
)
def test_nodeinfo_round_trip(dev: bytes, flags: int, count: int, gen: int, port: int, n: int):
    info = NodeInfo(dev, flags, count, gen, port, n)
    back = NodeInfo.decode(info.encode())
    assert back.catalog_count == min(count, 65535)
    assert (back.device_id, back.flags, back.catalog_generation, back.lan_port) == (
        dev,
        flags,
        gen,
        port,
    )


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(entries_st, max_size=64))
def test_page_round_trip(gen: int, entries: list[ResourceEntry]) -> None:
    canon = tuple(ResourceEntry.decode(e.encode()) for e in entries)
    page = CatalogPage(gen, 0, len(canon), canon)
    assert p.decode_control(p.encode_control(page)) == page
