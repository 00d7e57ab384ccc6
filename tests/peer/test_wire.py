import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.peer import wire


def test_request_round_trip():
    msg = wire.decode(wire.encode_request(7, "manifest", {"resource": "photos"}))
    assert msg == wire.Request(7, "manifest", {"resource": "photos"})


def test_chunk_round_trip_compressible_and_random():
    cid = b"\x11" * 32
    text = b"hello shoal " * 20000
    parts = wire.encode_chunk(3, cid, text, compress=True)
    assert len(parts[1]) < len(text)  # lz4 used
    reply = wire.decode(b"".join(parts))
    assert reply == wire.ChunkReply(3, cid, text)
    rnd = os.urandom(100_000)
    parts = wire.encode_chunk(4, cid, rnd, compress=True)
    assert parts[1] is rnd  # incompressible data is sent as is, no copy
    assert wire.decode(b"".join(parts)).data == rnd


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x09{}",
        b"\x01[]",
        b'\x01{"id":1,"op":"nope","args":{}}',
        b'\x01{"id":1,"op":"manifest","args":{}}',
        b'\x01{"id":1,"op":"manifest","args":{"resource":"x","extra":1}}',
        b'\x01{"id":-1,"op":"ping","args":{"t":1}}',
        b'\x01{"id":1,"op":"chunk","args":{"c":"zz"}}',
        b'\x01{"id":1,"op":"chunk","args":{"c":"' + b"ab" * 32 + b'","cls":"vip"}}',
        b"\x03short",
        b"\x02{\"id\":1}",
    ],
)
def test_malformed_messages_rejected(raw):
    with pytest.raises(wire.WireError):
        wire.decode(raw)


def test_chunk_header_lies_about_length():
    parts = wire.encode_chunk(1, b"\0" * 32, b"abc" * 1000, compress=True)
    raw = bytearray(b"".join(parts))
    raw[1 + 4 + 1 + 32 + 3] ^= 1  # change the declared raw length
    with pytest.raises(wire.WireError):
        wire.decode(bytes(raw))


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_fuzz_decode_only_raises_wire_error(data):
    with contextlib.suppress(wire.WireError):
        wire.decode(data)


@settings(max_examples=200)
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(), st.none()),
                       max_size=4), st.sampled_from(sorted(wire.REQUEST_SCHEMAS)))
def test_fuzz_request_args(args, op):
    raw = wire.encode_request(1, op, args)
    with contextlib.suppress(wire.WireError):
        wire.decode(raw)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize("template", [
    b'\x01{"id":1,"op":"ping","args":{"t":%s}}',
    b'\x04{"op":"report","args":{"c":"' + b"a" * 32 + b'","h":{"x":[%s]},"load":0,"up":0}}',
    b'\x02{"id":1,"ok":true,"result":[%s]}',
])
def test_non_finite_numbers_are_refused_at_decode(template, token):
    """Python's json reads these; no peer may send them (they reach int() and comparisons
    deep inside the services otherwise)."""
    with pytest.raises(wire.WireError):
        wire.decode(template % token.encode())


def test_non_finite_numbers_are_never_sent():
    with pytest.raises(wire.WireError):
        wire.encode_response(1, True, [float("nan")])


def test_an_error_response_carries_its_kind():
    from agent.errors import ErrorKind

    msg = wire.decode(wire.encode_response(3, False, "no such chunk", ErrorKind.NOT_FOUND))
    assert msg == wire.Response(3, False, "no such chunk", ErrorKind.NOT_FOUND)
    assert wire.decode(wire.encode_response(3, False, "old peer")).kind is None
    newer = b'\x02{"id":3,"ok":false,"error":"x","kind":"from_the_future"}'
    assert wire.decode(newer).kind is None
    for bad in (b'7', b'"' + b"k" * 40 + b'"', b'["not_found"]'):
        with pytest.raises(wire.WireError):
            wire.decode(b'\x02{"id":3,"ok":false,"error":"x","kind":' + bad + b"}")
    with pytest.raises(wire.WireError):  # only errors have a kind
        wire.decode(b'\x02{"id":3,"ok":true,"result":1,"kind":"not_found"}')
