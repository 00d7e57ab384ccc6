"""The DHT over peer sessions: the asyncio adapter around the pure core (agent/dht/node.py).

Why a thin adapter: every decision (who is in the table, when a lookup is done, which record
is believable) is the pure core's, tested without sockets and run unchanged by the
simulation. This module only carries the core's messages over the request op ``dht``
(agent/peer/wire.py), runs its timers (bucket refresh, republish, expiry) on the core's clock
(UNIX time: records expire on a clock the devices share), and applies the agent's rules:

* **Pairing is the admission cost.** Only paired devices enter the routing table, are asked
  during a lookup or are answered: contacts a reply names are dropped unless this device
  trusts them, and a ``dht`` request from an unpaired session is refused. A Sybil needs a
  human to approve each identity.
* **Records are the holder's.** This device announces resources it holds with records it
  signs (agent/security/signing.py ``verify_holder`` checks them everywhere); forged, stale or
  unsigned records are refused by the core on receipt. A private resource is announced only
  under its (random) ID, never its name, and only to devices this one trusts.
* **Multi-hop reach.** For each contact the service remembers its *introducers*, the
  neighbours (live direct sessions) through which replies named it; ``next_hop(target)`` is
  the target itself when a direct session is live, else a live introducer. A contact without
  a session is reached through the injected :class:`agent.ports.PeerOpener` (the relay).
* **Fetch uses it** through :class:`agent.ports.HolderFinder`: ``lookup_first`` (the
  neighbourhood exceeds the measured threshold), ``beyond_neighbours`` and ``reach_holders``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.config import DhtConfig
from agent.dht.keyspace import random_id_in_bucket, resource_key
from agent.dht.lookup import Lookup
from agent.dht.messages import (
    AddProvider,
    FindNode,
    GetProviders,
    Message,
    MessageError,
    Nodes,
    Ping,
    Pong,
    Providers,
    parse,
    wire,
)
from agent.dht.node import DhtNode
from agent.dht.records import EXPIRY_S, ProviderRecord, RecordError, Republisher, make_record
from agent.dht.routing import K
from agent.errors import ShoalError
from agent.log import kv
from agent.peer import wire as peer_wire
from agent.peer.connection import Handler, PeerConnection, Refused
from agent.ports import JSONValue, PeerLink, PeerOpener, Spawner, TrustView
from agent.security.signing import Signer, holder_keys, verify_holder

log = logging.getLogger("shoal.dht")

OP = "dht"
MAX_INTRODUCED = 4096  # contacts whose introducers are remembered (oldest forgotten first)
MAX_INTRODUCERS = 3  # per contact: a second path when the first neighbour goes away
MAX_RESOLVING = 8  # lookups at once for contacts that reached us with no known way back
RETRY_S = 60.0  # an announcement that reached nobody is tried again this soon
_RESOURCE_ID = re.compile(r"[0-9a-fA-F]{32}")

Held = tuple[str, str, bool]
"""A held resource: (resource ID, name, public)."""

_Failure = (ShoalError, ConnectionError, TimeoutError, OSError, ValueError)


class LiveSessions(Protocol):
    """What the DHT needs of the connections: the live sessions (direct and relayed)."""

    def live_connections(self) -> Sequence[PeerLink]: ...


def resource_keys(resource_id: str, name: str, public: bool) -> list[bytes]:
    """The DHT keys a held resource is announced under: its ID always; its name too when
    public (a private resource's name is guessable, its random ID is not)."""
    keys = [resource_key(resource_id.lower())]
    if public:
        keys.append(resource_key(name))
    return keys


def key_for(resource: str) -> bytes:
    """The DHT key a fetch of *resource* (a resource ID or a name) looks up."""
    if _RESOURCE_ID.fullmatch(resource):
        return resource_key(resource.lower())
    return resource_key(resource)


@dataclass
class DhtCounters:
    lookups: int = 0  # provider lookups run for fetches
    lookups_found: int = 0  # ... that found at least one holder
    refreshes: int = 0  # FIND_NODE lookups (bootstrap, bucket refresh, announce)
    requests_out: int = 0
    replies_in: int = 0
    failures: int = 0  # requests without a usable answer
    requests_in: int = 0
    refused: int = 0  # requests from unpaired sessions or malformed
    dropped_untrusted: int = 0  # contacts named in replies that this device does not trust
    announced: int = 0  # ADD_PROVIDER sent and answered
    last_rounds: int = 0  # Kademlia hops of the last provider lookup


class DhtService:
    """One device's DHT: answers ``dht`` requests, looks up, announces, keeps timers."""

    def __init__(self, own: bytes, cfg: DhtConfig, *, connections: LiveSessions,
                 trust: TrustView, signer: Signer, held: Callable[[], Iterable[Held]],
                 spawn: Spawner, opener: PeerOpener | None = None,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.own = own
        self.cfg = cfg
        self._connections = connections
        self._trust = trust
        self._signer = signer
        self._keys = holder_keys(signer)
        self._held = held
        self._spawn = spawn
        self.opener = opener
        self._routes: Callable[[bytes], bytes | None] | None = None
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self.node = DhtNode(own, verify_holder, now=clock())
        self.republisher = Republisher(cfg.republish)
        self.provided: dict[bytes, bool] = {}  # key -> private, for what this device holds
        self._introducers: OrderedDict[bytes, list[bytes]] = OrderedDict()
        self.counters = DhtCounters()
        self._bootstrapping = False
        self._syncing = False
        self._resync = False
        self._resolving: set[bytes] = set()  # contacts being looked up for an introducer

    # ----------------------------------------------------------------- composition
    def handlers(self) -> dict[str, Handler]:
        return {OP: self._on_request}

    def use_opener(self, opener: PeerOpener | None) -> None:
        """The relay (or, in tests, a direct dialler) that reaches devices beyond the
        neighbourhood; None: the DHT asks live sessions only."""
        self.opener = opener

    def use_routes(self, routes: Callable[[bytes], bytes | None] | None) -> None:
        """The route table's first hop toward a device (shortest advertised path,
        agent/relay/routes.py); preferred over introducers, which reach but take detours."""
        self._routes = routes

    def session_opened(self, conn: PeerLink) -> None:
        """A session opened: a paired peer enters the table, and the table is (re)filled
        through it (a lookup of our own ID, then any announcement that reached nobody)."""
        if not self._trust.is_trusted(conn.peer_id):
            return
        self._observe(conn.peer_id)
        if not self._bootstrapping:
            self._bootstrapping = True
            self._spawn(self._bootstrap(), "dht-bootstrap")

    def unpaired(self, peer_id: bytes) -> None:
        """A device is no longer paired: out of the table and never a next hop."""
        self.node.table.failed(peer_id)
        self._introducers.pop(peer_id, None)
        for vias in self._introducers.values():
            if peer_id in vias:
                vias.remove(peer_id)

    def catalog_changed(self) -> None:
        """Holdings changed (publish, fetch, delete): announce what is new, stop
        republishing what is gone."""
        if self._syncing:
            self._resync = True  # the running pass looks again when it is done
            return
        self._syncing = True
        try:
            self._spawn(self._sync_holdings(), "dht-announce")
        except RuntimeError:  # not running yet: run() announces the holdings at start
            self._syncing = False

    async def run(self) -> None:
        """The timers: expire records, refresh stale buckets, republish, announce holdings."""
        self.catalog_changed()  # what is held already is announced (guarded, in the background)
        while True:
            await asyncio.sleep(self.cfg.tick)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a timer's failure must not end the DHT
                log.exception("dht timers failed")

    async def tick(self) -> None:
        now = self._clock()
        self.node.store.sweep(now)
        for index in self.node.table.stale_buckets(now, self.cfg.refresh):
            await self._find_node(random_id_in_bucket(self.own, index, self._rng))
        for key in self.republisher.due(now):
            if key in self.provided:
                await self.announce(key, private=self.provided[key])
            else:
                self.republisher.withdraw(key)

    # ----------------------------------------------------------------- the fetch's port
    def neighbours(self) -> set[bytes]:
        """Devices with a live direct session (a relayed session is not a neighbour)."""
        return {c.peer_id for c in self._connections.live_connections()
                if c.transport != "relay"}

    def lookup_first(self, neighbours: int) -> bool:
        return neighbours > self.cfg.threshold and len(self.node.table) > 0

    def beyond_neighbours(self) -> bool:
        near = self.neighbours()
        return any(c not in near for c in self.node.table.contacts())

    async def find_holders(self, resource: str, *, network: bool = False
                           ) -> list[ProviderRecord]:
        """Verified provider records for *resource* (a resource ID or a name), other
        devices' only, at most ``[dht] want`` unless the last reply brought more.
        *network*: ignore records this device stores and ask the network (what a lookup
        costs a device that does not store them; ``shoal dht --find --network``)."""
        key = key_for(resource)
        lk = self.node.lookup(key, self._clock(), want_providers=self.cfg.want,
                              local=not network)
        await self._drive(lk, GetProviders(key))
        self.counters.lookups += 1
        self.counters.last_rounds = lk.rounds
        found = [r for r in lk.providers.values() if r.holder != self.own]
        self.counters.lookups_found += bool(found)
        log.debug("dht lookup", extra=kv(resource=resource[:64], holders=len(found),
                                          rounds=lk.rounds, replies=lk.replies))
        return found

    async def find(self, resource: str, *, network: bool = False) -> dict[str, object]:
        """``shoal dht --find``: the holders a lookup finds now (what fetch would use)."""
        t0 = time.monotonic()
        sent = self.counters.requests_out
        records = await self.find_holders(resource, network=network)
        return {"resource": resource, "key": key_for(resource).hex(),
                "rounds": self.counters.last_rounds,
                "requests": self.counters.requests_out - sent,
                "ms": round((time.monotonic() - t0) * 1000, 2),
                "holders": [{"id": r.holder.hex(), "expiry": r.expiry,
                             "via": _hex(self.next_hop(r.holder))} for r in records]}

    async def reach_holders(self, resource: str) -> list[bytes]:
        records = await self.find_holders(resource)
        links = await asyncio.gather(*(self._session(r.holder) for r in records))
        return [link.peer_id for link in links if link is not None]

    def next_hop(self, target: bytes) -> bytes | None:
        """Where a circuit to *target* goes first: *target* itself over a live direct
        session, else a live neighbour that introduced it, else None (unreachable)."""
        near = self.neighbours()
        if target in near:
            return target
        if self._routes is not None:  # the shortest known path first (agent/relay/routes.py)
            via = self._routes(target)
            if via is not None and via in near:
                return via
        for via in self._introducers.get(target, ()):
            if via in near:
                return via
        return None

    # ----------------------------------------------------------------- announcing
    def _wanted(self) -> dict[bytes, bool]:
        out: dict[bytes, bool] = {}
        for rid, name, public in self._held():
            for key in resource_keys(rid, name, public):
                out[key] = out.get(key, True) and not public
        return out

    async def _sync_holdings(self) -> None:
        try:
            self._resync = True
            while self._resync:
                self._resync = False
                await self._sync_holdings_now()
        finally:
            self._syncing = False

    async def _sync_holdings_now(self) -> None:
        wanted = self._wanted()
        for key in [k for k in self.provided if k not in wanted]:
            del self.provided[key]
            self.republisher.withdraw(key)  # its records expire where they are stored
        new = [k for k in wanted if k not in self.provided]
        for key in new:
            self.provided[key] = wanted[key]
            await self.announce(key, private=wanted[key])

    async def announce(self, key: bytes, *, private: bool) -> int:
        """Store a fresh signed record for *key* on the closest devices found (for a
        private resource: only on devices this one trusts). Returns how many took it."""
        now = self._clock()
        rec = make_record(key, self.own, self._keys, now, self._signer.sign, ttl=EXPIRY_S)
        try:
            self.node.store.add(rec, now)  # answered from here too while we are close
        except RecordError as e:
            log.debug("own record not kept", extra=kv(reason=e))
        closest = await self._find_node(key)
        targets = [c for c in closest if not private or self._trust.is_trusted(c)]
        answers = await asyncio.gather(*(self._ask(c, AddProvider(rec)) for c in targets))
        reached = sum(1 for a in answers if isinstance(a, Pong))
        self.counters.announced += reached
        self.republisher.provide(key, now)
        if not reached:  # nobody yet: try again soon (and at the next paired session)
            self.republisher.next_due[key] = now + min(RETRY_S, self.cfg.republish)
        return reached

    async def _bootstrap(self) -> None:
        try:
            await self._find_node(self.own)
            now = self._clock()
            for key, due in list(self.republisher.next_due.items()):
                if due - now <= RETRY_S and key in self.provided:  # reached nobody before
                    await self.announce(key, private=self.provided[key])
        finally:
            self._bootstrapping = False

    # ----------------------------------------------------------------- lookups
    async def _find_node(self, target: bytes) -> list[bytes]:
        lk = self.node.lookup(target, self._clock())
        await self._drive(lk, FindNode(target))
        self.counters.refreshes += 1
        return lk.closest()

    async def _drive(self, lk: Lookup, request: Message) -> None:
        """Run *lk* to its end (or ``lookup_timeout``): up to alpha requests in flight, each
        outcome reported back to the state machine."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.lookup_timeout
        pending: dict[asyncio.Task[Message | None], bytes] = {}
        try:
            while not lk.finished:
                for contact in lk.next_queries():
                    pending[asyncio.ensure_future(self._ask(contact, request))] = contact
                if not pending:
                    break
                left = deadline - loop.time()
                if left <= 0:
                    break
                done, _ = await asyncio.wait(pending, timeout=left,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    contact = pending.pop(task)
                    self._outcome(lk, contact, task.result())
        finally:
            for task in pending:
                task.cancel()

    def _outcome(self, lk: Lookup, contact: bytes, reply: Message | None) -> None:
        if isinstance(reply, Nodes):
            lk.on_reply(contact, self._learn(contact, reply.closer))
        elif isinstance(reply, Providers):
            now = self._clock()
            records = self.node.reply_records(reply.providers, now)
            for rec in records:  # a holder is reached the way its record came
                self._introduce(rec.holder, contact)
            lk.on_reply(contact, self._learn(contact, reply.closer), records)
        else:
            lk.on_failure(contact)

    def _learn(self, replier: bytes, named: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """The contacts of a reply this device may use: paired ones, not itself. Each
        remembers the neighbour its news came through."""
        kept: list[bytes] = []
        for c in named:
            if c == self.own:
                continue
            if not self._trust.is_trusted(c):
                self.counters.dropped_untrusted += 1
                continue
            self._introduce(c, replier)
            kept.append(c)
        return tuple(kept)

    def _introduce(self, contact: bytes, replier: bytes) -> None:
        """*contact* was named by *replier*: the first hop towards it is the first hop
        towards the replier (the replier itself when it is a neighbour)."""
        via = self.next_hop(replier)
        if via is None or via == contact:
            return
        vias = self._introducers.pop(contact, [])
        if via in vias:
            vias.remove(via)
        vias.insert(0, via)
        del vias[MAX_INTRODUCERS:]
        self._introducers[contact] = vias
        while len(self._introducers) > MAX_INTRODUCED:
            self._introducers.popitem(last=False)

    # ----------------------------------------------------------------- one request
    async def _session(self, target: bytes) -> PeerLink | None:
        for link in self._connections.live_connections():
            if link.peer_id == target:
                return link
        via = self.next_hop(target)
        if self.opener is None or via is None:
            return None
        try:
            return await asyncio.wait_for(self.opener.open(target, via=via),
                                          self.cfg.request_timeout)
        except _Failure as e:
            log.debug("dht contact unreachable", extra=kv(peer=target.hex()[:16], reason=e))
            return None

    async def _ask(self, contact: bytes, msg: Message) -> Message | None:
        """*contact*'s reply to *msg*, or None (unreachable, refused, timed out, malformed
        or the wrong kind of reply). A paired contact that answers is seen in the table; one
        that does not is dropped from it."""
        self.counters.requests_out += 1
        link = await self._session(contact)
        reply: Message | None = None
        if link is not None:
            try:
                res = await link.request(OP, {"m": _json(wire(msg))},
                                         timeout=self.cfg.request_timeout)
                reply = _reply_of(msg, res)
            except _Failure as e:
                log.debug("dht request failed", extra=kv(peer=contact.hex()[:16], reason=e))
        if reply is None:
            self.counters.failures += 1
            self.node.table.failed(contact)
            return None
        self.counters.replies_in += 1
        if self._trust.is_trusted(contact):
            self._observe(contact)
        return reply

    def _observe(self, contact: bytes) -> None:
        ping = self.node.table.observe(contact, self._clock())
        if ping is not None:
            self._spawn(self._ping(ping), "dht-ping")
        self._maybe_resolve(contact)

    def _maybe_resolve(self, contact: bytes) -> None:
        if (contact not in self._introducers and contact not in self._resolving
                and len(self._resolving) < MAX_RESOLVING and contact in self.node.table
                and self.next_hop(contact) is None):
            # it reached us over a relayed session: learn a way back through a neighbour
            self._resolving.add(contact)
            self._spawn(self._resolve(contact), "dht-resolve")

    async def _resolve(self, contact: bytes) -> None:
        """Look *contact* up: the neighbours' replies that name it are its introducers."""
        try:
            await self._find_node(contact)
        finally:
            self._resolving.discard(contact)

    async def _ping(self, contact: bytes) -> None:
        """The oldest contact of a full bucket: it stays if it answers (``_ask`` drops it
        from the table if not)."""
        if isinstance(await self._ask(contact, Ping()), Pong):
            self.node.table.ping_answered(contact, self._clock())

    async def _on_request(self, conn: PeerConnection, req: peer_wire.Request) -> object:
        self.counters.requests_in += 1
        if not self._trust.is_trusted(conn.peer_id):
            self.counters.refused += 1
            raise Refused("the DHT answers paired devices only")
        try:
            msg = parse(req.args["m"])
        except MessageError as e:
            self.counters.refused += 1
            raise Refused(f"malformed DHT message: {e}") from None
        if not isinstance(msg, Ping | FindNode | GetProviders | AddProvider):
            self.counters.refused += 1
            raise Refused("not a DHT request")
        handled = self.node.handle(conn.peer_id, msg, self._clock())
        if handled.ping is not None:
            self._spawn(self._ping(handled.ping), "dht-ping")
        self._maybe_resolve(conn.peer_id)
        return {"m": _json(wire(handled.reply or Pong()))}

    # ----------------------------------------------------------------- what `shoal dht` shows
    def stats(self) -> dict[str, object]:
        near = self.neighbours()
        contacts = self.node.table.contacts()
        c = self.counters
        return {
            "enabled": True, "threshold": self.cfg.threshold, "k": K,
            "contacts": len(contacts),
            "neighbours_in_table": sum(1 for x in contacts if x in near),
            "beyond_neighbours": sum(1 for x in contacts if x not in near),
            "records_held": len(self.node.store), "keys_announced": len(self.provided),
            "records_rejected": self.node.rejected,
            "lookups": c.lookups, "lookups_found": c.lookups_found,
            "refreshes": c.refreshes, "requests_out": c.requests_out,
            "replies_in": c.replies_in, "failures": c.failures,
            "requests_in": c.requests_in, "refused": c.refused,
            "dropped_untrusted": c.dropped_untrusted, "announcements": c.announced,
        }


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _json(obj: dict[str, object]) -> JSONValue:
    return obj  # type: ignore[return-value]  # wire() builds only JSON values


def _reply_of(msg: Message, res: object) -> Message | None:
    """The reply in a ``dht`` answer if it is the kind *msg* asks for, else None."""
    if not isinstance(res, dict) or set(res) != {"m"}:
        return None
    try:
        reply = parse(res["m"])
    except MessageError:
        return None
    want: type = {FindNode: Nodes, GetProviders: Providers}.get(type(msg), Pong)
    return reply if isinstance(reply, want) else None
