"""Edge cases of the sans-I/O fragmenter/reassembler (radio.ble.framing)."""

from __future__ import annotations

import struct
import zlib

import pytest

from radio.ble.framing import (
    ATT_MAX_VALUE,
    BEGIN,
    BEGIN_HEADER_SIZE,
    END,
    Fragmenter,
    FramingError,
    Reassembler,
    fragment_size_for_mtu,
)

MTUS = [23, 185, 247, 517]


def feed_all(r: Reassembler, frags: list[bytes], now: float = 0.0) -> list[bytes]:
    return [m for f in frags if (m := r.feed(f, now)) is not None]


def begin(total: int, crc: int, chunk: bytes, *, end: bool = False, version: int = 1) -> bytes:
    header = BEGIN | (END if end else 0)
    return bytes([header]) + struct.pack("<BHII", version, 7, total, crc) + chunk


@pytest.mark.parametrize("mtu", MTUS)
def test_fragment_size_is_mtu_minus_3_capped(mtu: int) -> None:
    assert fragment_size_for_mtu(mtu) == min(mtu - 3, 512)


def test_fragment_size_rejects_sub_minimum_mtu() -> None:
    with pytest.raises(FramingError):
        fragment_size_for_mtu(22)


@pytest.mark.parametrize("mtu", MTUS)
@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_boundaries_round_trip(mtu: int, extra: int) -> None:
    size = fragment_size_for_mtu(mtu)
    frag = Fragmenter(size)
    first_room = size - BEGIN_HEADER_SIZE
    rest_room = size - 1
    for length in (0, 1, first_room + extra, first_room + rest_room + extra, 5000 + extra):
        payload = bytes((i * 7) % 256 for i in range(max(0, length)))
        frags = frag.fragments(42, payload)
        assert all(len(f) <= size for f in frags)
        assert len(frags) == frag.count(len(payload))
        r = Reassembler(max_message_size=8192)
        assert feed_all(r, frags) == [payload]
        assert r.last_message_id == 42
        assert r.buffered_bytes == 0


@pytest.mark.parametrize("mtu", MTUS)
def test_exact_fragment_counts(mtu: int) -> None:
    size = fragment_size_for_mtu(mtu)
    frag = Fragmenter(size)
    first_room = size - 12
    assert len(frag.fragments(0, b"x" * first_room)) == 1
    assert len(frag.fragments(0, b"x" * (first_room + 1))) == 2
    assert len(frag.fragments(0, b"x" * (first_room + size - 1))) == 2
    assert len(frag.fragments(0, b"x" * (first_room + size))) == 3


def test_single_fragment_has_begin_and_end() -> None:
    (only,) = Fragmenter(20).fragments(1, b"hi")
    assert only[0] == BEGIN | END
    assert len(only) == BEGIN_HEADER_SIZE + 2


def test_header_bits_and_sequence_wrap() -> None:
    frags = Fragmenter(20).fragments(3, bytes(8 + 19 * 40))
    assert len(frags) == 41
    assert frags[0][0] == BEGIN
    assert frags[-1][0] & END
    for i, f in enumerate(frags):
        assert f[0] & 0x0F == i % 16
        assert f[0] & 0x30 == 0
    assert Reassembler().feed(frags[0], 0) is None  # sanity: partial


def test_sequence_wrap_round_trip() -> None:
    payload = bytes(range(256)) * 4
    frags = Fragmenter(20).fragments(9, payload)
    assert len(frags) > 32
    assert feed_all(Reassembler(), frags) == [payload]


def test_512_cap_on_fragmenter_and_reassembler() -> None:
    assert Fragmenter(10_000).max_fragment_size == ATT_MAX_VALUE
    frags = Fragmenter(10_000).fragments(1, bytes(3000))
    assert max(len(f) for f in frags) == 512
    r = Reassembler()
    assert r.feed(bytes([BEGIN | END]) + bytes(600), 0) is None
    assert r.stats.malformed == 1


