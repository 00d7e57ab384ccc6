"""Sans-I/O SecureConnection: handshake, framing, integrity, limits, failure semantics."""

from __future__ import annotations

import os
import struct

import pytest
from session_helpers import drain_events, handshake, key, make_pair, open_pair, pub, pump

from agent.security.session import (
    MAX_HANDSHAKE_PAYLOAD,
    ConnectionClosed,
    DecryptError,
    FrameTooLarge,
    HandshakeComplete,
    HandshakeError,
    Message,
    ProtocolError,
    SecureConnection,
    SessionError,
)
from agent.security.session.noise import MAX_NONCE
from agent.security.session.records import RECORD_OVERHEAD

CHUNK = 65535 - 16 - 1  # plaintext bytes per full record


def roundtrip(src: SecureConnection, dst: SecureConnection, payload: bytes) -> bytes:
    src.send_message(payload)
    pump(src, dst)
    ev = dst.next_event()
    assert isinstance(ev, Message), ev
    assert dst.next_event() is None
    return ev.payload


# --------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("a_initiates", [True, False])
def test_handshake_both_ways_exchanges_payloads_and_hashes(a_initiates):
    a_key, b_key = key("device-a"), key("device-b")
    a = SecureConnection(a_key, initiator=a_initiates, local_payload=b"hello from a")
    b = SecureConnection(b_key, initiator=not a_initiates, local_payload=b"hello from b")
    i, r = (a, b) if a_initiates else (b, a)
    ev_i, ev_r = handshake(i, r)
    ev_a, ev_b = (ev_i, ev_r) if a_initiates else (ev_r, ev_i)
    assert ev_a.remote_payload == b"hello from b"
    assert ev_b.remote_payload == b"hello from a"
    assert ev_a.remote_static == pub(b_key) == a.remote_static
    assert ev_b.remote_static == pub(a_key) == b.remote_static
    assert len(ev_a.handshake_hash) == 32
    assert ev_a.handshake_hash == ev_b.handshake_hash == a.handshake_hash == b.handshake_hash
    assert roundtrip(a, b, b"a->b") == b"a->b"
    assert roundtrip(b, a, b"b->a") == b"b->a"


def test_each_handshake_is_fresh():
    i1, r1 = make_pair()
    i2, r2 = make_pair()
    assert handshake(i1, r1)[0].handshake_hash != handshake(i2, r2)[0].handshake_hash


def test_empty_and_maximal_handshake_payloads():
    big = os.urandom(MAX_HANDSHAKE_PAYLOAD)
    ev_i, ev_r = handshake(*make_pair(i_payload=b"", r_payload=big))
    assert ev_i.remote_payload == big and ev_r.remote_payload == b""
    with pytest.raises(ValueError, match="1024"):
        SecureConnection(key("x"), initiator=True, local_payload=big + b"!")


def test_initiator_can_send_right_after_message_3():
    i, r = make_pair()
    i.initiate()
    pump(i, r)
    pump(r, i)
    assert isinstance(i.next_event(), HandshakeComplete)
    i.send_message(b"early")  # goes out together with message 3
    pump(i, r)
    assert isinstance(r.next_event(), HandshakeComplete)
    assert r.next_event() == Message(b"early")


def test_mitm_with_own_keys_yields_different_hashes_and_keys():
    # Mallory terminates both handshakes with her own static key and relays the payloads.
    alice = SecureConnection(key("alice"), initiator=True, local_payload=b"alice")
    bob = SecureConnection(key("bob"), initiator=False, local_payload=b"bob")
    m_resp = SecureConnection(key("mallory"), initiator=False, local_payload=b"bob")
    m_init = SecureConnection(key("mallory"), initiator=True, local_payload=b"alice")
    ev_alice, _ = handshake(alice, m_resp)
    _, ev_bob = handshake(m_init, bob)
    assert ev_alice.remote_payload == b"bob" and ev_bob.remote_payload == b"alice"
    # ... but the handshake hashes (pairing codes) differ and the static keys are Mallory's.
    assert ev_alice.handshake_hash != ev_bob.handshake_hash
    assert ev_alice.remote_static == pub(key("mallory")) != pub(key("bob"))
    assert ev_bob.remote_static == pub(key("mallory")) != pub(key("alice"))


