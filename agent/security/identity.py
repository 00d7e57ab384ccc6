"""Device identity: a long-lived X25519 key pair, an Ed25519 signing key, and the device ID.

The X25519 key authenticates the device in every Noise session (TCP and BLE); the Ed25519
key signs what the device publishes (manifests, see agent/security/signing.py). The device ID
commits to both public keys::

    device ID (v2) = BLAKE2b-256("shoal device id v2" || 0x00 || x25519_pub || ed25519_pub)

so anyone holding an ID can check that a pair of keys belongs to it: a session proves the
X25519 half (Noise), a signature proves the Ed25519 half, and the hash binds them together.

Identities created before signing existed (one X25519 key, ID v1 = BLAKE2b-256(x25519_pub))
are migrated when loaded: an Ed25519 key is generated and written next to the X25519 key
(atomic rewrite, mode 0600); the device ID becomes the v2 ID. Peers recognise the device by
its unchanged X25519 key (see TrustStore.recognise).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.errors import ErrorKind, ShoalError
from agent.fsutil import atomic_write_bytes
from agent.log import kv

log = logging.getLogger("shoal.identity")

KEY_FILE = "identity.pem"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DISPLAY_BYTES = 20  # 160 bits shown to people: 32 base32 characters


class IdentityError(ShoalError):
    """The identity key is missing, unreadable, unsafe or malformed."""

    kind = ErrorKind.INVALID


ID_DOMAIN = b"shoal device id v2\x00"
_PEM_END = b"-----END PRIVATE KEY-----"


def device_id_for(public_key: bytes, signing_key: bytes | None = None) -> bytes:
    """The device ID of a device with X25519 key *public_key* and Ed25519 key *signing_key*.

    v2 (both keys): BLAKE2b-256(ID_DOMAIN || x25519 || ed25519). Without *signing_key*: the
    legacy v1 ID, BLAKE2b-256(x25519), of agents that predate signing (see legacy_device_id).
    The domain prefix keeps a v2 ID from ever equalling a v1 ID.
    """
    if len(public_key) != 32:
        raise ValueError("an X25519 public key is 32 bytes")
    if signing_key is None:
        return legacy_device_id(public_key)
    if len(signing_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return hashlib.blake2b(ID_DOMAIN + public_key + signing_key, digest_size=32).digest()


def legacy_device_id(public_key: bytes) -> bytes:
    """The v1 device ID: BLAKE2b-256 of the X25519 public key alone (before signing keys)."""
    if len(public_key) != 32:
        raise ValueError("an X25519 public key is 32 bytes")
    return hashlib.blake2b(public_key, digest_size=32).digest()


def _luhn32(chars: str) -> str:
    """Luhn mod 32 check character: catches any single typo and most adjacent swaps."""
    factor, total, n = 2, 0, len(_B32)
    for ch in reversed(chars):
        addend = factor * _B32.index(ch)
        factor = 1 if factor == 2 else 2
        total += addend // n + addend % n
    return _B32[(n - total % n) % n]


def format_device_id(device_id: bytes) -> str:
    """Human form: 8 groups of 4 base32 characters and a check character.

    Example: ``MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E4ZT-K``.
    """
    body = base64.b32encode(device_id[:_DISPLAY_BYTES]).decode("ascii")
    groups = [body[i : i + 4] for i in range(0, len(body), 4)]
    return "-".join([*groups, _luhn32(body)])


def short_device_id(device_id: bytes) -> str:
    """The first two groups: enough to tell devices apart on one screen."""
    return format_device_id(device_id)[:9]


def parse_device_id(text: str) -> bytes:
    """Parse the human form back to the 20-byte display prefix, checking the check character."""
    cleaned = text.strip().upper().replace("-", "").replace(" ", "")
    if len(cleaned) != 33 or any(c not in _B32 for c in cleaned):
        raise ValueError(
            f"not a device ID: {text!r} (expected 8 groups of 4 letters/digits 2-7 and a check "
            "character, e.g. MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E4ZT-K)"
        )
    body, check = cleaned[:32], cleaned[32]
    if _luhn32(body) != check:
        raise ValueError(f"device ID {text!r} has a wrong check character: is there a typo?")
    return base64.b32decode(body)


def _raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _pem(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Identity:
    """This device's keys (X25519 for sessions, Ed25519 for signatures) and derived ID."""

    private_key: X25519PrivateKey
    public_key: bytes
    device_id: bytes
    signing_key: Ed25519PrivateKey
    signing_public: bytes

    @classmethod
    def from_private(cls, key: X25519PrivateKey,
                     signing_key: Ed25519PrivateKey | None = None) -> Identity:
        sk = signing_key if signing_key is not None else Ed25519PrivateKey.generate()
        pub, spub = _raw_public(key), _raw_public(sk)
        return cls(key, pub, device_id_for(pub, spub), sk, spub)

    @classmethod
    def generate(cls) -> Identity:
        return cls.from_private(X25519PrivateKey.generate(), Ed25519PrivateKey.generate())

    @property
    def legacy_id(self) -> bytes:
        """The v1 ID this device had before it had a signing key (migration only)."""
        return legacy_device_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of *message* (callers domain-separate what they sign)."""
        return self.signing_key.sign(message)

    def to_pem(self) -> bytes:
        """identity.pem: the X25519 key, then the Ed25519 key, both PKCS#8 PEM."""
        return _pem(self.private_key) + _pem(self.signing_key)

    @property
    def display_id(self) -> str:
        return format_device_id(self.device_id)

    @property
    def short_id(self) -> str:
        return short_device_id(self.device_id)

    @property
    def hex_id(self) -> str:
        return self.device_id.hex()


def load_or_create_identity(data_dir: Path) -> tuple[Identity, bool]:
    """Load the key from *data_dir*, creating it (mode 0600) on first start.

    Returns (identity, created). Refuses a key file that others can read, as ssh does.
    """
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ident = Identity.generate()
        atomic_write_bytes(path, ident.to_pem(), mode=0o600)
        return ident, True
    try:
        st = os.stat(path)
    except OSError as e:
        raise IdentityError(f"cannot read identity key {path}: {e.strerror}") from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"identity key {path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o});"
            f" run: chmod 600 {path}"
        )
    try:
        blocks = [b + _PEM_END for b in path.read_bytes().split(_PEM_END) if b.strip()]
        keys = [serialization.load_pem_private_key(b, password=None) for b in blocks]
    except (ValueError, TypeError, OSError) as e:
        raise IdentityError(f"identity key {path} is unreadable or corrupt: {e}") from e
    if not keys or len(keys) > 2 or not isinstance(keys[0], X25519PrivateKey):
        raise IdentityError(f"identity key {path} is not an X25519 key")
    if len(keys) == 2:
        if not isinstance(keys[1], Ed25519PrivateKey):
            raise IdentityError(f"identity key {path}: the second key is not an Ed25519 key")
        return Identity.from_private(keys[0], keys[1]), False
    # A v1 identity (X25519 only): add a signing key, keep the X25519 key peers know us by.
    ident = Identity.from_private(keys[0])
    atomic_write_bytes(path, ident.to_pem(), mode=0o600)
    log.warning("identity upgraded: signing key added, device ID is now v2", extra=kv(
        old_id=format_device_id(ident.legacy_id), new_id=ident.display_id))
    return ident, False
