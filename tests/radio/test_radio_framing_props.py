"""Property tests: the reassembler survives any byte stream, and framing round-trips."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from radio.ble.framing import Fragmenter, Reassembler, fragment_size_for_mtu

MAX_MESSAGE = 2048
mtus = st.integers(min_value=23, max_value=517)
fragments = st.one_of(
    st.binary(max_size=600),
    # bias towards plausible headers so deeper states are reached
    st.builds(
        lambda h, body: bytes([h]) + body,
        st.sampled_from([0x80, 0xC0, 0x40, 0x01, 0x02, 0x41, 0x8F, 0x30]),
        st.binary(max_size=40),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(fragments, st.floats(0, 1000, allow_nan=False)), max_size=60))
def test_arbitrary_streams_never_raise_and_stay_bounded(stream: list[tuple[bytes, float]]) -> None:
    r = Reassembler(max_message_size=MAX_MESSAGE, timeout_s=3.0)
    for frag, now in stream:
        out = r.feed(frag, now)
        assert r.buffered_bytes <= MAX_MESSAGE
        if out is not None:
            assert len(out) <= MAX_MESSAGE
        r.tick(now)
    r.on_disconnect()
    assert r.buffered_bytes == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), mtus, st.integers(0, 0xFFFF))
def test_round_trip_any_payload_any_mtu(payload: bytes, mtu: int, message_id: int) -> None:
    size = fragment_size_for_mtu(mtu)
    frags = Fragmenter(size).fragments(message_id, payload)
    assert all(len(f) <= min(mtu - 3, 512) for f in frags)
    r = Reassembler(max_message_size=4096)
    outputs = [r.feed(f, 0.0) for f in frags]
    assert outputs[:-1] == [None] * (len(frags) - 1)
    assert outputs[-1] == payload
    assert r.last_message_id == message_id
    assert r.stats.discarded == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(fragments, max_size=20), st.binary(max_size=1500), mtus)
def test_recovers_after_any_garbage(garbage: list[bytes], payload: bytes, mtu: int) -> None:
    r = Reassembler(max_message_size=MAX_MESSAGE)
    for g in garbage:
        r.feed(g, 0.0)
    frags = Fragmenter(fragment_size_for_mtu(mtu)).fragments(1, payload)
    outs = [r.feed(f, 0.0) for f in frags]
    assert outs[-1] == payload


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.binary(max_size=400), min_size=1, max_size=8),
    mtus,
    st.lists(st.integers(0, 10_000), max_size=10),
)
def test_lossy_stream_delivers_only_sent_messages(
    messages: list[bytes], mtu: int, drops: list[int]
) -> None:
    frag = Fragmenter(fragment_size_for_mtu(mtu))
    stream = [f for i, m in enumerate(messages) for f in frag.fragments(i, m)]
    dropped = {d % len(stream) for d in drops}
    r = Reassembler(max_message_size=MAX_MESSAGE)
    kept = [f for i, f in enumerate(stream) if i not in dropped]
    got = [m for f in kept if (m := r.feed(f, 0.0)) is not None]
    for m in got:
        assert m in messages
    if not dropped:
        assert got == messages
