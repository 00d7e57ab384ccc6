"""Noise_XX_25519_ChaChaPoly_BLAKE2s handshake and cipher states (Noise spec rev 34).

Why not the `noiseprotocol` package: unmaintained since 2020 and we need direct access to the
handshake hash for pairing codes.

Only the pieces Shoal needs are implemented: the XX pattern with X25519, ChaCha20-Poly1305 and
BLAKE2s (HMAC-BLAKE2s based HKDF). There are no PSKs, no fallback and no rekey. The module is
pure computation (no I/O); framing and the transport phase live in
:mod:`agent.security.session.records`.

Section references (§) are to the Noise Protocol Framework, revision 34.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_NONCE",
    "NOISE_MAX_MESSAGE",
    "PROTOCOL_NAME",
    "TAGLEN",
    "CipherState",
    "DecryptError",
    "FrameTooLarge",
    "HandshakeError",
    "HandshakeState",
    "ProtocolError",
    "SessionError",
    "SymmetricState",
    "public_bytes",
]

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2s"
DHLEN = 32
HASHLEN = 32
TAGLEN = 16
NOISE_MAX_MESSAGE = 65535
#: 2^64-1 is reserved by the spec (§5.1); a cipher state refuses to use it.
MAX_NONCE = 2**64 - 1

_nonce_bytes = struct.Struct("<4xQ").pack  # 32 zero bits || 64-bit little-endian counter (§12.3)

# XX: -> e / <- e, ee, s, es / -> s, se   (no pre-messages)
_XX_PATTERN: tuple[tuple[str, ...], ...] = (("e",), ("e", "ee", "s", "es"), ("s", "se"))


# --------------------------------------------------------------------------- errors


class SessionError(Exception):
    """Base class of every error raised by the session layer."""


class HandshakeError(SessionError):
    """The handshake failed (bad/tampered message, wrong prologue, peer closed, timeout)."""


class DecryptError(SessionError):
    """A transport record failed authentication (tampered, replayed, reordered or wrong key)."""


class FrameTooLarge(SessionError):
    """A frame, record or reassembled message exceeds the configured limit."""


class ProtocolError(SessionError):
    """The peer (or the local caller) violated the session protocol."""


# --------------------------------------------------------------------------- primitives


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, hashlib.blake2s)


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """HKDF of §4.3 with HMAC-BLAKE2s; returns 2 or 3 outputs of HASHLEN bytes."""
    temp_key = _hmac(chaining_key, ikm)
    out1 = _hmac(temp_key, b"\x01")
    out2 = _hmac(temp_key, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, _hmac(temp_key, out2 + b"\x03")


def _dh(private: X25519PrivateKey, public_raw: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public_raw))
    except ValueError as exc:  # all-zero shared secret: low-order point
        raise HandshakeError(f"invalid X25519 public key from peer: {exc}") from None


def public_bytes(key: X25519PrivateKey) -> bytes:
    """Raw 32-byte public key of an X25519 private key."""
    return key.public_key().public_bytes_raw()


# --------------------------------------------------------------------------- states


class CipherState:
    """§5.1 CipherState: a ChaCha20-Poly1305 key (or none) and a 64-bit nonce counter."""

    __slots__ = ("_aead", "key", "n")

    def __init__(self, key: bytes | None = None) -> None:
        self.key: bytes | None = None
        self._aead: ChaCha20Poly1305 | None = None
        self.n = 0
        if key is not None:
            self.initialize_key(key)

    def initialize_key(self, key: bytes) -> None:
        self.key = bytes(key)
        self._aead = ChaCha20Poly1305(self.key)
        self.n = 0

    def has_key(self) -> bool:
        return self._aead is not None

    def _next_nonce(self) -> bytes:
        n = self.n
        if n >= MAX_NONCE:
            raise ProtocolError("nonce space exhausted (2^64-1 reached); open a new session")
        self.n = n + 1
        return _nonce_bytes(n)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return bytes(plaintext)
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return bytes(ciphertext)
        n = self.n
        if n >= MAX_NONCE:
            raise ProtocolError("nonce space exhausted (2^64-1 reached); open a new session")
        try:
            plaintext = self._aead.decrypt(_nonce_bytes(n), ciphertext, ad)
        except InvalidTag:
            raise DecryptError("authentication failed") from None
        self.n = n + 1  # only advance on success (§5.1)
        return plaintext


class SymmetricState:
    """§5.2 SymmetricState: chaining key, handshake hash and the handshake cipher state."""

    __slots__ = ("cipher", "ck", "h")

    def __init__(self, protocol_name: bytes = PROTOCOL_NAME) -> None:
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = _hash(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, ikm, 2)
        self.cipher.initialize_key(temp_k)  # HASHLEN == 32: no truncation needed

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = _hkdf(self.ck, b"", 2)
        return CipherState(temp_k1), CipherState(temp_k2)


class HandshakeState:
    """§5.3 HandshakeState for the XX pattern.

    ``write_message`` / ``read_message`` alternate starting with the initiator. After the third
    message :attr:`complete` is true and :meth:`split` returns ``(send, receive)`` cipher states
    for this side. ``ephemeral`` is for test vectors only: never pass it in production.
    """

    def __init__(
        self,
        static_key: X25519PrivateKey,
        *,
        initiator: bool,
        prologue: bytes = b"",
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        if not isinstance(static_key, X25519PrivateKey):
            raise TypeError("static_key must be an X25519PrivateKey")
        self.initiator = bool(initiator)
        self._ss = SymmetricState(PROTOCOL_NAME)
        self._ss.mix_hash(bytes(prologue))
        self._s = static_key
        self._s_pub = public_bytes(static_key)
        self._e = ephemeral
        self._e_pub: bytes | None = None
        self._re: bytes | None = None
        self._rs: bytes | None = None
        self._step = 0  # index into _XX_PATTERN of the next message
        self._split: tuple[CipherState, CipherState] | None = None

    # ------------------------------------------------------------------ introspection

    @property
    def complete(self) -> bool:
        return self._step >= len(_XX_PATTERN)

    @property
    def message_index(self) -> int:
        """Index (0, 1, 2) of the next handshake message; 3 once complete."""
        return self._step

    @property
    def handshake_hash(self) -> bytes:
        """Current handshake hash ``h`` (final and stable once :attr:`complete`)."""
        return self._ss.h

    @property
    def remote_static(self) -> bytes | None:
        return self._rs

    @property
    def local_static(self) -> bytes:
        return self._s_pub

    def is_my_turn(self) -> bool:
        """True if the next message is to be written (not read) by this side."""
        return not self.complete and ((self._step % 2 == 0) == self.initiator)

    # ------------------------------------------------------------------ tokens

    def _dh_token(self, token: str) -> bytes:
        assert self._e is not None and self._re is not None
        if token == "ee":
            return _dh(self._e, self._re)
        # "es": DH(e_initiator, s_responder); "se": DH(s_initiator, e_responder)
        if (token == "es") == self.initiator:
            assert self._rs is not None
            return _dh(self._e, self._rs)
        return _dh(self._s, self._re)

    def write_message(self, payload: bytes = b"") -> bytes:
        if self.complete:
            raise ProtocolError("handshake already complete")
        if not self.is_my_turn():
            raise ProtocolError(f"handshake message {self._step + 1} is the peer's to send")
        ss = self._ss
        out = bytearray()
        for token in _XX_PATTERN[self._step]:
            if token == "e":
                if self._e is None:
                    self._e = X25519PrivateKey.generate()
                self._e_pub = public_bytes(self._e)
                out += self._e_pub
                ss.mix_hash(self._e_pub)
            elif token == "s":
                out += ss.encrypt_and_hash(self._s_pub)
            else:
                ss.mix_key(self._dh_token(token))
        out += ss.encrypt_and_hash(bytes(payload))
        if len(out) > NOISE_MAX_MESSAGE:
            raise FrameTooLarge(f"handshake message of {len(out)} bytes exceeds 65535")
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes | bytearray | memoryview) -> bytes:
        """Process a handshake message and return its payload; raises :class:`HandshakeError`."""
        if self.complete:
            raise ProtocolError("handshake already complete")
        if self.is_my_turn():
            raise ProtocolError(f"handshake message {self._step + 1} is ours to send")
        msg = bytes(message)
        number = self._step + 1
        ss = self._ss
        pos = 0
        try:
            for token in _XX_PATTERN[self._step]:
                if token == "e":
                    if len(msg) - pos < DHLEN:
                        raise HandshakeError(f"handshake message {number} is truncated")
                    self._re = msg[pos : pos + DHLEN]
                    pos += DHLEN
                    ss.mix_hash(self._re)
                elif token == "s":
                    size = DHLEN + (TAGLEN if ss.cipher.has_key() else 0)
                    if len(msg) - pos < size:
                        raise HandshakeError(f"handshake message {number} is truncated")
                    self._rs = ss.decrypt_and_hash(msg[pos : pos + size])
                    pos += size
                else:
                    ss.mix_key(self._dh_token(token))
            if ss.cipher.has_key() and len(msg) - pos < TAGLEN:
                raise HandshakeError(f"handshake message {number} is truncated")
            payload = ss.decrypt_and_hash(msg[pos:])
        except DecryptError:
            raise HandshakeError(
                f"handshake message {number} failed authentication "
                "(tampered, wrong prologue or not a Shoal peer)"
            ) from None
        self._advance()
        return payload

    def _advance(self) -> None:
        self._step += 1
        if self.complete:
            c1, c2 = self._ss.split()
            # c1 carries initiator -> responder traffic, c2 the other direction (§5.3 Split).
            self._split = (c1, c2) if self.initiator else (c2, c1)
            self._e = None  # forget the ephemeral private key

    def split(self) -> tuple[CipherState, CipherState]:
        """``(send, receive)`` cipher states for this side; only after the handshake."""
        if self._split is None:
            raise ProtocolError("handshake not complete")
        return self._split
