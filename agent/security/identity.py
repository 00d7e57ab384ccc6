"""Device identity: a long-lived X25519 key pair and the device ID derived from it.

Why X25519 only: the same static key authenticates the device in every Noise session (TCP and
BLE), so one key is the whole identity; the device ID is a hash of its public half, so a peer
proves its ID simply by completing a handshake.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.errors import ErrorKind, ShoalError
from agent.fsutil import atomic_write_bytes

KEY_FILE = "identity.pem"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DISPLAY_BYTES = 20  # 160 bits shown to people: 32 base32 characters


class IdentityError(ShoalError):
    """The identity key is missing, unreadable, unsafe or malformed."""

    kind = ErrorKind.INVALID


def device_id_for(public_key: bytes) -> bytes:
    """Device ID = BLAKE2b-256 of the raw 32-byte X25519 public key."""
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


@dataclass(frozen=True)
class Identity:
    """This device's key pair and derived ID."""

    private_key: X25519PrivateKey
    public_key: bytes
    device_id: bytes

    @classmethod
    def from_private(cls, key: X25519PrivateKey) -> Identity:
        pub = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(key, pub, device_id_for(pub))

    @classmethod
    def generate(cls) -> Identity:
        return cls.from_private(X25519PrivateKey.generate())

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
        pem = ident.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write_bytes(path, pem, mode=0o600)
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
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as e:
        raise IdentityError(f"identity key {path} is unreadable or corrupt: {e}") from e
    if not isinstance(key, X25519PrivateKey):
        raise IdentityError(f"identity key {path} is not an X25519 key")
    return Identity.from_private(key), False
