"""Property tests: arbitrary split points, random input, mutated transcripts."""

from __future__ import annotations

import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from session_helpers import drain_events, key, make_pair, open_pair

from agent.security.session import HandshakeComplete, Message, SecureConnection, SessionError

CHUNK = 65535 - 16 - 1

FAST = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def _record_transcript(payloads: tuple[bytes, ...]) -> tuple[bytes, bytes, list]:
    """Deterministic (fixed ephemerals) i->r and r->i streams plus the responder's events."""
    i, r = make_pair(deterministic=True)
    i2r, r2i = bytearray(), bytearray()
    i.initiate()
    for src, dst, log in ((i, r, i2r), (r, i, r2i), (i, r, i2r)):
        data = src.data_to_send()
        log += data
        dst.receive_data(data)
    for p in payloads:
        i.send_message(p)
        r.send_message(p[::-1])
    data = i.data_to_send()
    i2r += data
    r.receive_data(data)
    r2i += r.data_to_send()
    events, err = drain_events(r)
    assert err is None
    return bytes(i2r), bytes(r2i), events


@functools.cache
def _small_transcript():
    return _record_transcript((b"", b"x", b"hello" * 20))


def _feed(conn: SecureConnection, stream: bytes, cuts: list[int]) -> list:
    """Feed ``stream`` cut at ``cuts``; return all events (asserting no error)."""
    events = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        if cut == prev:
            continue  # b"" would mean EOF
        conn.receive_data(stream[prev:cut])
        prev = cut
        got, err = drain_events(conn)
        assert err is None, err
        events += got
    return events


def _fresh_responder() -> SecureConnection:
    _, r = make_pair(deterministic=True)
    return r


def test_responder_split_at_every_byte_boundary():
    i2r, r2i, expected = _small_transcript()
    for cut in range(1, len(i2r)):
        r = _fresh_responder()
        assert _feed(r, i2r, [cut]) == expected, cut
        msg2 = bytes(r.data_to_send())
        assert len(msg2) == 2 + 96 + len(b"resp-payload") and r2i.startswith(msg2)


def test_initiator_split_at_every_byte_boundary():
    _i2r, r2i, _ = _small_transcript()
    for cut in range(1, len(r2i)):
        i, _r = make_pair(deterministic=True)
        i.initiate()
        i.data_to_send()
        events = _feed(i, r2i, [cut])
        assert isinstance(events[0], HandshakeComplete)
        assert [e.payload for e in events[1:]] == [b"", b"x", (b"hello" * 20)[::-1]]


@FAST
@given(
    sizes=st.lists(
        st.one_of(st.integers(0, 300), st.sampled_from([CHUNK - 1, CHUNK, CHUNK + 1, 150_000])),
        min_size=1,
        max_size=5,
    ),
    data=st.data(),
)
def test_random_split_points_give_identical_events(sizes, data):
    payloads = tuple(bytes([n % 251]) * n for n in sizes)
    i2r, _, expected = _record_transcript(payloads)
    cuts = data.draw(st.lists(st.integers(0, len(i2r)), max_size=40))
    r = _fresh_responder()
    events = _feed(r, i2r, cuts)
    assert events == expected
    assert [e.payload for e in events if isinstance(e, Message)] == list(payloads)


def _only_session_errors(conn: SecureConnection, chunks: list[bytes], eof: bool) -> None:
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while conn.next_event() is not None:
                pass
        if eof:
            conn.receive_data(b"")
            while conn.next_event() is not None:
                pass
    except SessionError:
        return


@settings(deadline=None, max_examples=400)
@given(chunks=st.lists(st.binary(max_size=300), max_size=6), eof=st.booleans())
def test_random_bytes_to_a_responder_raise_only_session_errors(chunks, eof):
    _only_session_errors(SecureConnection(key("r"), initiator=False), chunks, eof)


@settings(deadline=None, max_examples=200)
@given(
    frames=st.lists(
        st.tuples(st.integers(0, 65535), st.binary(max_size=200)), min_size=1, max_size=4
    ),
    eof=st.booleans(),
)
def test_random_frames_to_an_open_connection_raise_only_session_errors(frames, eof):
    _, r = open_pair()
    chunks = [length.to_bytes(2, "big") + body for length, body in frames]
    _only_session_errors(r, chunks, eof)


@settings(deadline=None, max_examples=200)
@given(chunks=st.lists(st.binary(max_size=200), max_size=4))
def test_random_bytes_to_an_initiator_raise_only_session_errors(chunks):
    i = SecureConnection(key("i"), initiator=True)
    i.initiate()
    _only_session_errors(i, chunks, eof=True)


@FAST
@given(data=st.data())
def test_mutated_transcript_never_yields_forged_messages(data):
    i2r, _, expected = _small_transcript()
    pos = data.draw(st.integers(0, len(i2r) - 1))
    kind = data.draw(st.sampled_from(["flip", "insert", "delete"]))
    if kind == "flip":
        bit = data.draw(st.integers(0, 7))
        mutated = i2r[:pos] + bytes([i2r[pos] ^ (1 << bit)]) + i2r[pos + 1 :]
    elif kind == "insert":
        mutated = i2r[:pos] + data.draw(st.binary(min_size=1, max_size=3)) + i2r[pos:]
    else:
        mutated = i2r[:pos] + i2r[pos + 1 :]
    r = _fresh_responder()
    got = []
    error = None
    try:
        r.receive_data(mutated)
        r.receive_data(b"")
        while (ev := r.next_event()) is not None:
            got.append(ev)
    except SessionError as exc:
        error = exc
    assert error is not None, f"{kind} at {pos} went unnoticed"
    # whatever was delivered before the fault is a prefix of the genuine event sequence
    assert got == expected[: len(got)]
