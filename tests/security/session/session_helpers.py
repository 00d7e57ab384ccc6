"""Shared helpers for the session tests (imported as a plain module, not a conftest)."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.security.session import HandshakeComplete, SecureConnection, SessionError


def key(label: str) -> X25519PrivateKey:
    """Deterministic X25519 key derived from a label (tests only)."""
    return X25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def pub(k: X25519PrivateKey) -> bytes:
    return k.public_key().public_bytes_raw()


def fix_ephemeral(conn: SecureConnection, label: str) -> SecureConnection:
    """Pin the ephemeral key of a fresh connection (deterministic transcripts; tests only)."""
    conn._hs._e = key(label)
    return conn


def make_pair(
    *,
    i_payload: bytes = b"init-payload",
    r_payload: bytes = b"resp-payload",
    deterministic: bool = False,
    i_kwargs: dict | None = None,
    r_kwargs: dict | None = None,
    **common,
) -> tuple[SecureConnection, SecureConnection]:
    """An initiator/responder pair (not yet handshaken); ``common`` goes to both sides."""
    i = SecureConnection(
        key("initiator-static"),
        initiator=True,
        local_payload=i_payload,
        **{**common, **(i_kwargs or {})},
    )
    r = SecureConnection(
        key("responder-static"),
        initiator=False,
        local_payload=r_payload,
        **{**common, **(r_kwargs or {})},
    )
    if deterministic:
        fix_ephemeral(i, "initiator-ephemeral")
        fix_ephemeral(r, "responder-ephemeral")
    return i, r


def pump(src: SecureConnection, dst: SecureConnection) -> int:
    data = src.data_to_send()
    if data:
        dst.receive_data(data)
    return len(data)


def handshake(
    i: SecureConnection, r: SecureConnection
) -> tuple[HandshakeComplete, HandshakeComplete]:
    i.initiate()
    pump(i, r)
    assert r.next_event() is None
    pump(r, i)
    ev_i = i.next_event()
    pump(i, r)
    ev_r = r.next_event()
    assert isinstance(ev_i, HandshakeComplete), ev_i
    assert isinstance(ev_r, HandshakeComplete), ev_r
    return ev_i, ev_r


def open_pair(**kwargs) -> tuple[SecureConnection, SecureConnection]:
    i, r = make_pair(**kwargs)
    handshake(i, r)
    return i, r


def drain_events(conn: SecureConnection) -> tuple[list, SessionError | None]:
    """All events until None or an error; returns (events, error)."""
    events = []
    while True:
        try:
            ev = conn.next_event()
        except SessionError as exc:
            return events, exc
        if ev is None:
            return events, None
        events.append(ev)