def test_mitm_swapping_the_ephemeral_key_breaks_the_handshake():
    i, r = make_pair()
    i.initiate()
    msg1 = bytearray(i.data_to_send())
    msg1[2:34] = pub(key("mallory-ephemeral"))
    r.receive_data(msg1)
    pump(r, i)
    events, err = drain_events(i)
    assert events == [] and isinstance(err, HandshakeError)
    assert "authentication" in str(err)


def test_wrong_static_key_is_visible_to_a_pinning_caller():
    pinned = pub(key("the-device-we-paired-with"))
    impostor = SecureConnection(key("impostor"), initiator=True, local_payload=b"it's me")
    responder = SecureConnection(key("responder"), initiator=False)
    _, ev = handshake(impostor, responder)
    # The handshake itself succeeds (XX learns the key); the caller compares and refuses.
    assert ev.remote_static != pinned
    assert ev.remote_static == pub(key("impostor")) == responder.remote_static


def test_prologue_mismatch_fails():
    i, r = make_pair(i_kwargs={"prologue": b"shoal/1"}, r_kwargs={"prologue": b"shoal/2"})
    i.initiate()
    pump(i, r)
    pump(r, i)
    _, err = drain_events(i)
    assert isinstance(err, HandshakeError)


def test_handshake_frame_limits():
    # Message 1 must be exactly one 32-byte ephemeral key (empty payload).
    r = SecureConnection(key("r"), initiator=False)
    r.receive_data(b"\x00\x21" + b"\x01" * 33)
    with pytest.raises(FrameTooLarge):
        r.next_event()
    r = SecureConnection(key("r"), initiator=False)
    r.receive_data(b"\x00\x1f")
    with pytest.raises(HandshakeError, match="below"):
        r.next_event()
    # Message 2 above the payload limit is refused from its length prefix alone.
    i = SecureConnection(key("i"), initiator=True)
    i.initiate()
    i.receive_data(struct.pack(">H", 32 + 32 + 32 + MAX_HANDSHAKE_PAYLOAD + 1))
    with pytest.raises(FrameTooLarge):
        i.next_event()
    assert i.buffered_bytes == 0


