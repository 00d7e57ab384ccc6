"""Publisher signatures: who wrote a manifest, checkable by anyone who holds a device ID.

An encrypted session proves who we talk to, not who wrote what they send: a mirror, a relay
or an attacker that is merely connected can hand over any bytes. So every manifest (the
version record of a resource) carries its publisher's signature, and nothing in it is
believed before the signature is checked.

A signature is three values, carried beside the manifest bytes, never inside them (the
manifest hash names the version and stays what it was)::

    {"x25519": "<64 hex>", "ed25519": "<64 hex>", "sig": "<128 hex>"}

* ``x25519`` and ``ed25519`` are the publisher's public keys; with them anyone recomputes the
  publisher's device ID (``device_id_for``, v2) and compares it with the manifest's
  ``publisher`` field, so the signer *is* the publisher, not merely someone with a key.
* ``sig`` is Ed25519 over ``SIG_DOMAIN || BLAKE3-256(manifest bytes)``: the domain keeps a
  manifest signature from ever being valid as any other kind of Shoal signature.

Verification is ~50 µs (one Ed25519 verify, one BLAKE2b); it runs when an offer arrives and
again at the store boundary before a manifest is committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import ErrorKind, ShoalError
from agent.security.identity import device_id_for, short_device_id

SIG_DOMAIN = b"shoal manifest signature v1\x00"
#: The compact version record a `list` entry carries (agent/store/manifest.py, VersionRecord).
RECORD_DOMAIN = b"shoal version record v1\x00"
_KEYS = frozenset({"x25519", "ed25519", "sig"})


class SignatureError(ShoalError):
    """A manifest's signature is missing, malformed, forged or by someone else."""

    kind = ErrorKind.UNTRUSTED


class Unsigned(SignatureError):
    """The manifest carries no publisher signature (a pre-signing store, or a forgery)."""


class MalformedSignature(SignatureError):
    """The signature block is not three hex fields of the right lengths."""


class SignerMismatch(SignatureError):
    """The signing keys do not hash to the manifest's publisher: someone else signed it."""


class BadSignature(SignatureError):
    """The signature does not verify: forged, or the manifest was changed after signing."""


class Signer(Protocol):
    """What can sign manifests: this device's identity (agent.security.identity.Identity)."""

    @property
    def device_id(self) -> bytes: ...

    @property
    def public_key(self) -> bytes: ...

    @property
    def signing_public(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class PublisherSignature:
    """A publisher's signature over one manifest digest, with the keys that check it."""

    x25519: bytes
    ed25519: bytes
    sig: bytes

    def __post_init__(self) -> None:
        if len(self.x25519) != 32 or len(self.ed25519) != 32 or len(self.sig) != 64:
            raise MalformedSignature("signature: keys are 32 bytes, the signature 64")

    @property
    def signer_id(self) -> bytes:
        """The device ID these keys belong to (v2 derivation)."""
        return device_id_for(self.x25519, self.ed25519)

    def to_obj(self) -> dict[str, str]:
        return {"x25519": self.x25519.hex(), "ed25519": self.ed25519.hex(),
                "sig": self.sig.hex()}

    @classmethod
    def from_obj(cls, obj: object) -> PublisherSignature:
        """Parse a signature block from a peer or the disk; MalformedSignature if bad."""
        if not isinstance(obj, Mapping) or set(obj) != _KEYS:
            raise MalformedSignature("signature must have exactly x25519, ed25519 and sig")
        raw: dict[str, bytes] = {}
        for key, size in (("x25519", 32), ("ed25519", 32), ("sig", 64)):
            value = obj[key]
            if not isinstance(value, str) or len(value) != 2 * size:
                raise MalformedSignature(f"signature {key} must be {2 * size} hex characters")
            try:
                raw[key] = bytes.fromhex(value)
            except ValueError:
                raise MalformedSignature(f"signature {key} is not hex") from None
            if raw[key].hex() != value:
                raise MalformedSignature(f"signature {key} must be lower-case hex")
        return cls(raw["x25519"], raw["ed25519"], raw["sig"])


def _message(digest: bytes, domain: bytes = SIG_DOMAIN) -> bytes:
    if len(digest) != 32:
        raise ValueError("a manifest digest is 32 bytes")
    return domain + digest


def sign_digest(signer: Signer, digest: bytes, domain: bytes = SIG_DOMAIN) -> PublisherSignature:
    """Sign a manifest digest (BLAKE3 of its canonical bytes) as *signer*; *domain*
    RECORD_DOMAIN signs a version record instead."""
    return PublisherSignature(signer.public_key, signer.signing_public,
                              signer.sign(_message(digest, domain)))


def verify_digest(publisher_hex: str, digest: bytes, signature: PublisherSignature | None,
                  what: str = "manifest", domain: bytes = SIG_DOMAIN) -> None:
    """Raise a SignatureError unless *publisher_hex* signed *digest*.

    Order matters: first "are these the publisher's keys" (the ID must be recomputed from
    them, so a valid signature by anyone else is worthless), then the signature itself.
    With a delegation, *publisher_hex* is the delegate's ID (checked by the delegation).
    """
    if signature is None:
        raise Unsigned(f"{what} is not signed by its publisher")
    if signature.signer_id.hex() != publisher_hex:
        raise SignerMismatch(
            f"{what} claims publisher {_short(publisher_hex)} but is signed by "
            f"{short_device_id(signature.signer_id)}")
    try:
        Ed25519PublicKey.from_public_bytes(signature.ed25519).verify(
            signature.sig, _message(digest, domain))
    except (InvalidSignature, ValueError):
        raise BadSignature(f"{what}: the publisher signature does not verify "
                           "(forged, or changed after signing)") from None


def _short(publisher_hex: str) -> str:
    try:
        return short_device_id(bytes.fromhex(publisher_hex))
    except ValueError:
        return publisher_hex[:16]


def holder_keys(signer: Signer) -> bytes:
    """The 64 bytes a record signed by *signer* carries so anyone can check it: the X25519
    key then the Ed25519 key (together they hash to the device ID)."""
    return signer.public_key + signer.signing_public


def verify_holder(holder: bytes, keys: bytes, payload: bytes, signature: bytes) -> bool:
    """True only if *keys* (as :func:`holder_keys` makes them) are *holder*'s and
    *signature* is theirs over *payload* (which the caller domain-separates, as the DHT's
    provider records do). Never raises: a peer's bytes are judged, not trusted."""
    if len(keys) != 64 or len(signature) != 64 or len(holder) != 32:
        return False
    if device_id_for(keys[:32], keys[32:]) != holder:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(keys[32:]).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True
