"""Withdrawals: the publisher's signed statement that a resource is no longer published.

Why signed: `shoal unpublish` must reach holders that fetched or follow the resource, and
they act on it by dropping their copy; a statement that makes devices delete data must come
from the one device allowed to make versions of it. The tombstone names the resource, the
publisher and a version one above the last published one, so (like any version) it is
newer than every copy and a replay of an older version cannot revive the resource where the
tombstone arrived. Only the publisher signs it (a delegate may publish versions, not
withdraw the resource). Carried as::

    {"withdrawal": "<canonical JSON text>", "sig": {"x25519", "ed25519", "sig"}}
    text = {"publisher": "<64 hex>", "resource_id": "<32 hex>", "version": N,
            "withdrawn": <unix s>}

``sig`` is Ed25519 over ``"shoal withdrawal v1" || 0x00 || BLAKE3-256(text)``; the receiver
checks that the signing keys hash to ``publisher`` (signing.verify_digest). Bounded: the
text is at most 512 bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blake3 import blake3

from agent.security.signing import (
    MalformedSignature,
    PublisherSignature,
    SignatureError,
    Signer,
    sign_digest,
    verify_digest,
)

__all__ = ["TOMBSTONE_DOMAIN", "SignedTombstone", "Tombstone", "TombstoneError", "withdraw"]

TOMBSTONE_DOMAIN = b"shoal withdrawal v1\x00"
MAX_TOMBSTONE_BYTES = 512
_KEYS = frozenset({"publisher", "resource_id", "version", "withdrawn"})


class TombstoneError(MalformedSignature):
    """A withdrawal that is malformed (kind untrusted, like every signature failure)."""


def _hex(value: object, what: str, length: int) -> str:
    if not isinstance(value, str) or len(value) != length or any(
            c not in "0123456789abcdef" for c in value):
        raise TombstoneError(f"withdrawal: {what} must be {length} lower-case hex digits")
    return value


def _canonical(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


@dataclass(frozen=True)
class Tombstone:
    """The signed-over fields; constructing one validates them (hostile input)."""

    publisher: str
    resource_id: str
    version: int
    withdrawn: float

    def __post_init__(self) -> None:
        _hex(self.publisher, "publisher", 64)
        _hex(self.resource_id, "resource_id", 32)
        if (not isinstance(self.version, int) or isinstance(self.version, bool)
                or not 2 <= self.version < 2**53):
            raise TombstoneError("withdrawal: version must be an integer >= 2")
        if (not isinstance(self.withdrawn, (int, float)) or isinstance(self.withdrawn, bool)
                or not math.isfinite(self.withdrawn) or not 0 <= self.withdrawn < 1e11):
            raise TombstoneError("withdrawal: withdrawn must be a time in seconds")

    def to_obj(self) -> dict[str, Any]:
        return {"publisher": self.publisher, "resource_id": self.resource_id,
                "version": self.version, "withdrawn": self.withdrawn}

    def to_bytes(self) -> bytes:
        return _canonical(self.to_obj())

    @property
    def digest(self) -> bytes:
        return blake3(self.to_bytes()).digest()


@dataclass(frozen=True)
class SignedTombstone:
    tombstone: Tombstone
    signature: PublisherSignature

    def to_obj(self) -> dict[str, object]:
        return {"withdrawal": self.tombstone.to_bytes().decode("ascii"),
                "sig": self.signature.to_obj()}

    @classmethod
    def from_obj(cls, obj: object) -> SignedTombstone:
        """Parse (not verify) a withdrawal from a peer or a file; TombstoneError if bad."""
        if not isinstance(obj, Mapping) or set(obj) != {"withdrawal", "sig"} or not isinstance(
                obj["withdrawal"], str) or len(obj["withdrawal"]) > MAX_TOMBSTONE_BYTES:
            raise TombstoneError("withdrawal must be {withdrawal, sig} (at most 512 bytes)")
        try:
            raw = json.loads(obj["withdrawal"], parse_constant=_no_constant)
            sig = PublisherSignature.from_obj(obj["sig"])
        except (ValueError, SignatureError):
            raise TombstoneError("withdrawal: malformed text or signature block") from None
        if not isinstance(raw, dict) or set(raw) != _KEYS:
            raise TombstoneError("withdrawal: wrong keys")
        t = Tombstone(raw["publisher"], raw["resource_id"], raw["version"], raw["withdrawn"])
        if t.to_bytes() != obj["withdrawal"].encode("ascii", "replace"):
            raise TombstoneError("withdrawal: not in canonical form")
        return cls(t, sig)

    def verify(self) -> None:
        """Raise a SignatureError unless the publisher itself signed this withdrawal."""
        t = self.tombstone
        verify_digest(t.publisher, t.digest, self.signature,
                      f"withdrawal of {t.resource_id[:12]}", TOMBSTONE_DOMAIN)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def withdraw(signer: Signer, resource_id: str, last_version: int,
             now: float) -> SignedTombstone:
    """The publisher's withdrawal of its resource, one version above *last_version*."""
    t = Tombstone(signer.device_id.hex(), resource_id, last_version + 1, float(now))
    return SignedTombstone(t, sign_digest(signer, t.digest, TOMBSTONE_DOMAIN))
