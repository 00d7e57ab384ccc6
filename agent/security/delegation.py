"""Delegated signers: a publisher lets another device make new versions of one resource.

Without this only the publisher's own device can ever update what it published; a second
laptop, or a Pi that builds the next release, could not. A **delegation** is a small record,
signed by the publisher's device key, that names one delegate device (its ID and both public
keys), one resource, and a validity window::

    {"delegate": "<64 hex>", "delegate_ed25519": "<64 hex>", "delegate_x25519": "<64 hex>",
     "expires": 1767225600, "issued": 1764633600, "publisher": "<64 hex>",
     "resource_id": "<32 hex>", "serial": 1764633600123}

carried as ``{"delegation": "<canonical JSON text>", "sig": {x25519, ed25519, sig}}``, the
signature being Ed25519 over ``DELEGATION_DOMAIN || BLAKE3-256(text)``. A manifest signed by a
delegate carries its delegation (envelope key ``dlg``); the manifest's ``publisher`` field is
unchanged, so the resource stays (publisher, resource_id).

What a verifier checks (:meth:`SignedDelegation.check`), everything with only the publisher's
device ID in hand:

* the delegation's signing keys hash to the manifest's publisher (the ID commits to its keys,
  so nobody else can issue one; a delegate's own "delegation" is signed by the delegate, so
  **re-delegation** fails here by construction);
* the signature verifies; the delegation names this resource and this publisher;
* the delegate's keys hash to the delegate ID, and they are the keys that signed the
  manifest;
* the window: ``issued - CLOCK_SKEW <= now <= expires + CLOCK_SKEW`` (devices without
  network time drift; 10 minutes either way is tolerated). ``expires - issued`` is at most
  :data:`MAX_DAYS`: a delegation is always short-lived.

**Revocation** is by expiry (default :data:`DEFAULT_DAYS`, at most :data:`MAX_DAYS`): to keep a
delegate, the publisher issues a new delegation before the old one ends; to drop one, it
stops renewing. There is no revocation list: the devices that would need it are offline,
unpaired, or have never met the publisher, so a list could not reach them reliably, and a
bounded lifetime is a guarantee every verifier can check on its own. The ``serial`` (issue
time in milliseconds, unique per publisher device) leaves room for a revocation floor
carried by a later publisher-signed version, if that is ever needed. Versions a delegate
made stay fetchable after the delegation ends once the publisher has re-signed them (its
agent does this for every version of its own resources it holds, at start).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blake3 import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.security.identity import device_id_for, short_device_id
from agent.security.signing import (
    MalformedSignature,
    PublisherSignature,
    SignatureError,
    Signer,
    SignerMismatch,
)

DELEGATION_DOMAIN = b"shoal delegation v1\x00"
DEFAULT_DAYS = 30
MAX_DAYS = 90
DAY = 86400
CLOCK_SKEW = 600  # seconds of clock difference tolerated at either end of the window
MAX_DELEGATION_BYTES = 1024  # the canonical text is ~420 bytes
_KEYS = frozenset({"delegate", "delegate_ed25519", "delegate_x25519", "expires", "issued",
                   "publisher", "resource_id", "serial"})
_HEX = re.compile(r"[0-9a-f]*")
_MAX_TIME = 10**11  # seconds: year ~5100, as manifests' created
_MAX_SERIAL = 2**53 - 1


class DelegationError(SignatureError):
    """A delegation is malformed, forged, for another resource, or outside its window."""


class NotTheDelegate(DelegationError, SignerMismatch):
    """The keys that signed are not the delegate's the delegation names."""


class DelegationExpired(DelegationError):
    """The delegation's window has ended (or has not begun, beyond the clock tolerance)."""


def _hex(value: object, what: str, length: int) -> str:
    if not isinstance(value, str) or len(value) != length or not _HEX.fullmatch(value):
        raise DelegationError(f"delegation: {what} must be {length} lower-case hex digits")
    return value


