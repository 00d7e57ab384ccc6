"""The relay's pure core: frame rules, routing decisions, the bounded circuit table."""

from __future__ import annotations

import pytest

from agent.errors import ErrorKind
from agent.peer import wire
from agent.relay.circuits import (
    MAX_QUEUED_BYTES,
    BadFrame,
    Circuit,
    CircuitTable,
    Forward,
    Hop,
    Limits,
    Refusal,
    Terminate,
    credit_payload,
    judge,
    route,
)

ME, A, B, C, T = (bytes([i]) * 32 for i in range(1, 6))


def mv(b: bytes) -> memoryview:
    return memoryview(b)


def test_judge_accepts_the_three_frame_types() -> None:
    assert judge(wire.RELAY_DATA | wire.RELAY_FROM_OPENER, mv(b"x")).kind == "data"
    f = judge(wire.RELAY_CREDIT, mv(credit_payload(4096)))
    assert (f.kind, f.credit, f.from_opener) == ("credit", 4096, False)
    assert judge(wire.RELAY_CLOSE, mv(b"")).kind == "close"
    assert judge(wire.RELAY_DATA, mv(bytes(wire.RELAY_MAX_DATA))).kind == "data"


@pytest.mark.parametrize(("flags", "payload"), [
    (0x80, b"x"),  # reserved bit
    (0x08, b"x"),
    (wire.RELAY_TYPE_MASK, b"x"),  # unknown type
    (wire.RELAY_DATA, b""),  # empty data
    (wire.RELAY_DATA, bytes(wire.RELAY_MAX_DATA + 1)),  # oversized data
    (wire.RELAY_CREDIT, b"\x00\x01"),  # short credit
    (wire.RELAY_CREDIT, credit_payload(0)),
    (wire.RELAY_CREDIT, credit_payload(2 * wire.RELAY_WINDOW + 1)),
    (wire.RELAY_CLOSE, b"why"),  # close carries nothing
])
def test_judge_refuses_bad_frames(flags: int, payload: bytes) -> None:
    with pytest.raises(BadFrame):
        judge(flags, mv(payload))


def test_wire_decodes_relay_frames_as_views() -> None:
    msg = wire.encode_relay_header(7, wire.RELAY_FROM_OPENER) + b"cipher"
    f = wire.decode(msg)
    assert isinstance(f, wire.RelayFrame)
    assert (f.cid, f.flags, bytes(f.data)) == (7, wire.RELAY_FROM_OPENER, b"cipher")
    assert isinstance(f.data, memoryview)
    with pytest.raises(wire.WireError):
        wire.decode(bytes([wire.KIND_RELAY, 0, 0]))


def test_relay_open_schema_is_strict() -> None:
    ok = {"t": "ab" * 32, "ttl": 3, "cid": 1, "n": "cd" * 16}
    wire.decode(wire.encode_request(1, "relay-open", ok))
    for bad in ({**ok, "ttl": 4}, {**ok, "ttl": -1}, {**ok, "ttl": True}, {**ok, "cid": 0},
                {**ok, "cid": 2**32}, {**ok, "t": "ab" * 31}, {**ok, "n": "zz" * 16},
                {**ok, "x": 1}):
        with pytest.raises(wire.WireError):
            wire.decode(wire.encode_request(1, "relay-open", bad))


def _route(**kw: object) -> Forward | Terminate | Refusal:
    args: dict[str, object] = dict(
        me=ME, target=T, ttl=2, from_peer=A, from_trusted=True, paired_only=True,
        forward=True, direct=lambda p: p in (B, T), next_hop=None, trusted=lambda p: True)
    args.update(kw)
    return route(**args)  # type: ignore[arg-type]