def test_eof_during_handshake():
    i, r = make_pair()
    i.initiate()
    pump(i, r)
    i.receive_data(b"")
    with pytest.raises(HandshakeError, match="closed"):
        i.next_event()


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "size",
    [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 65536, 2 * CHUNK, 3 * CHUNK + 7, 1_000_000],
)
def test_message_sizes_roundtrip_and_record_count(size):
    i, r = open_pair()
    payload = os.urandom(size)
    i.send_message(payload)
    wire = i.data_to_send()
    records = max(1, -(-size // CHUNK))
    assert len(wire) == size + records * RECORD_OVERHEAD
    r.receive_data(wire)
    assert r.next_event() == Message(payload)


def test_large_message_many_records_both_directions():
    i, r = open_pair()
    big = os.urandom(3 * 1024 * 1024 + 12345)  # 49 records
    assert roundtrip(i, r, big) == big
    assert roundtrip(r, i, big[::-1]) == big[::-1]


def test_payload_types_memoryview_bytearray_and_typed_views():
    import array

    i, r = open_pair()
    data = os.urandom(100_000)
    assert roundtrip(i, r, memoryview(data)[10:90_010]) == data[10:90_010]
    assert roundtrip(i, r, bytearray(data)) == data
    arr = array.array("I", range(1000))
    assert roundtrip(i, r, arr) == arr.tobytes()


def test_many_messages_in_one_feed_and_ordering():
    i, r = open_pair()
    payloads = [os.urandom(n) for n in (0, 5, 70_000, 1, 200_000, 0, 3)]
    for p in payloads:
        i.send_message(p)
    r.receive_data(i.data_to_send())
    events, err = drain_events(r)
    assert err is None
    assert [e.payload for e in events] == payloads


def test_truncated_stream_gives_no_event_until_complete():
    i, r = open_pair()
    payload = os.urandom(CHUNK + 100)  # two records
    i.send_message(payload)
    wire = bytes(i.data_to_send())
    for n in range(len(wire) - 1):
        r.receive_data(wire[n : n + 1])
        assert r.next_event() is None
    assert 0 < r.buffered_bytes < len(wire)
    r.receive_data(wire[-1:])
    assert r.next_event() == Message(payload)
    assert r.buffered_bytes == 0


def test_handshake_truncated_byte_by_byte():
    i, r = make_pair()
    i.initiate()
    msg1 = bytes(i.data_to_send())
    for b in msg1:
        assert r.next_event() is None
        r.receive_data(bytes([b]))
    msg2 = bytes(r.data_to_send())
    for n, b in enumerate(msg2):
        i.receive_data(bytes([b]))
        ev = i.next_event()
        assert (ev is None) == (n < len(msg2) - 1)
    assert isinstance(ev, HandshakeComplete)


# --------------------------------------------------------------------------- integrity


def test_replayed_record_is_rejected():
    i, r = open_pair()
    i.send_message(b"pay 10 coins")
    record = bytes(i.data_to_send())
    r.receive_data(record)
    assert r.next_event() == Message(b"pay 10 coins")
    r.receive_data(record)
    with pytest.raises(DecryptError, match="authentication"):
        r.next_event()


def test_replayed_record_within_a_message_is_rejected():
    i, r = open_pair()
    i.send_message(os.urandom(CHUNK + 10))
    wire = bytes(i.data_to_send())
    first = wire[: 2 + CHUNK + 17]
    r.receive_data(first)
    r.receive_data(first)
    _, err = drain_events(r)
    assert isinstance(err, DecryptError)


def test_reordered_records_are_rejected():
    i, r = open_pair()
    i.send_message(b"first")
    m1 = bytes(i.data_to_send())
    i.send_message(b"second")
    m2 = bytes(i.data_to_send())
    r.receive_data(m2 + m1)
    events, err = drain_events(r)
    assert events == [] and isinstance(err, DecryptError)


def test_dropped_record_is_detected():
    i, r = open_pair()
    i.send_message(b"first")
    i.data_to_send()  # lost
    i.send_message(b"second")
    r.receive_data(i.data_to_send())
    events, err = drain_events(r)
    assert events == [] and isinstance(err, DecryptError)


def test_records_are_bound_to_their_direction():
    i, _r = open_pair()
    i.send_message(b"reflect me")
    wire = i.data_to_send()
    i.receive_data(wire)  # reflected back at the sender
    with pytest.raises(DecryptError):
        i.next_event()


def test_wrong_session_key_fails():
    i1, _r1 = open_pair()
    _i2, r2 = open_pair()
    i1.send_message(b"for session 1")
    r2.receive_data(i1.data_to_send())
    with pytest.raises(DecryptError):
        r2.next_event()


def _tamper_run(direction: str, offset: int, deterministic: bool = True):
    """Handshake then one message each way, with one bit flipped at ``offset`` of one stream.

    Returns (messages delivered to i, messages delivered to r, errors raised)."""
    i, r = make_pair(deterministic=deterministic)
    sent = {"i2r": 0, "r2i": 0}
    delivered = {"i": [], "r": []}
    errors = []
    done = {"i": False, "r": False}

    def transfer(src, dst, name):
        data = bytearray(src.data_to_send())
        start = sent[name]
        sent[name] += len(data)
        if name == direction and start <= offset < start + len(data):
            data[offset - start] ^= 0x04
        if data:
            try:
                dst.receive_data(data)
            except SessionError as exc:
                errors.append(exc)

    def poll(conn, who):
        while True:
            try:
                ev = conn.next_event()
            except SessionError as exc:
                errors.append(exc)
                return
            if ev is None:
                return
            if isinstance(ev, HandshakeComplete) and not done[who]:
                done[who] = True
                try:
                    conn.send_message(f"from {who}".encode())
                except SessionError as exc:  # a fault is already pending: connection is dead
                    errors.append(exc)
            elif isinstance(ev, Message):
                delivered[who].append(ev.payload)

    i.initiate()
    for _ in range(4):
        transfer(i, r, "i2r")
        poll(r, "r")
        transfer(r, i, "r2i")
        poll(i, "i")
    for conn, who in ((i, "i"), (r, "r")):
        try:
            conn.receive_data(b"")
        except SessionError as exc:
            errors.append(exc)
        poll(conn, who)
    return delivered, errors, sent


def test_untampered_run_is_clean():
    delivered, errors, sent = _tamper_run("none", -1)
    assert errors == []
    assert delivered == {"i": [b"from r"], "r": [b"from i"]}
    assert sent["i2r"] > 100 and sent["r2i"] > 100


@pytest.mark.parametrize("direction", ["i2r", "r2i"])
def test_tampered_byte_anywhere_is_detected(direction):
    _, _, sent = _tamper_run("none", -1)
    for offset in range(sent[direction]):
        delivered, errors, _ = _tamper_run(direction, offset)
        assert errors, f"{direction} byte {offset} flipped without error"
        assert all(isinstance(e, SessionError) for e in errors)
        for who, msgs in delivered.items():
            assert msgs in ([], [f"from {'r' if who == 'i' else 'i'}".encode()]), (offset, msgs)
        # the tampered direction never delivers its message
        victim = "r" if direction == "i2r" else "i"
        assert delivered[victim] == [], f"{direction} byte {offset}: tampered data accepted"


# --------------------------------------------------------------------------- limits


def test_oversize_record_length_rejected_before_buffering():
    _, r = open_pair(r_kwargs={"max_record_size": 1024})
    r.receive_data(struct.pack(">H", 1025))
    with pytest.raises(FrameTooLarge, match="max_record_size"):
        r.next_event()
    assert r.buffered_bytes == 0
    # same when the oversized header arrives together with a body
    _i, r = open_pair(r_kwargs={"max_record_size": 1024})
    r.receive_data(struct.pack(">H", 60_000) + b"\x00" * 60_000)
    _, err = drain_events(r)
    assert isinstance(err, FrameTooLarge) and r.buffered_bytes == 0


def test_small_record_size_interoperates_when_both_agree():
    i, r = open_pair(max_record_size=256)
    payload = os.urandom(10_000)
    i.send_message(payload)
    wire = i.data_to_send()
    assert len(wire) == 10_000 + -(-10_000 // (256 - 17)) * RECORD_OVERHEAD
    r.receive_data(wire)
    assert r.next_event() == Message(payload)


def test_oversize_message_rejected_without_buffering_it():
    limit = 150_000
    i, r = open_pair(r_kwargs={"max_message_size": limit})
    assert roundtrip(i, r, os.urandom(limit)) is not None  # exactly at the limit is fine
    i.send_message(os.urandom(limit + 1))
    wire = bytes(i.data_to_send())
    peak = 0
    err = None
    for pos in range(0, len(wire), 4096):
        r.receive_data(wire[pos : pos + 4096])
        peak = max(peak, r.buffered_bytes)
        _, err = drain_events(r)
        if err:
            break
    assert isinstance(err, FrameTooLarge), err
    assert peak <= limit
    # the error fires at the header of the third record, before its body arrives
    third_header = 2 * (2 + CHUNK + 17)
    assert pos <= third_header + 2


def test_send_refuses_messages_above_the_local_limit():
    i, _ = open_pair(max_message_size=1000)
    with pytest.raises(FrameTooLarge):
        i.send_message(b"x" * 1001)


def test_zero_and_short_record_lengths_are_protocol_errors():
    for length in (0, 1, 16):
        _, r = open_pair()
        r.receive_data(struct.pack(">H", length) + b"\x00" * length)
        with pytest.raises(ProtocolError):
            r.next_event()


def test_reserved_flag_bits_are_rejected():
    i, r = open_pair()
    aead = i._send_aead
    body = aead.encrypt(bytes(12), b"\x03payload", None)
    r.receive_data(struct.pack(">H", len(body)) + body)
    with pytest.raises(ProtocolError, match="reserved"):
        r.next_event()


def test_empty_non_fin_record_is_rejected():
    i, r = open_pair()
    body = i._send_aead.encrypt(bytes(12), b"\x00", None)
    r.receive_data(struct.pack(">H", len(body)) + body)
    with pytest.raises(ProtocolError, match="empty"):
        r.next_event()


def test_nonce_exhaustion_refuses_to_send():
    i, r = open_pair()
    i._send_nonce = r._recv_nonce = MAX_NONCE - 2
    assert roundtrip(i, r, b"second to last nonce") == b"second to last nonce"
    assert i._send_nonce == MAX_NONCE - 1
    with pytest.raises(ProtocolError, match="exhausted"):
        i.send_message(b"would use 2^64-1")
    assert i.data_to_send() == b""


def test_multi_record_message_near_nonce_limit_is_refused_whole():
    i, _ = open_pair()
    i._send_nonce = MAX_NONCE - 2
    with pytest.raises(ProtocolError, match="exhausted"):
        i.send_message(b"x" * (CHUNK + 1))  # needs two nonces: 2^64-2 and 2^64-1
    assert i.data_to_send() == b""


# --------------------------------------------------------------------------- lifecycle


def test_clean_eof_gives_connection_closed():
    i, r = open_pair()
    i.send_message(b"bye")
    r.receive_data(i.data_to_send())
    r.receive_data(b"")
    assert r.next_event() == Message(b"bye")
    assert r.next_event() == ConnectionClosed()
    assert r.next_event() is None
    assert r.closed
    with pytest.raises(ProtocolError, match="after EOF"):
        r.receive_data(b"more")


def test_eof_mid_record_and_mid_message_are_errors():
    i, r = open_pair()
    i.send_message(b"cut short")
    r.receive_data(bytes(i.data_to_send())[:-1])
    r.receive_data(b"")
    with pytest.raises(ProtocolError, match="middle of a record"):
        r.next_event()
    i, r = open_pair()
    i.send_message(os.urandom(CHUNK + 1))
    r.receive_data(bytes(i.data_to_send())[: 2 + CHUNK + 17])
    r.receive_data(b"")
    with pytest.raises(ProtocolError, match="middle of a message"):
        r.next_event()


def test_events_before_a_fault_are_delivered_then_the_connection_is_dead():
    i, r = open_pair()
    i.send_message(b"good")
    good = bytes(i.data_to_send())
    i.send_message(b"bad")
    bad = bytearray(i.data_to_send())
    bad[-1] ^= 1
    r.receive_data(good + bad)
    assert r.next_event() == Message(b"good")
    with pytest.raises(DecryptError):
        r.next_event()
    for call in (
        r.next_event,
        lambda: r.receive_data(b"x"),
        lambda: r.send_message(b"x"),
    ):
        with pytest.raises(DecryptError):
            call()
    assert r._recv_aead is None and r._send_aead is None  # key material dropped


def test_api_misuse():
    i, r = make_pair()
    with pytest.raises(ProtocolError, match="before the handshake"):
        i.send_message(b"too early")
    with pytest.raises(ProtocolError):  # dead now
        i.initiate()
    with pytest.raises(ProtocolError, match="initiator"):
        r.initiate()
    i, _ = make_pair()
    with pytest.raises(ProtocolError, match="initiate"):
        i.receive_data(b"\x00")
    i, _ = make_pair()
    i.initiate()
    with pytest.raises(ProtocolError, match="only once"):
        i.initiate()
    with pytest.raises(TypeError):
        SecureConnection(b"\x00" * 32, initiator=True)


def test_data_to_send_is_drained_and_owned_by_caller():
    i, _r = open_pair()
    assert i.data_to_send() == b""
    i.send_message(b"one")
    i.send_message(b"two")
    out = i.data_to_send()
    assert isinstance(out, bytearray)
    assert i.data_to_send() == b""
    out[:] = b""  # caller may mutate it freely
    assert i.data_to_send() == b""


def test_receiver_refuses_the_reserved_nonce():
    i, r = open_pair()
    r._recv_nonce = MAX_NONCE  # a peer can never legitimately reach it
    body = i._send_aead.encrypt(struct.pack("<4xQ", MAX_NONCE), b"\x01x", None)
    r.receive_data(struct.pack(">H", len(body)) + body)
    with pytest.raises(ProtocolError, match="exhausted"):
        r.next_event()