def _int(value: object, what: str, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= hi:
        raise DelegationError(f"delegation: {what} must be an integer in 1..{hi}")
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def _canonical(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


@dataclass(frozen=True)
class Delegation:
    """The signed-over fields; constructing one validates them (hostile input)."""

    resource_id: str
    publisher: str
    delegate: str
    delegate_x25519: str
    delegate_ed25519: str
    issued: int
    expires: int
    serial: int

    def __post_init__(self) -> None:
        _hex(self.resource_id, "resource_id", 32)
        for what in ("publisher", "delegate", "delegate_x25519", "delegate_ed25519"):
            _hex(getattr(self, what), what, 64)
        _int(self.issued, "issued", _MAX_TIME)
        _int(self.expires, "expires", _MAX_TIME)
        _int(self.serial, "serial", _MAX_SERIAL)
        if not 0 < self.expires - self.issued <= MAX_DAYS * DAY:
            raise DelegationError(f"delegation: the window must be 1 s to {MAX_DAYS} days")
        if self.delegate == self.publisher:
            raise DelegationError("delegation: a publisher cannot delegate to itself")
        keys = device_id_for(bytes.fromhex(self.delegate_x25519),
                             bytes.fromhex(self.delegate_ed25519))
        if keys.hex() != self.delegate:
            raise DelegationError("delegation: the delegate's keys do not hash to its ID")

    def to_obj(self) -> dict[str, Any]:
        return {"resource_id": self.resource_id, "publisher": self.publisher,
                "delegate": self.delegate, "delegate_x25519": self.delegate_x25519,
                "delegate_ed25519": self.delegate_ed25519, "issued": self.issued,
                "expires": self.expires, "serial": self.serial}

    def to_bytes(self) -> bytes:
        return _canonical(self.to_obj())

    @classmethod
    def from_bytes(cls, data: bytes) -> Delegation:
        if len(data) > MAX_DELEGATION_BYTES:
            raise DelegationError("delegation: too large")
        try:
            obj = json.loads(data, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise DelegationError("delegation: not valid JSON") from None
        if not isinstance(obj, dict) or set(obj) != _KEYS:
            raise DelegationError("delegation: wrong keys")
        d = cls(**obj)
        if d.to_bytes() != data:
            raise DelegationError("delegation: not in canonical form")
        return d


def _message(text: bytes) -> bytes:
    return DELEGATION_DOMAIN + blake3(text).digest()


@dataclass(frozen=True)
class SignedDelegation:
    """A delegation with the publisher's signature over its canonical bytes."""

    delegation: Delegation
    signature: PublisherSignature

    def to_obj(self) -> dict[str, object]:
        return {"delegation": self.delegation.to_bytes().decode("ascii"),
                "sig": self.signature.to_obj()}

    @classmethod
    def from_obj(cls, obj: object) -> SignedDelegation:
        """Parse (not verify) a delegation from a peer or the disk; DelegationError if bad."""
        if not isinstance(obj, Mapping) or set(obj) != {"delegation", "sig"} or not isinstance(
                obj["delegation"], str):
            raise DelegationError("delegation must be {delegation, sig}")
        try:
            text = obj["delegation"].encode("ascii")
            sig = PublisherSignature.from_obj(obj["sig"])
        except (UnicodeEncodeError, MalformedSignature):
            raise DelegationError("delegation: malformed text or signature block") from None
        return cls(Delegation.from_bytes(text), sig)

    def check(self, publisher_hex: str, resource_id: str,
              signer: PublisherSignature | None, now: float | None = None) -> None:
        """Raise a DelegationError (kind untrusted) unless this delegation lets *signer* sign
        versions of (*publisher_hex*, *resource_id*) at *now*. The manifest signature itself
        is checked by the caller, against the delegate's ID."""
        d = self.delegation
        if self.signature.signer_id.hex() != publisher_hex or d.publisher != publisher_hex:
            raise DelegationError(
                f"delegation for {_short(publisher_hex)} is signed by "
                f"{short_device_id(self.signature.signer_id)}: only the publisher can "
                "delegate (a delegate cannot delegate further)")
        try:
            Ed25519PublicKey.from_public_bytes(self.signature.ed25519).verify(
                self.signature.sig, _message(d.to_bytes()))
        except (InvalidSignature, ValueError):
            raise DelegationError("delegation: the publisher signature does not verify "
                                  "(forged, or changed after signing)") from None
        if d.resource_id != resource_id:
            raise DelegationError(f"delegation is for resource {d.resource_id[:12]}, "
                                  f"not {resource_id[:12]}")
        if signer is None or (signer.x25519.hex(), signer.ed25519.hex()) != (
                d.delegate_x25519, d.delegate_ed25519):
            raise NotTheDelegate(f"the manifest is not signed by the delegate "
                                 f"{short_device_id(bytes.fromhex(d.delegate))}")
        t = time.time() if now is None else now
        if not math.isfinite(t) or t > d.expires + CLOCK_SKEW:
            raise DelegationExpired(f"delegation to {short_device_id(bytes.fromhex(d.delegate))}"
                                    f" expired at {_utc(d.expires)}")
        if t < d.issued - CLOCK_SKEW:
            raise DelegationExpired(f"delegation is issued in the future ({_utc(d.issued)})")


def issue(signer: Signer, resource_id: str, delegate_x25519: bytes, delegate_ed25519: bytes,
          *, days: float = DEFAULT_DAYS, now: float | None = None) -> SignedDelegation:
    """Delegate signing of *resource_id* (published by *signer*) for *days* (<= MAX_DAYS)."""
    if not (isinstance(days, (int, float)) and math.isfinite(days) and 0 < days <= MAX_DAYS):
        raise DelegationError(f"a delegation lasts more than 0 and at most {MAX_DAYS} days")
    t = time.time() if now is None else now
    issued = int(t)
    d = Delegation(resource_id, signer.device_id.hex(),
                   device_id_for(delegate_x25519, delegate_ed25519).hex(),
                   delegate_x25519.hex(), delegate_ed25519.hex(), issued,
                   issued + max(1, int(days * DAY)), int(t * 1000))
    sig = PublisherSignature(signer.public_key, signer.signing_public,
                             signer.sign(_message(d.to_bytes())))
    return SignedDelegation(d, sig)


def _short(publisher_hex: str) -> str:
    try:
        return short_device_id(bytes.fromhex(publisher_hex))
    except ValueError:
        return publisher_hex[:16]


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
