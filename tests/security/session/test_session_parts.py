"""Multi-part messages: SecureConnection.send_parts encrypts parts without joining them.

The receiver must not be able to tell a message sent as parts from the same bytes sent
whole: same records, same boundaries, same ciphertext (with the same keys and nonces).
"""

from __future__ import annotations

import array
import itertools
import os
import struct

import pytest
from session_helpers import open_pair

from agent.security.session import FrameTooLarge, Message, SecureConnection
from agent.security.session.records import RECORD_OVERHEAD

CHUNK = 65535 - 16 - 1  # plaintext bytes per full record


def frames(wire: bytes | bytearray) -> list[int]:
    """Body lengths of the length-prefixed frames in *wire* (all of it must be frames)."""
    out, pos = [], 0
    while pos < len(wire):
        (n,) = struct.unpack_from(">H", wire, pos)
        out.append(n)
        pos += 2 + n
    assert pos == len(wire)
    return out


def receive(dst: SecureConnection, wire: bytes | bytearray) -> list[bytes]:
    dst.receive_data(wire)
    msgs = []
    while (ev := dst.next_event()) is not None:
        assert isinstance(ev, Message), ev
        msgs.append(ev.payload)
    return msgs


def split(data: bytes, cuts: list[int]) -> list[memoryview]:
    view = memoryview(data)
    bounds = [0, *cuts, len(data)]
    return [view[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("cuts", [
    [],  # one part
    [0, 0],  # empty parts first
    [1],
    [CHUNK - 1, CHUNK, CHUNK + 1],  # parts end around a record boundary
    [7, 7, 2 * CHUNK + 3],
])
def test_parts_give_the_same_records_and_ciphertext_as_the_joined_message(cuts):
    data = os.urandom(3 * CHUNK + 100)
    a_src, a_dst = open_pair(deterministic=True)
    b_src, _b_dst = open_pair(deterministic=True)
    a_src.send_parts(split(data, cuts))
    b_src.send_message(data)
    wire_a, wire_b = a_src.data_to_send(), b_src.data_to_send()
    assert wire_a == wire_b  # same keys, same nonces: identical records byte for byte
    assert frames(wire_a) == [CHUNK + 17] * 3 + [100 + 17]
    assert receive(a_dst, wire_a) == [data]


def test_a_large_chunk_reply_spans_several_records_and_round_trips():
    header = b"\x03" + os.urandom(41)  # the shape of a chunk reply: header + payload
    payload = os.urandom(1024 * 1024 + 12345)
    src, dst = open_pair()
    src.send_parts([header, memoryview(payload)])
    wire = src.data_to_send()
    size = len(header) + len(payload)
    count = -(-size // CHUNK)
    assert len(frames(wire)) == count
    assert len(wire) == size + count * RECORD_OVERHEAD
    assert receive(dst, wire) == [header + payload]


def test_record_boundaries_do_not_follow_part_boundaries():
    parts = [os.urandom(n) for n in (10, CHUNK, 5, 70_000, 1)]
    src, dst = open_pair()
    src.send_parts(parts)
    wire = src.data_to_send()
    size = sum(map(len, parts))
    full, rest = divmod(size, CHUNK)
    assert frames(wire) == [CHUNK + 17] * full + [rest + 17]
    assert receive(dst, wire) == [b"".join(parts)]


def test_empty_message_as_parts_is_one_fin_record():
    for parts in ([], [b""], [b"", memoryview(b"")]):
        src, dst = open_pair()
        src.send_parts(parts)
        wire = src.data_to_send()
        assert frames(wire) == [17]
        assert receive(dst, wire) == [b""]


def test_parts_of_any_buffer_type_count_by_bytes():
    words = array.array("H", range(1000))  # 2000 bytes, 1000 items
    parts = [bytearray(b"ab"), words, memoryview(b"xyz")]
    src, dst = open_pair()
    src.send_parts(parts)
    assert receive(dst, src.data_to_send()) == [b"ab" + words.tobytes() + b"xyz"]


def test_several_part_messages_in_a_row_keep_their_order():
    src, dst = open_pair()
    msgs = [[os.urandom(k), os.urandom(2 * k)] for k in (0, 3, 40_000, 100_000)]
    for parts in msgs:
        src.send_parts(parts)
    assert receive(dst, src.data_to_send()) == [b"".join(p) for p in msgs]


def test_oversize_parts_are_refused_whole():
    src, _dst = open_pair(max_message_size=1000)
    with pytest.raises(FrameTooLarge):
        src.send_parts([b"x" * 600, b"y" * 401])
    assert src.data_to_send() == b""


def test_parts_are_not_modified_or_kept():
    part = bytearray(os.urandom(CHUNK + 10))
    before = bytes(part)
    src, dst = open_pair()
    src.send_parts([part])
    part.extend(b"!")  # resizable again: the connection released its views
    assert part[:-1] == before
    assert receive(dst, src.data_to_send()) == [before]