def test_fragmenter_rejects_bad_arguments() -> None:
    with pytest.raises(FramingError):
        Fragmenter(12)
    Fragmenter(13).fragments(0, b"ab")  # one payload byte per BEGIN fragment is enough
    with pytest.raises(FramingError):
        Fragmenter(20).fragments(70000, b"")
    with pytest.raises(FramingError):
        Fragmenter(20).fragments(-1, b"")
    with pytest.raises(FramingError):
        Reassembler(timeout_s=0)


def test_zero_length_message() -> None:
    frags = Fragmenter(20).fragments(5, b"")
    assert len(frags) == 1
    assert feed_all(Reassembler(), frags) == [b""]


def _two_messages(size: int = 20) -> tuple[list[bytes], list[bytes], bytes, bytes]:
    a, b = bytes(range(100)), bytes(range(100, 180))
    f = Fragmenter(size)
    return f.fragments(1, a), f.fragments(2, b), a, b


def test_lost_middle_fragment_discards_then_recovers() -> None:
    fa, fb, _, b = _two_messages()
    r = Reassembler()
    assert feed_all(r, fa[:2] + fa[3:] + fb) == [b]
    assert r.stats.sequence_gap == 1
    # the fragments after the gap arrived with no message open
    assert r.stats.unexpected_continuation == len(fa) - 4
    assert r.stats.messages == 1


def test_lost_first_fragment() -> None:
    fa, fb, _, b = _two_messages()
    r = Reassembler()
    assert feed_all(r, fa[1:] + fb) == [b]
    assert r.stats.unexpected_continuation == len(fa) - 1


def test_lost_last_fragment_counts_unexpected_begin() -> None:
    fa, fb, _, b = _two_messages()
    r = Reassembler()
    assert feed_all(r, fa[:-1] + fb) == [b]
    assert r.stats.unexpected_begin == 1


def test_reordered_fragments_are_a_gap() -> None:
    fa, fb, _, b = _two_messages()
    r = Reassembler()
    swapped = [fa[0], fa[2], fa[1], *fa[3:]]
    assert feed_all(r, swapped + fb) == [b]
    assert r.stats.sequence_gap == 1


def test_duplicated_fragment_is_a_gap() -> None:
    fa, fb, _, b = _two_messages()
    r = Reassembler()
    dup = [fa[0], fa[1], fa[1], *fa[2:]]
    assert feed_all(r, dup + fb) == [b]
    assert r.stats.sequence_gap == 1


def test_duplicated_whole_message_is_delivered_twice() -> None:
    # Framing does not deduplicate: message ids are for the layer above.
    fa, _, a, _ = _two_messages()
    r = Reassembler()
    assert feed_all(r, fa + fa) == [a, a]


def test_disconnect_mid_message() -> None:
    fa, fb, _, b = _two_messages()
    r = Reassembler()
    feed_all(r, fa[:3])
    assert r.in_progress and r.buffered_bytes > 0
    r.on_disconnect()
    assert r.stats.disconnect == 1
    assert not r.in_progress and r.buffered_bytes == 0
    r.on_disconnect()  # idle: nothing to count
    assert r.stats.disconnect == 1
    assert feed_all(r, fb) == [b]


def test_oversize_total_rejected_at_begin() -> None:
    frags = Fragmenter(244).fragments(1, bytes(1000))
    r = Reassembler(max_message_size=999)
    assert feed_all(r, frags) == []
    assert r.stats.oversize == 1
    assert r.stats.unexpected_continuation == len(frags) - 1
    assert r.buffered_bytes == 0
    ok = Fragmenter(244).fragments(2, bytes(999))
    assert feed_all(r, ok) == [bytes(999)]


def test_oversize_claim_never_allocates() -> None:
    r = Reassembler(max_message_size=4096)
    assert r.feed(begin(0xFFFFFFFF, 0, b"abc"), 0) is None
    assert r.stats.oversize == 1 and r.buffered_bytes == 0


def test_crc_corruption_in_payload() -> None:
    fa, fb, _, b = _two_messages()
    bad = bytearray(fa[1])
    bad[5] ^= 0x01
    r = Reassembler()
    assert feed_all(r, [fa[0], bytes(bad), *fa[2:], *fb]) == [b]
    assert r.stats.crc_error == 1


