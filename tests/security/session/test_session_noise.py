"""Noise_XX_25519_ChaChaPoly_BLAKE2s: published vectors, known answers, primitives."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from session_helpers import key, make_pair, pub

from agent.security.session import HandshakeComplete, HandshakeError, ProtocolError
from agent.security.session.noise import (
    MAX_NONCE,
    PROTOCOL_NAME,
    CipherState,
    DecryptError,
    HandshakeState,
    SymmetricState,
    _hkdf,
)

REPO = Path(__file__).resolve().parents[3]


def _vector_file() -> Path | None:
    """The cacophony vector file (JSON) is third-party data and is not shipped in this repo.

    Point SHOAL_NOISE_VECTORS at it, or place it at one of the candidate paths below (the
    cacophony repository's ``vectors/cacophony.txt``; snow ships the same file).
    """
    candidates = [
        os.environ.get("SHOAL_NOISE_VECTORS", ""),
        REPO.parent / "shared" / "vectors" / "noise" / "cacophony.txt",
        REPO.parent / "shared" / "vectors" / "cacophony.txt",
        REPO / "tests" / "session" / "vectors" / "cacophony.txt",
    ]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


def test_cacophony_vectors_xx_25519_chachapoly_blake2s():
    path = _vector_file()
    if path is None:
        pytest.skip("cacophony vectors not available (set SHOAL_NOISE_VECTORS=path/cacophony.txt)")
    data = json.loads(path.read_text())
    vectors = [v for v in data["vectors"] if v.get("protocol_name") == PROTOCOL_NAME.decode()]
    assert vectors, f"no {PROTOCOL_NAME.decode()} vectors in {path}"
    h = bytes.fromhex
    for v in vectors:
        i = HandshakeState(
            X25519PrivateKey.from_private_bytes(h(v["init_static"])),
            initiator=True,
            prologue=h(v["init_prologue"]),
            ephemeral=X25519PrivateKey.from_private_bytes(h(v["init_ephemeral"])),
        )
        r = HandshakeState(
            X25519PrivateKey.from_private_bytes(h(v["resp_static"])),
            initiator=False,
            prologue=h(v["resp_prologue"]),
            ephemeral=X25519PrivateKey.from_private_bytes(h(v["resp_ephemeral"])),
        )
        for n, m in enumerate(v["messages"]):
            sender, receiver = (i, r) if n % 2 == 0 else (r, i)
            payload, expected = h(m["payload"]), h(m["ciphertext"])
            if n < 3:
                assert sender.write_message(payload) == expected, f"handshake message {n}"
                assert receiver.read_message(expected) == payload
            else:
                assert sender.split()[0].encrypt_with_ad(b"", payload) == expected, f"msg {n}"
                assert receiver.split()[1].decrypt_with_ad(b"", expected) == payload
        assert i.handshake_hash == r.handshake_hash == h(v["handshake_hash"])
        assert i.remote_static == r.local_static and r.remote_static == i.local_static


def test_hkdf_matches_rfc5869_hkdf_blake2s():
    # Noise's HKDF (§4.3) is RFC 5869 with salt=ck and empty info; cross-check it against
    # cryptography's independent HKDF/HMAC implementation.
    ck = hashlib.sha256(b"ck").digest()
    for ikm in (b"", b"\x01" * 32, bytes(range(77))):
        expected = HKDF(algorithm=hashes.BLAKE2s(32), length=96, salt=ck, info=b"").derive(ikm)
        assert b"".join(_hkdf(ck, ikm, 3)) == expected
        assert b"".join(_hkdf(ck, ikm, 2)) == expected[:64]


def test_initial_hash_is_blake2s_of_protocol_name():
    # len(name) == 33 > HASHLEN, so h = HASH(name) (§5.2 InitializeSymmetric).
    ss = SymmetricState()
    assert ss.h == ss.ck == hashlib.blake2s(b"Noise_XX_25519_ChaChaPoly_BLAKE2s").digest()


def test_cipher_state_nonce_encoding_and_limit():
    k = bytes(range(32))
    cs = CipherState(k)
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    ref = ChaCha20Poly1305(k)
    assert cs.encrypt_with_ad(b"ad", b"x") == ref.encrypt(bytes(12), b"x", b"ad")
    assert cs.encrypt_with_ad(b"ad", b"x") == ref.encrypt(
        bytes(4) + (1).to_bytes(8, "little"), b"x", b"ad"
    )
    cs.n = MAX_NONCE - 1
    cs.encrypt_with_ad(b"", b"last")  # uses 2^64-2
    with pytest.raises(ProtocolError, match="exhausted"):
        cs.encrypt_with_ad(b"", b"too far")
    dec = CipherState(k)
    with pytest.raises(DecryptError):
        dec.decrypt_with_ad(b"", b"\x00" * 20)
    assert dec.n == 0  # a failed decryption does not advance the nonce


# Frozen transcript of this implementation with fixed keys (regression guard). It was produced
# after the implementation matched the cacophony vectors byte for byte.
KAT_HANDSHAKE_HASH = "c6039d0ae537050b4176969a3bec4b1e38d279693f87bae671a25297b348f808"
KAT_I2R_SHA256 = "ce96271ac1bb9822ed36ab4ceabbdb26879f690854456b19edc7dc2bb0b08797"
KAT_R2I_SHA256 = "49ca51c6ef9470c2987fb2aa5656d6e9361d5e6e56710a70c4d0236ead21dc09"


def _deterministic_transcript(prologue: bytes = b"shoal/1") -> tuple[bytes, bytes, bytes]:
    i, r = make_pair(deterministic=True, prologue=prologue)
    i2r, r2i = bytearray(), bytearray()
    i.initiate()
    for src, dst, log in ((i, r, i2r), (r, i, r2i), (i, r, i2r)):
        data = src.data_to_send()
        log += data
        dst.receive_data(data)
    ev_i, ev_r = i.next_event(), r.next_event()
    assert isinstance(ev_i, HandshakeComplete) and isinstance(ev_r, HandshakeComplete)
    i.send_message(b"hello shoal")
    r.send_message(b"")
    i2r += i.data_to_send()
    r2i += r.data_to_send()
    return ev_i.handshake_hash, bytes(i2r), bytes(r2i)


def test_fixed_ephemeral_keys_give_the_frozen_transcript():
    hh, i2r, r2i = _deterministic_transcript()
    assert (len(i2r), len(r2i)) == (34 + 78 + 30, 110 + 19)
    assert i2r[:2] == b"\x00\x20" and i2r[2:34] == pub(key("initiator-ephemeral"))
    assert hh.hex() == KAT_HANDSHAKE_HASH
    assert hashlib.sha256(i2r).hexdigest() == KAT_I2R_SHA256
    assert hashlib.sha256(r2i).hexdigest() == KAT_R2I_SHA256


def test_transcript_is_deterministic_and_bound_to_the_prologue():
    assert _deterministic_transcript() == _deterministic_transcript()
    hh1, _, _ = _deterministic_transcript(b"shoal/1")
    hh2, _, _ = _deterministic_transcript(b"shoal/2")
    assert hh1 != hh2


def test_handshake_state_interop_and_split_directions():
    i = HandshakeState(key("a"), initiator=True, prologue=b"p")
    r = HandshakeState(key("b"), initiator=False, prologue=b"p")
    assert r.read_message(i.write_message(b"")) == b""
    assert i.read_message(r.write_message(b"two")) == b"two"
    assert r.read_message(i.write_message(b"three")) == b"three"
    assert i.complete and r.complete and i.handshake_hash == r.handshake_hash
    assert i.remote_static == pub(key("b")) and r.remote_static == pub(key("a"))
    i_send, i_recv = i.split()
    r_send, r_recv = r.split()
    assert r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"i->r")) == b"i->r"
    assert i_recv.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", b"r->i")) == b"r->i"
    assert i_send.key != i_recv.key


def test_handshake_state_turn_order_is_enforced():
    i = HandshakeState(key("a"), initiator=True)
    with pytest.raises(ProtocolError):
        i.read_message(b"\x00" * 32)
    r = HandshakeState(key("b"), initiator=False)
    with pytest.raises(ProtocolError):
        r.write_message(b"")


def test_low_order_ephemeral_is_rejected():
    r = HandshakeState(key("b"), initiator=False)
    r.read_message(bytes(32))  # the all-zero point: DH output would be all zeros
    with pytest.raises(HandshakeError, match="invalid X25519"):
        r.write_message(b"")
