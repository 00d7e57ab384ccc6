import pytest

from agent.security.pairing import (
    PairingBook,
    PairingError,
    format_code,
    normalize_code,
    pairing_code,
)


def test_code_is_six_digits_and_binds_transcript():
    a = pairing_code(b"\x01" * 32)
    b = pairing_code(b"\x02" * 32)
    assert len(a) == 6 and a.isdigit()
    assert a != b
    assert pairing_code(b"\x01" * 32) == a
    assert format_code("123456") == "123 456"


def test_normalize_code():
    assert normalize_code("123 456") == "123456"
    assert normalize_code("123-456") == "123456"
    for bad in ("12345", "abcdef", "1234567"):
        with pytest.raises(ValueError):
            normalize_code(bad)


def _add(book, now, incoming=True, h=b"h" * 32):
    return book.add(peer_id=b"p" * 32, peer_public_key=b"k" * 32, peer_name="kitchen",
                    handshake_hash=h, incoming=incoming, now=now)


def test_incoming_needs_open_window():
    book = PairingBook(window_seconds=60, max_pending=2)
    with pytest.raises(PairingError, match="not accepting pairing"):
        _add(book, 0.0)
    book.open_window(0.0)
    p = _add(book, 1.0)
    assert not p.complete
    p.local_confirmed = True
    assert not p.complete
    p.remote_confirmed = True
    assert p.complete


def test_outgoing_needs_no_window_and_limits_apply():
    book = PairingBook(window_seconds=60, max_pending=2)
    _add(book, 0.0, incoming=False, h=b"a" * 32)
    _add(book, 0.0, incoming=False, h=b"b" * 32)
    with pytest.raises(PairingError, match="too many"):
        _add(book, 0.0, incoming=False, h=b"c" * 32)


def test_pending_expires_and_find_by_code():
    book = PairingBook(window_seconds=10, max_pending=4)
    p = _add(book, 0.0, incoming=False)
    assert book.find_by_code(p.code) is p
    book.expire(11.0)
    assert p.cancelled and "timed out" in p.cancelled
    with pytest.raises(PairingError, match="no pending pairing"):
        book.find_by_code(p.code)


def test_a_new_request_from_a_device_replaces_its_pending_one():
    book = PairingBook(window_seconds=60, max_pending=2)
    book.open_window(0.0)
    first = _add(book, 1.0, h=b"a" * 32)
    second = _add(book, 2.0, h=b"b" * 32)  # same device, another session
    assert first.cancelled and not second.cancelled
    assert book.active() == [second]
    other = book.add(peer_id=b"q" * 32, peer_public_key=b"k" * 32, peer_name="hall",
                     handshake_hash=b"c" * 32, incoming=True, now=3.0)
    assert book.active() == [second, other]


def test_finished_entries_are_bounded():
    from agent.security.pairing import FINISHED_KEPT_PER_PENDING

    book = PairingBook(window_seconds=60, max_pending=2)
    book.open_window(0.0)
    for i in range(100):
        last = _add(book, 1.0, h=bytes([i]) * 32)
    assert len(book.pending) <= FINISHED_KEPT_PER_PENDING * 2 + 1
    assert book.active() == [last]


def test_close_window_refuses_new_requests_and_cancels_unconfirmed_incoming():
    book = PairingBook(window_seconds=60, max_pending=4)
    book.open_window(0.0)
    waiting = _add(book, 1.0, h=b"a" * 32)
    confirmed = book.add(peer_id=b"q" * 32, peer_public_key=b"k" * 32, peer_name="hall",
                         handshake_hash=b"b" * 32, incoming=True, now=1.0)
    confirmed.local_confirmed = True  # the user here already said yes: left to finish
    outgoing = _add(book, 1.0, incoming=False, h=b"c" * 32)
    was_open, cancelled = book.close_window(2.0)
    assert was_open and cancelled == [waiting] and waiting.cancelled
    assert book.active() == [confirmed, outgoing]
    with pytest.raises(PairingError, match="not accepting"):
        _add(book, 3.0, h=b"d" * 32)
    assert book.close_window(3.0) == (False, [])


def _from(book, now, who: bytes, h: bytes, incoming=True):
    return book.add(peer_id=who * 32, peer_public_key=b"k" * 32, peer_name=who.decode(),
                    handshake_hash=h * 32, incoming=incoming, now=now)


def test_a_waiter_sees_only_pairings_newer_than_it():
    """`shoal pair` waiting must show the request that arrives after it started, not an
    older one still pending (the first hour walkthrough saw the older one)."""
    book = PairingBook(window_seconds=60, max_pending=4)
    book.open_window(0.0)
    old = _from(book, 1.0, b"o", b"1")
    after = book.last_seq
    assert after == old.seq and book.newer_incoming(after) is None
    assert book.newer_incoming(0) is old  # no mark: any pairing in progress
    _from(book, 2.0, b"m", b"2", incoming=False)  # our own outgoing one is not a request
    assert book.newer_incoming(after) is None
    new = _from(book, 3.0, b"n", b"3")
    assert new.seq > old.seq and book.newer_incoming(after) is new
    other = _from(book, 4.0, b"x", b"4")
    assert book.newer_incoming(after, other.code) is other  # the one showing the code
    assert book.newer_incoming(after, "000000" if "000000" not in (new.code, other.code)
                               else "999999") is None


def test_declined_pairings_leave_the_pending_list():
    book = PairingBook(window_seconds=60, max_pending=4)
    book.open_window(0.0)
    p = _from(book, 1.0, b"a", b"1")
    assert book.active() == [p]
    assert book.decline(p.pairing_id, "declined on this device") is p
    assert p.cancelled == "declined on this device" and book.active() == []
    assert book.newer_incoming(0) is None
    book.decline(p.pairing_id, "again")  # declining twice keeps the first reason
    assert p.cancelled == "declined on this device"
    with pytest.raises(PairingError, match="no such pairing"):
        book.decline("nope", "x")
    done = _from(book, 2.0, b"b", b"2")
    done.local_confirmed = done.remote_confirmed = True
    book.decline(done.pairing_id, "too late")  # a finished pairing stays finished
    assert done.complete and done.cancelled is None
