"""One DHT node's side of the protocol: answer requests, keep the table and the records.

``handle`` turns a request from *sender* into a reply and may ask the caller to ping the
oldest contact of a full bucket (``Handled.ping``). Lookups are started with ``lookup`` and
driven by the caller; ``reply_records`` filters the records of a reply through the verifier
before they reach a lookup. No I/O, no clock, no randomness of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.dht.lookup import ALPHA, Lookup
from agent.dht.messages import (
    AddProvider,
    FindNode,
    GetProviders,
    Message,
    Nodes,
    Ping,
    Pong,
    Providers,
)
from agent.dht.records import (
    DEFAULT_LIMITS,
    ProviderRecord,
    ProviderStore,
    RecordError,
    StoreLimits,
    Verifier,
    check_record,
)
from agent.dht.routing import K, RoutingTable


@dataclass(frozen=True)
class Handled:
    reply: Message | None
    ping: bytes | None = None  # the caller pings this contact, then reports the outcome


class DhtNode:
    def __init__(
        self, own: bytes, verify: Verifier, *, k: int = K, alpha: int = ALPHA,
        limits: StoreLimits = DEFAULT_LIMITS, now: float = 0.0,
    ) -> None:
        self.own = own
        self.k = k
        self.alpha = alpha
        self.verify = verify
        self.table = RoutingTable(own, k=k, now=now)
        self.store = ProviderStore(verify, limits)
        self.rejected = 0

    def handle(self, sender: bytes, msg: Message, now: float) -> Handled:
        """The reply to a request *msg* from *sender* (None for AddProvider and replies)."""
        ping = self.table.observe(sender, now)
        reply: Message | None = None
        if isinstance(msg, Ping):
            reply = Pong()
        elif isinstance(msg, FindNode):
            reply = Nodes(tuple(self.table.closest(msg.target, exclude=sender)))
        elif isinstance(msg, GetProviders):
            recs = tuple(self.store.get(msg.key, now, self.k))
            reply = Providers(recs, tuple(self.table.closest(msg.key, exclude=sender)))
        elif isinstance(msg, AddProvider):
            if msg.record.holder != sender:
                self.rejected += 1  # libp2p too: only a holder may announce itself
            else:
                try:
                    self.store.add(msg.record, now)
                except RecordError:
                    self.rejected += 1
        return Handled(reply, ping)

    def lookup(self, target: bytes, now: float, want_providers: int = 0, *,
               local: bool = True) -> Lookup:
        """A new lookup for *target* seeded from this node's table (and, unless *local* is
        false, the node's own records when it holds some for *target*)."""
        self.table.touch(target, now)
        lk = Lookup(target, want_providers=want_providers, k=self.k, alpha=self.alpha)
        lk.seed(self.table.closest(target))
        if want_providers and local:
            for rec in self.store.get(target, now, self.k):
                lk.providers.setdefault(rec.holder, rec)
        return lk

    def reply_records(
        self, records: tuple[ProviderRecord, ...], now: float
    ) -> tuple[ProviderRecord, ...]:
        """The records of a reply that verify; the rest are counted in ``rejected``."""
        good: list[ProviderRecord] = []
        for rec in records:
            try:
                good.append(check_record(rec, now, self.verify))
            except RecordError:
                self.rejected += 1
        return tuple(good)