def test_crc_corruption_in_header() -> None:
    fa, _, _, _ = _two_messages()
    bad = bytearray(fa[0])
    bad[8] ^= 0xFF  # inside the crc32 field
    r = Reassembler()
    assert feed_all(r, [bytes(bad), *fa[1:]]) == []
    assert r.stats.crc_error == 1


def test_length_mismatch_short_end() -> None:
    r = Reassembler()
    assert r.feed(begin(10, zlib.crc32(b"abcde"), b"abcde", end=True), 0) is None
    assert r.stats.length_mismatch == 1


def test_length_mismatch_overrun() -> None:
    r = Reassembler()
    assert r.feed(begin(4, 0, b"abc"), 0) is None
    assert r.feed(bytes([0x01]) + b"defg", 0) is None
    assert r.stats.length_mismatch == 1
    assert r.buffered_bytes == 0


@pytest.mark.parametrize(
    ("fragment", "reason"),
    [
        (b"", "malformed"),
        (bytes([0x30]), "malformed"),  # reserved bits
        (bytes([BEGIN | 0x20]) + bytes(11), "malformed"),
        (bytes([BEGIN | 0x03]) + bytes(11), "malformed"),  # BEGIN with seq != 0
        (bytes([BEGIN]) + bytes(5), "malformed"),  # short BEGIN header
        (begin(3, 0, b"abc", end=True, version=2), "bad_version"),
        (bytes([0x01]) + b"xyz", "unexpected_continuation"),
        (bytes([END | 0x05]), "unexpected_continuation"),
    ],
)
def test_malformed_fragments(fragment: bytes, reason: str) -> None:
    r = Reassembler()
    assert r.feed(fragment, 0) is None
    assert r.stats.as_dict()[reason] == 1
    assert r.stats.discarded == 1


@pytest.mark.parametrize("junk", [None, 12, "text", 3.5, object()])
def test_non_bytes_input_never_raises(junk: object) -> None:
    r = Reassembler()
    assert r.feed(junk, 0) is None  # type: ignore[arg-type]
    assert r.stats.malformed == 1


def test_malformed_fragment_mid_message_discards_partial() -> None:
    fa, fb, _, b = _two_messages()
    r = Reassembler()
    assert feed_all(r, [fa[0], fa[1], bytes([0x30]), *fa[2:], *fb]) == [b]
    assert r.stats.malformed == 1


def test_timeout_between_fragments() -> None:
    fa, fb, _, b = _two_messages()
    r = Reassembler(timeout_s=2.0)
    assert r.feed(fa[0], 0.0) is None
    assert r.feed(fa[1], 1.9) is None  # activity refreshes the timer
    assert r.feed(fa[2], 3.8) is None
    assert r.stats.timeout == 0
    assert r.feed(fa[3], 6.0) is None  # 2.2 s idle: discarded, fragment is then stray
    assert r.stats.timeout == 1
    assert r.stats.unexpected_continuation == 1
    assert feed_all(r, fb, now=7.0) == [b]


def test_tick_discards_idle_partial() -> None:
    fa, _, _, _ = _two_messages()
    r = Reassembler(timeout_s=1.0)
    r.feed(fa[0], 10.0)
    r.tick(10.5)
    assert r.in_progress
    r.tick(11.5)
    assert not r.in_progress and r.stats.timeout == 1
    r.tick(100.0)
    assert r.stats.timeout == 1


def test_recovery_after_garbage() -> None:
    garbage = [b"\xff" * 30, b"\x00", bytes([BEGIN]) + b"\x01" * 40, b"\x8f", b"\x41zz"]
    payload = b"hello shoal" * 20
    r = Reassembler()
    assert feed_all(r, garbage + Fragmenter(185).fragments(8, payload)) == [payload]
    assert r.stats.messages == 1
    assert r.stats.discarded >= len(garbage) - 1


def test_reset_does_not_count() -> None:
    fa, _, _, _ = _two_messages()
    r = Reassembler()
    r.feed(fa[0], 0)
    r.reset()
    assert not r.in_progress and r.stats.discarded == 0
