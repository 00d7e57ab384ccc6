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
