"""Provider records, "resource key -> a device that holds it", signed by that device.

A record is only worth storing or returning if its holder signed (key, holder, expiry): anyone
else could otherwise point a resource at a device of their choice (or at nobody). Signing and
verifying are injected (``Signer``, ``Verifier``) so this pure core never imports the agent's
Ed25519 code; the verifier is given the holder's ID and the public key bytes the record
carries and must check both that the key belongs to the ID and that the signature is good.

Every store is bounded: records per key, keys per node and total bytes. When a key is full
the record expiring soonest gives way; when the node is full a new key is refused (existing
keys are kept: a flood of new keys from one peer cannot push out what others stored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.dht.keyspace import ID_BYTES

# the libp2p kad-dht spec's provider record validity and republish interval: a record lives
# 48 h and its holder re-announces it every 22 h, so one missed republish loses nothing
EXPIRY_S = 48 * 3600
REPUBLISH_S = 22 * 3600
MAX_CLOCK_SKEW_S = 300  # an expiry further than EXPIRY_S + this ahead is refused
MAX_HOLDER_KEY = 64  # the agent's X25519 + Ed25519 public keys
MAX_SIGNATURE = 64  # Ed25519
_DOMAIN = b"shoal-dht-provider-v1\x00"

Signer = Callable[[bytes], bytes]
"""Signs a payload with this device's key."""
Verifier = Callable[[bytes, bytes, bytes, bytes], bool]
"""``verify(holder_id, holder_key, payload, signature)``: True only if *holder_key* is the
holder's and the signature over *payload* is valid."""


class RecordError(ValueError):
    """A provider record that must not be stored or used; the message says why."""


@dataclass(frozen=True)
class ProviderRecord:
    key: bytes
    holder: bytes
    expiry: int  # seconds on the shared clock (the agent uses UNIX time)
    holder_key: bytes
    signature: bytes

    def size(self) -> int:
        """Bytes this record costs a store (payload plus a fixed per-record overhead)."""
        return 2 * ID_BYTES + 8 + len(self.holder_key) + len(self.signature) + 64


def signed_payload(key: bytes, holder: bytes, expiry: int) -> bytes:
    """The exact bytes a holder signs: domain, key, holder, expiry (8 bytes big-endian)."""
    return _DOMAIN + key + holder + expiry.to_bytes(8, "big")


def make_record(
    key: bytes, holder: bytes, holder_key: bytes, now: float, sign: Signer, ttl: int = EXPIRY_S
) -> ProviderRecord:
    """This device's own record for *key*, expiring *ttl* seconds after *now*."""
    expiry = int(now) + ttl
    signature = sign(signed_payload(key, holder, expiry))
    return ProviderRecord(key, holder, expiry, holder_key, signature)


def check_record(
    rec: ProviderRecord, now: float, verify: Verifier, max_ttl: int = EXPIRY_S
) -> ProviderRecord:
    """*rec* if it may be stored or used now, else RecordError (unsigned, stale, too far in
    the future, oversized, or a signature that does not verify)."""
    if len(rec.key) != ID_BYTES or len(rec.holder) != ID_BYTES:
        raise RecordError("malformed record: key and holder are 32 bytes")
    if not rec.signature:
        raise RecordError("unsigned record")
    if len(rec.signature) > MAX_SIGNATURE or len(rec.holder_key) > MAX_HOLDER_KEY:
        raise RecordError("oversized record")
    if rec.expiry <= now:
        raise RecordError("stale record")
    if rec.expiry > now + max_ttl + MAX_CLOCK_SKEW_S:
        raise RecordError("record expires too far in the future")
    if not verify(rec.holder, rec.holder_key, signed_payload(rec.key, rec.holder, rec.expiry),
                  rec.signature):
        raise RecordError("forged record: signature does not verify")
    return rec


@dataclass(frozen=True)
class StoreLimits:
    per_key: int = 20
    keys: int = 4096
    bytes: int = 2 * 1024 * 1024


DEFAULT_LIMITS = StoreLimits()


class ProviderStore:
    """The provider records this node keeps for others, bounded by *limits*."""

    def __init__(self, verify: Verifier, limits: StoreLimits = DEFAULT_LIMITS) -> None:
        self.verify = verify
        self.limits = limits
        self.records: dict[bytes, dict[bytes, ProviderRecord]] = {}
        self.bytes_used = 0

    def add(self, rec: ProviderRecord, now: float) -> None:
        """Validate and keep *rec* (a newer record from the same holder replaces the older).
        RecordError if it is invalid or the store is full."""
        check_record(rec, now, self.verify)
        holders = self.records.get(rec.key)
        if holders is None:
            if len(self.records) >= self.limits.keys:
                self.sweep(now)
            if len(self.records) >= self.limits.keys:
                raise RecordError("provider store full: too many keys")
            holders = self.records[rec.key] = {}
        old = holders.get(rec.holder)
        if old is not None:
            if old.expiry >= rec.expiry:
                return
            self._drop(old)
        elif len(holders) >= self.limits.per_key:
            soonest = min(holders.values(), key=lambda r: r.expiry)
            if soonest.expiry >= rec.expiry:
                raise RecordError("provider store full for this key")
            self._drop(soonest)
        if self.bytes_used + rec.size() > self.limits.bytes:
            if not holders:
                del self.records[rec.key]
            raise RecordError("provider store full: byte budget")
        # (dropping a key's only record above removed the key: put the holders back)
        self.records[rec.key] = holders
        holders[rec.holder] = rec
        self.bytes_used += rec.size()

    def _drop(self, rec: ProviderRecord) -> None:
        holders = self.records.get(rec.key)
        if holders is not None and holders.pop(rec.holder, None) is not None:
            self.bytes_used -= rec.size()
            if not holders:
                del self.records[rec.key]

    def get(self, key: bytes, now: float, limit: int = 20) -> list[ProviderRecord]:
        """Unexpired records for *key*, latest expiry first, at most *limit*."""
        holders = self.records.get(key, {})
        live = sorted((r for r in holders.values() if r.expiry > now), key=lambda r: -r.expiry)
        return live[:limit]

    def sweep(self, now: float) -> int:
        """Drop expired records; returns how many."""
        dead = [r for h in self.records.values() for r in h.values() if r.expiry <= now]
        for rec in dead:
            self._drop(rec)
        return len(dead)

    def __len__(self) -> int:
        return sum(len(h) for h in self.records.values())


class Republisher:
    """The keys this device provides, and when each is next due to be announced again."""

    def __init__(self, interval: float = REPUBLISH_S) -> None:
        self.interval = interval
        self.next_due: dict[bytes, float] = {}

    def provide(self, key: bytes, now: float) -> None:
        """*key* was just announced: due again one interval from *now*."""
        self.next_due[key] = now + self.interval

    def withdraw(self, key: bytes) -> None:
        self.next_due.pop(key, None)

    def due(self, now: float) -> list[bytes]:
        """Keys whose announcement must be repeated now (the caller announces, then calls
        ``provide`` again)."""
        return sorted(k for k, t in self.next_due.items() if t <= now)
