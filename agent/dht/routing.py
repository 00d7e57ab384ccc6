"""k-buckets: who a node knows, biased towards long-lived contacts.

Kademlia keeps at most *k* contacts per bucket, ordered least- to most-recently seen. A new
contact for a full bucket does not evict anyone: it goes to the bucket's bounded replacement
cache and the oldest contact is pinged (the caller sends the ping); only if that ping fails is
the oldest dropped and the freshest replacement promoted. Old contacts that still answer are
the ones most likely to stay up, and an attacker cannot flush a table by flooding new IDs.
Buckets are created on first use, so a node in a 10,000-device mesh holds about 20 of them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from agent.dht.keyspace import bucket_index, check_id

K = 20  # libp2p Kademlia's bucket size and replication factor
REFRESH_S = 600.0  # libp2p refreshes buckets not looked up in 10 minutes


@dataclass
class Bucket:
    """One k-bucket: contacts oldest first, a replacement cache, at most one pending ping."""

    entries: OrderedDict[bytes, float] = field(default_factory=OrderedDict)
    replacements: OrderedDict[bytes, float] = field(default_factory=OrderedDict)
    pending: bytes | None = None  # the oldest contact, pinged, not yet answered
    last_lookup: float = 0.0


class RoutingTable:
    """The k-buckets of the node *own*."""

    def __init__(self, own: bytes, *, k: int = K, replacements: int = K, now: float = 0.0) -> None:
        self.own = check_id(own)
        self.k = k
        self.replacement_size = replacements
        self.created = now
        self.buckets: dict[int, Bucket] = {}

    def __len__(self) -> int:
        return sum(len(b.entries) for b in self.buckets.values())

    def __contains__(self, node: bytes) -> bool:
        b = self.buckets.get(bucket_index(self.own, node))
        return b is not None and node in b.entries

    def _bucket(self, node: bytes) -> Bucket | None:
        index = bucket_index(self.own, node)
        if index < 0:
            return None
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = Bucket(last_lookup=self.created)
        return bucket

    def observe(self, node: bytes, now: float) -> bytes | None:
        """*node* was just heard from. Returns the contact the caller must ping (the oldest of
        a full bucket) or None. Pass its outcome to ``ping_answered`` or ``failed``."""
        bucket = self._bucket(check_id(node))
        if bucket is None:
            return None
        if node in bucket.entries:
            bucket.entries[node] = now
            bucket.entries.move_to_end(node)
            return None
        if len(bucket.entries) < self.k:
            bucket.entries[node] = now
            bucket.replacements.pop(node, None)
            return None
        bucket.replacements[node] = now
        bucket.replacements.move_to_end(node)
        while len(bucket.replacements) > self.replacement_size:
            bucket.replacements.popitem(last=False)
        if bucket.pending is None:
            bucket.pending = next(iter(bucket.entries))
            return bucket.pending
        return None

    def ping_answered(self, node: bytes, now: float) -> None:
        """The pinged oldest contact answered: it stays, now most recently seen."""
        bucket = self.buckets.get(bucket_index(self.own, node))
        if bucket is None:
            return
        if bucket.pending == node:
            bucket.pending = None
        if node in bucket.entries:
            bucket.entries[node] = now
            bucket.entries.move_to_end(node)

    def failed(self, node: bytes) -> None:
        """*node* did not answer (a ping or a request): drop it, promote the freshest
        replacement."""
        bucket = self.buckets.get(bucket_index(self.own, node))
        if bucket is None:
            return
        bucket.replacements.pop(node, None)
        if bucket.pending == node:
            bucket.pending = None
        if bucket.entries.pop(node, None) is not None and bucket.replacements:
            fresh, seen = bucket.replacements.popitem(last=True)
            bucket.entries[fresh] = seen

    def closest(
        self, target: bytes, n: int | None = None, *, exclude: bytes | None = None
    ) -> list[bytes]:
        """The *n* (default k) known contacts closest to *target*, closest first."""
        t = int.from_bytes(target, "big")
        found = [c for b in self.buckets.values() for c in b.entries if c != exclude]
        found.sort(key=lambda c: int.from_bytes(c, "big") ^ t)
        return found[: self.k if n is None else n]

    def touch(self, target: bytes, now: float) -> None:
        """A lookup for *target* ran: its bucket counts as refreshed."""
        index = bucket_index(self.own, target)
        if index >= 0 and index in self.buckets:
            self.buckets[index].last_lookup = now

    def stale_buckets(self, now: float, interval: float = REFRESH_S) -> list[int]:
        """Indices of buckets no lookup touched in *interval* seconds, nearest first: the caller
        looks up a random ID in each (``keyspace.random_id_in_bucket``)."""
        stale = [i for i, b in self.buckets.items() if now - b.last_lookup >= interval]
        return sorted(stale)

    def contacts(self) -> list[bytes]:
        return [c for b in self.buckets.values() for c in b.entries]