def test_route_decisions() -> None:
    assert _route() == Forward(T)
    assert _route(target=ME) == Terminate()
    assert _route(direct=lambda p: p == B, next_hop=lambda t: B) == Forward(B)
    # refusals, each with the kind the opener acts on
    assert _route(from_trusted=False).kind == ErrorKind.UNTRUSTED  # type: ignore[union-attr]
    assert _route(target=ME, from_trusted=False).kind == ErrorKind.UNTRUSTED  # type: ignore
    assert _route(ttl=0).reason.startswith("relay hop limit")  # type: ignore[union-attr]
    assert _route(forward=False).kind == ErrorKind.REFUSED  # type: ignore[union-attr]
    assert _route(target=A).reason.startswith("relay loop")  # type: ignore[union-attr]
    assert _route(direct=lambda p: False).kind == ErrorKind.UNREACHABLE  # type: ignore
    # the resolver may not send it back where it came from, nor to this device
    for back in (A, ME):
        r = _route(direct=lambda p: p != T, next_hop=lambda t, b=back: b)
        assert isinstance(r, Refusal) and r.kind == ErrorKind.UNREACHABLE
    r = _route(trusted=lambda p: p != T)
    assert isinstance(r, Refusal) and r.kind == ErrorKind.UNTRUSTED
    # paired_only off: strangers are carried (still bounded by the table)
    assert _route(from_trusted=False, trusted=lambda p: False, paired_only=False) == Forward(T)


def test_table_bounds_loops_and_lookups() -> None:
    t: CircuitTable[str] = CircuitTable(Limits(max_circuits=3, max_per_peer=2))
    c1 = Circuit(b"n1", Hop("lA", 5, False), A)
    t.add(c1, 0.0)
    assert t.admit(A, b"n1").reason.startswith("relay loop")  # type: ignore[union-attr]
    t.join(c1, Hop("lB", t.new_cid("lB"), True), 0.0)
    # a frame from A (the hop's opener) and one from B (this device opened that hop)
    assert t.lookup("lA", 5, from_opener=True) == (c1, c1.inbound)
    assert t.lookup("lB", c1.outbound.cid, from_opener=False) == (c1, c1.outbound)  # type: ignore
    assert t.lookup("lA", 5, from_opener=False) is None  # the other numbering
    t.add(Circuit(b"n2", Hop("lA", 6, False), A), 0.0)
    assert "from this device" in t.admit(A, b"n3").reason  # type: ignore[union-attr]
    t.add(Circuit(b"n3", Hop("lC", 1, False), C), 0.0)
    assert t.admit(B, b"n4").reason == "too many relay circuits here"  # type: ignore
    assert t.on_link("lB") == [c1]
    assert t.remove(c1) and not t.remove(c1)
    assert t.lookup("lA", 5, True) is None and t.admit(A, b"n1") is None
    assert len(t) == 2


def test_new_cids_skip_the_ones_in_use_and_wrap() -> None:
    t: CircuitTable[str] = CircuitTable(Limits())
    t._next_cid["l"] = 2**32 - 2
    first = t.new_cid("l")
    t.add(Circuit(b"x", Hop("l", first, True), ME), 0.0)
    assert first == 2**32 - 1
    assert t.new_cid("l") == 1  # wraps, never 0


def test_idle_circuits_are_named() -> None:
    t: CircuitTable[str] = CircuitTable(Limits(idle_timeout=10.0))
    c = Circuit(b"x", Hop("l", 1, False), A)
    t.add(c, 0.0)
    assert t.idle(5.0) == []
    assert t.idle(10.5) == [c]
    c.last_active = 9.0
    assert t.idle(10.5) == []


def test_a_sender_ignoring_credit_is_caught() -> None:
    t: CircuitTable[str] = CircuitTable(Limits())
    c = Circuit(b"x", Hop("l", 1, False), A)
    t.add(c, 0.0)
    sent = 0
    while t.enqueue(c, True, wire.RELAY_MAX_DATA):
        sent += wire.RELAY_MAX_DATA
    assert wire.RELAY_WINDOW <= sent <= MAX_QUEUED_BYTES
    t.dequeue(c, True, wire.RELAY_MAX_DATA)
    assert t.enqueue(c, False, 4)  # the other direction has its own bound


def test_own_circuits_are_bounded_by_the_total_only() -> None:
    t: CircuitTable[str] = CircuitTable(Limits(max_circuits=4, max_per_peer=1))
    for i in range(4):
        assert t.admit(ME, bytes([i]), own=True) is None
        t.add(Circuit(bytes([i]), Hop("l", t.new_cid("l"), True), ME), 0.0)
    assert t.admit(ME, b"more", own=True).reason == "too many relay circuits here"  # type: ignore
