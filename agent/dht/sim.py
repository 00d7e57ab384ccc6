"""A seeded discrete-event simulation of many DHT nodes in virtual time.

Every node is a real ``DhtNode`` (same tables, records, lookup state machine as a device);
only the network is simulated: each message takes the sum of its endpoints' one-way latency,
is lost with probability *loss*, and a request that gets no reply counts as failed after
*timeout_s*. Churn replaces a fraction of the nodes per period (the leaver vanishes silently;
the newcomer knows three random live nodes, looks up its own ID and learns the rest as it
goes). A partition cuts every message between two groups for a time window. Records are
signed with a keyed hash standing in for Ed25519 (cheap, verified exactly like real records).
Optionally a fraction of the nodes are eclipse attackers, and lookups take d disjoint paths
(S/Kademlia), to measure that mitigation's cost.

Nodes are ``SimNode``: a DhtNode whose table answers ``closest`` by walking buckets and whose
lookups keep their frontier sorted incrementally (``SimTable``, ``SimLookup``): the same
answers and decisions as RoutingTable and Lookup, checked step by step in
tests/dht/test_sim.py, at a cost that lets 10,000 nodes run in minutes.

The start is a converged network: routing tables filled as a long-running mesh would have
them (up to k random nodes per bucket), then every holder announces its resources through
real lookups. Measured: lookup success, rounds, messages and virtual time per lookup, memory
per node, and a flooding baseline (each lookup sample flooded over a random graph of the same
live nodes, degree *flood_degree*) in the same run. Deterministic for a given config.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import heapq
import math
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.dht.keyspace import ID_BITS, ID_BYTES, random_id, random_id_in_bucket, resource_key
from agent.dht.lookup import ALPHA, Lookup, State
from agent.dht.messages import AddProvider, FindNode, GetProviders, Message, Nodes, Providers
from agent.dht.node import DhtNode, Handled
from agent.dht.records import EXPIRY_S, REPUBLISH_S, Verifier, make_record
from agent.dht.routing import REFRESH_S, K, RoutingTable

JOIN_CONTACTS = 3  # neighbours a joining device already knows


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 1000
    lookups: int = 2000
    resources: int = 500
    duration_s: float = 1800.0  # virtual seconds of measured activity
    churn_fraction: float = 0.2  # of the nodes replaced ...
    churn_period_s: float = 600.0  # ... per this many virtual seconds
    loss: float = 0.01  # per message
    latency_ms: tuple[float, float] = (5.0, 50.0)  # one-way per endpoint, uniform
    timeout_s: float = 1.0
    partition: tuple[float, float, float] | None = None  # (start_s, end_s, fraction cut off)
    want_providers: int = 1
    k: int = K
    alpha: int = ALPHA
    refresh_s: float = REFRESH_S  # 0 disables bucket refresh
    republish_s: float = REPUBLISH_S
    flood_degree: int = 8
    flood_samples: int = 20
    adversaries: float = 0.0  # fraction of the first nodes that are eclipse attackers
    paths: int = 1  # disjoint lookup paths (S/Kademlia's d); 1 = plain Kademlia
    seed: int = 1


def _secret(holder: bytes) -> bytes:
    return hashlib.blake2b(b"sim-secret" + holder, digest_size=32).digest()


def sim_signer(holder: bytes) -> Callable[[bytes], bytes]:
    """The simulated holder's signing function (keyed BLAKE2b in place of Ed25519)."""
    key = _secret(holder)
    return lambda payload: hashlib.blake2b(payload, key=key, digest_size=32).digest()


def sim_verify(holder: bytes, holder_key: bytes, payload: bytes, signature: bytes) -> bool:
    """Verifies what ``sim_signer`` signed; the stand-in for the agent's Ed25519 verifier."""
    return sim_signer(holder)(payload) == signature and holder_key == b"sim"


class SimTable(RoutingTable):
    """A RoutingTable whose ``closest`` takes whole buckets in order of their distance to the
    target and sorts only those, instead of sorting every contact.

    Bucket *i* holds the IDs whose XOR distance to the owner has its top bit at *i*, so its
    contacts' distances to a target lie in one interval, and the intervals of different buckets
    never overlap: the first buckets that together hold *n* contacts hold the *n* closest. The
    answer is exactly ``RoutingTable.closest``'s (tests/dht/test_sim.py checks it on random
    tables); at 10,000 nodes each node answers thousands of FIND_NODEs, and this was the
    largest single cost of the simulation.
    """

    def __init__(self, own: bytes, *, k: int = K, now: float = 0.0) -> None:
        super().__init__(own, k=k, now=now)
        self._own_int = int.from_bytes(own, "big")

    def closest(
        self, target: bytes, n: int | None = None, *, exclude: bytes | None = None
    ) -> list[bytes]:
        want = self.k if n is None else n
        t = int.from_bytes(target, "big")
        d = self._own_int ^ t
        j = d.bit_length() - 1  # the target's own bucket; -1 if the target is the owner
        # Buckets in order of distance to the target: the target's own bucket (distances
        # below 2**j); then the lower buckets, those whose bit is set in d (their IDs agree
        # with the target there) from the highest down, then the others from the lowest up
        # (all in [2**j, 2**(j+1))); then the higher buckets from the lowest up.
        buckets = self.buckets
        below = [i for i in buckets if i < j]
        below.sort(reverse=True)
        order = [j] if j in buckets else []
        order += [i for i in below if (d >> i) & 1]
        order += [i for i in reversed(below) if not (d >> i) & 1]
        above = [i for i in buckets if i > j]
        above.sort()
        order += above
        found: list[bytes] = []
        for i in order:
            entries = buckets[i].entries
            found.extend(entries)
            if exclude is not None and exclude in entries:
                found.remove(exclude)
            if len(found) >= want:
                break
        ranked = sorted(zip([int.from_bytes(c, "big") ^ t for c in found], found, strict=True))
        return [c for _, c in ranked[:want]]


class SimLookup(Lookup):
    """A Lookup that keeps its non-failed candidates sorted by distance as they arrive and
    counts its requests in flight, instead of filtering and sorting every candidate on each
    call: the same decisions as ``Lookup`` (tests/dht/test_sim.py drives both with the same
    replies and compares every step), a fraction of the cost.

    The frontier (the k closest candidates that have not failed) changes only when candidates
    are learned or one fails; NEW -> WAITING -> ANSWERED changes the state of a candidate in
    the frontier, not who is in it.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._live: list[tuple[int, bytes]] = []  # (distance, ID) of non-failed candidates
        self._front: list[Any] | None = None
        self._waiting = 0

    @classmethod
    def adopt(cls, lk: Lookup) -> SimLookup:
        """The same lookup (fresh from ``DhtNode.lookup``) as a SimLookup."""
        out = cls(lk.target, want_providers=lk.want_providers, k=lk.k, alpha=lk.alpha,
                  max_candidates=lk.max_candidates)
        out.candidates, out.providers = lk.candidates, lk.providers
        out.rounds, out.replies, out.failures = lk.rounds, lk.replies, lk.failures
        out._rebuild()
        return out

    def _rebuild(self) -> None:
        cands = self.candidates
        self._live = sorted((v.dist, c) for c, v in cands.items() if v.state is not State.FAILED)
        self._waiting = sum(1 for v in cands.values() if v.state is State.WAITING)
        self._front = None

    def _learn(self, contacts: tuple[bytes, ...] | list[bytes], round_: int) -> None:
        cands = self.candidates
        fresh = [c for c in dict.fromkeys(contacts) if c not in cands]
        before = len(cands)
        super()._learn(contacts, round_)
        if not fresh:
            return
        if len(self.candidates) != before + len(fresh):  # pruned: rare, start over
            self._rebuild()
            return
        live, cands = self._live, self.candidates
        for c in fresh:
            bisect.insort(live, (cands[c].dist, c))
        self._front = None

    def _frontier(self) -> list[Any]:
        if self._front is None:
            cands = self.candidates
            self._front = [(c, cands[c]) for _, c in self._live[: self.k]]
        return self._front

    @property
    def in_flight(self) -> int:
        return self._waiting

    def next_queries(self) -> list[bytes]:
        out = super().next_queries()
        self._waiting += len(out)
        return out

    def on_reply(
        self, node: bytes, closer: tuple[bytes, ...], providers: tuple[Any, ...] = ()
    ) -> None:
        cand = self.candidates.get(node)
        if cand is not None and cand.state is State.WAITING:
            self._waiting -= 1
        super().on_reply(node, closer, providers)

    def on_failure(self, node: bytes) -> None:
        cand = self.candidates.get(node)
        if cand is not None and cand.state is State.WAITING:
            self._waiting -= 1
            live = self._live
            i = bisect.bisect_left(live, (cand.dist, node))
            if i < len(live) and live[i][1] == node:
                del live[i]
            self._front = None
        super().on_failure(node)


class SimNode(DhtNode):
    """A real DhtNode (same request handling, records and lookup rules) with the simulation's
    cheaper ``closest`` and lookup bookkeeping (SimTable, SimLookup)."""

    def __init__(self, own: bytes, verify: Verifier, *, k: int = K, alpha: int = ALPHA,
                 now: float = 0.0) -> None:
        super().__init__(own, verify, k=k, alpha=alpha, now=now)
        self.table = SimTable(own, k=k, now=now)

    def lookup(self, target: bytes, now: float, want_providers: int = 0, *,
               local: bool = True) -> Lookup:
        return SimLookup.adopt(super().lookup(target, now, want_providers, local=local))


@dataclass
class _Peer:
    node: DhtNode
    latency: float
    side: int = 0
    alive: bool = True


@dataclass
class _Job:
    """A lookup in progress, with the bookkeeping the measurements need."""

    lookup: Lookup
    origin: bytes
    started: float
    kind: str  # "measured", or the maintenance it is: "publish", "join", "refresh"
    on_done: Callable[[_Job, float], None]
    paths: list[Lookup] = field(default_factory=list)  # disjoint paths; paths[0] is lookup
    owner: dict[bytes, int] = field(default_factory=dict)  # node -> the one path that may ask it
    messages: int = 0
    first_result: float | None = None
    winner: Lookup | None = None  # the path that found the first provider
    done: bool = False

    def providers(self) -> dict[bytes, Any]:
        found: dict[bytes, Any] = {}
        for lk in self.paths:
            for holder, rec in lk.providers.items():
                found.setdefault(holder, rec)
        return found

    def closest(self) -> list[bytes]:
        """The k closest nodes that answered, over every path."""
        if len(self.paths) == 1:
            return self.lookup.closest()
        t = int.from_bytes(self.lookup.target, "big")
        answered = {c for lk in self.paths for c in lk.closest()}
        return sorted(answered, key=lambda c: int.from_bytes(c, "big") ^ t)[: self.lookup.k]


@dataclass
class SimResult:
    config: SimConfig
    lookups: int = 0
    successes: int = 0
    rounds: list[int] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    flood_messages: list[int] = field(default_factory=list)
    flood_rounds: list[int] = field(default_factory=list)
    maintenance_messages: int = 0
    maintenance_by: dict[str, int] = field(default_factory=dict)  # publish/join/refresh/ping
    churned: int = 0
    contacts_per_node: float = 0.0
    records_per_node: float = 0.0
    bytes_per_node: float = 0.0
    rejected_records: int = 0

    def summary(self) -> dict[str, Any]:
        def pct(xs: list[int] | list[float], q: float) -> float:
            if not xs:
                return float("nan")
            s = sorted(xs)
            return float(s[min(len(s) - 1, int(q * len(s)))])

        c = self.config
        minutes = c.duration_s / 60
        return {
            "nodes": c.nodes,
            "lookups": self.lookups,
            "success": self.successes / self.lookups if self.lookups else float("nan"),
            "success_low95": _wilson_low(self.successes, self.lookups),
            "rounds_p50": pct(self.rounds, 0.5),
            "rounds_p99": pct(self.rounds, 0.99),
            "msgs_mean": statistics.fmean(self.messages) if self.messages else float("nan"),
            "msgs_p99": pct(self.messages, 0.99),
            "time_p50_ms": 1000 * pct(self.times, 0.5),
            "time_p99_ms": 1000 * pct(self.times, 0.99),
            "flood_msgs_mean": (statistics.fmean(self.flood_messages)
                                if self.flood_messages else float("nan")),
            "flood_rounds_p50": pct(self.flood_rounds, 0.5),
            "maint_msgs_per_node_min": self.maintenance_messages / max(1, c.nodes) / minutes,
            "maint_by": dict(sorted(self.maintenance_by.items())),
            "churned": self.churned,
            "contacts_per_node": self.contacts_per_node,
            "records_per_node": self.records_per_node,
            "kib_per_node": self.bytes_per_node / 1024,
            "rejected_records": self.rejected_records,
        }


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.c = config
        self.rng = random.Random(config.seed)
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.peers: dict[bytes, _Peer] = {}
        self.alive: list[bytes] = []
        self.resources: dict[bytes, bytes] = {}  # key -> holder
        self.result = SimResult(config)
        self.partitioned = False
        self.sybils: set[bytes] = set()  # eclipse attackers (config.adversaries)

    # ----------------------------------------------------------------- event plumbing
    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, fn))

    def run_until(self, end: float) -> None:
        while self._queue and self._queue[0][0] <= end:
            when, _, fn = heapq.heappop(self._queue)
            self.now = when
            fn()
        self.now = end

    def _new_peer(self, node_id: bytes) -> _Peer:
        lo, hi = self.c.latency_ms
        part = self.c.partition
        side = 1 if part is not None and self.rng.random() < part[2] else 0
        peer = _Peer(SimNode(node_id, sim_verify, k=self.c.k, alpha=self.c.alpha, now=self.now),
                     self.rng.uniform(lo, hi) / 1000, side)
        self.peers[node_id] = peer
        return peer

    def _reachable(self, a: _Peer, b: _Peer) -> bool:
        return b.alive and not (self.partitioned and a.side != b.side)

    # ----------------------------------------------------------------- messaging
    def _request(self, job: _Job | None, src: bytes, dst: bytes, msg: Message,
                 on_reply: Callable[[Message | None], None]) -> None:
        """Send *msg*; later call *on_reply* with the reply, or None after a timeout."""
        a, b = self.peers[src], self.peers.get(dst)
        self._count(job, 1)
        sent = self.now
        if b is None or self.rng.random() < self.c.loss:
            self.at(sent + self.c.timeout_s, lambda: on_reply(None))
            return
        one_way = a.latency + b.latency

        def deliver() -> None:
            if not self._reachable(a, b) or not a.alive:
                self.at(sent + self.c.timeout_s, lambda: on_reply(None))
                return
            handled = (self._sybil_reply(src, msg) if dst in self.sybils
                       else b.node.handle(src, msg, self.now))
            if handled.ping is not None:
                self._ping(dst, handled.ping)
            if handled.reply is None:
                return
            self._count(job, 1)
            reply = handled.reply
            if self.rng.random() < self.c.loss:
                self.at(sent + self.c.timeout_s, lambda: on_reply(None))
            else:
                self.at(self.now + one_way, lambda: on_reply(reply))

        self.at(sent + one_way, deliver)

    def _honest(self) -> list[bytes]:
        return [n for n in self.alive if n not in self.sybils]

    def _sybil_reply(self, src: bytes, msg: Message) -> Handled:
        """An eclipse attacker: answers every lookup with only the attackers closest to the
        target (it knows them all), never returns a record, drops announcements."""
        if isinstance(msg, FindNode | GetProviders):
            target = msg.target if isinstance(msg, FindNode) else msg.key
            t = int.from_bytes(target, "big")
            near = sorted((c for c in self.sybils if c != src and self.peers[c].alive),
                          key=lambda c: int.from_bytes(c, "big") ^ t)[: self.c.k]
            return Handled(Nodes(tuple(near)) if isinstance(msg, FindNode)
                           else Providers((), tuple(near)))
        return Handled(None)

    def _count(self, job: _Job | None, n: int) -> None:
        if job is not None and job.kind == "measured":
            job.messages += n
        else:
            self._maintenance("publish" if job is None else job.kind, n)

    def _maintenance(self, kind: str, n: int) -> None:
        self.result.maintenance_messages += n
        by = self.result.maintenance_by
        by[kind] = by.get(kind, 0) + n

    def _ping(self, src: bytes, oldest: bytes) -> None:
        """*src* pings the oldest contact of a full bucket (two messages if it answers)."""
        a, b = self.peers[src], self.peers.get(oldest)
        self._maintenance("ping", 1)
        if b is not None and self._reachable(a, b) and self.rng.random() >= self.c.loss:
            self._maintenance("ping", 1)
            self.at(self.now + a.latency + b.latency,
                    lambda: a.node.table.ping_answered(oldest, self.now))
        else:
            self.at(self.now + self.c.timeout_s, lambda: a.node.table.failed(oldest))

    # ----------------------------------------------------------------- lookups
    def start_lookup(self, origin: bytes, target: bytes, want: int, kind: str,
                     on_done: Callable[[_Job, float], None]) -> _Job:
        peer = self.peers[origin]
        lk = peer.node.lookup(target, self.now, want)
        job = _Job(lk, origin, self.now, kind, on_done, paths=[lk])
        if self.c.paths > 1:
            # S/Kademlia's disjoint paths: the seeds are dealt out to d lookups, and a node
            # learned by one path is never asked by another.
            job.paths = [SimLookup(target, want_providers=want, k=lk.k, alpha=lk.alpha)
                         for _ in range(self.c.paths)]
            job.lookup = job.paths[0]
            job.lookup.providers.update(lk.providers)
            seeds = sorted(lk.candidates, key=lambda c: lk.candidates[c].dist)
            for i, c in enumerate(seeds):
                job.paths[i % self.c.paths].seed([c])
                job.owner[c] = i % self.c.paths
        if want and job.lookup.providers:
            job.first_result, job.winner = self.now, job.lookup
        self._pump(job)
        return job

    def _finished(self, job: _Job) -> bool:
        if len(job.paths) == 1:
            return job.lookup.finished
        want = job.lookup.want_providers
        if want and any(len(lk.providers) >= want for lk in job.paths):
            return True
        return all(lk.finished for lk in job.paths)

    def _pump(self, job: _Job) -> None:
        if job.done:
            return
        if self._finished(job):
            job.done = True
            job.on_done(job, self.now)
            return
        for i, lk in enumerate(job.paths):
            for dst in lk.next_queries():
                msg: Message = (GetProviders(lk.target) if lk.want_providers
                                else FindNode(lk.target))
                self._request(job, job.origin, dst, msg,
                              functools.partial(self._answer, job, i, dst))

    def _answer(self, job: _Job, path: int, dst: bytes, reply: Message | None) -> None:
        peer = self.peers[job.origin]
        if not peer.alive:
            return
        lk = job.paths[path]
        if reply is not None and len(job.paths) > 1 and isinstance(reply, Nodes | Providers):
            owner = job.owner  # keep only the contacts no other path has claimed
            closer = tuple(c for c in reply.closer if owner.setdefault(c, path) == path)
            reply = (Nodes(closer) if isinstance(reply, Nodes)
                     else Providers(reply.providers, closer))
        if reply is None:
            lk.on_failure(dst)
            peer.node.table.failed(dst)
        else:
            ping = peer.node.table.observe(dst, self.now)
            if ping is not None:
                self._ping(job.origin, ping)
            if isinstance(reply, Providers):
                had = len(lk.providers)
                lk.on_reply(dst, reply.closer, peer.node.reply_records(reply.providers, self.now))
                if had == 0 and lk.providers and job.first_result is None:
                    job.first_result, job.winner = self.now, lk
            elif isinstance(reply, Nodes):
                lk.on_reply(dst, reply.closer)
            else:
                lk.on_failure(dst)
        self._pump(job)

    # ----------------------------------------------------------------- providing
    def publish(self, holder: bytes, key: bytes) -> None:
        """*holder* finds the k closest nodes to *key* and announces itself to each."""
        def stored(job: _Job, _now: float) -> None:
            if not self.peers[holder].alive:
                return
            rec = make_record(key, holder, b"sim", self.now, sim_signer(holder), EXPIRY_S)
            for dst in job.closest():
                self._request(None, holder, dst, AddProvider(rec), lambda _r: None)

        self.start_lookup(holder, key, 0, "publish", stored)
        if self.c.republish_s > 0:
            self.at(self.now + self.c.republish_s, lambda: self._republish(holder, key))

    def _republish(self, holder: bytes, key: bytes) -> None:
        if self.peers[holder].alive:
            self.publish(holder, key)

    # ----------------------------------------------------------------- set-up and churn
    def _fill_tables(self) -> None:
        """Converged tables: each bucket holds up to k random nodes of its ID range."""
        ints = sorted(int.from_bytes(n, "big") for n in self.peers)
        k = self.c.k
        for node_id, peer in self.peers.items():
            v = int.from_bytes(node_id, "big")
            for i in range(ID_BITS - 1, -1, -1):
                lo = ((v >> i) ^ 1) << i
                a = bisect.bisect_left(ints, lo)
                b = bisect.bisect_left(ints, lo + (1 << i))
                if a == b:
                    if b - a == 0 and i < 4:
                        break
                    continue
                picks = range(a, b) if b - a <= k else self.rng.sample(range(a, b), k)
                for j in picks:
                    peer.node.table.observe(ints[j].to_bytes(ID_BYTES, "big"), self.now)
                mine = (v >> i) << i  # the IDs below bucket i share bits i.. with this node
                if bisect.bisect_left(ints, mine + (1 << i)) - bisect.bisect_left(ints, mine) <= 1:
                    break  # nobody but this node: every lower bucket is empty

    def _join(self) -> None:
        """One churn step: a random live node vanishes, a new one joins through a few others
        (a device's direct neighbours) and looks up its own ID."""
        if len(self.alive) < 2:
            return
        gone = self.alive.pop(self.rng.randrange(len(self.alive)))
        self.peers[gone].alive = False
        self.result.churned += 1
        new_id = random_id(self.rng)
        self._new_peer(new_id)
        self._bootstrap(new_id, 3)
        self.alive.append(new_id)
        self._schedule_refresh(new_id)

    def _bootstrap(self, node_id: bytes, attempts: int) -> None:
        peer = self.peers[node_id]
        for boot in self.rng.sample(self.alive, min(JOIN_CONTACTS, len(self.alive))):
            peer.node.table.observe(boot, self.now)

        def joined(_job: _Job, _now: float) -> None:
            if peer.alive and len(peer.node.table) < self.c.k and attempts > 1:
                self._bootstrap(node_id, attempts - 1)

        self.start_lookup(node_id, node_id, 0, "join", joined)

    def _schedule_refresh(self, node_id: bytes) -> None:
        if self.c.refresh_s > 0:
            self.at(self.now + self.c.refresh_s * (0.5 + self.rng.random()),
                    lambda: self._refresh(node_id))

    def _refresh(self, node_id: bytes) -> None:
        peer = self.peers[node_id]
        if not peer.alive:
            return
        for index in peer.node.table.stale_buckets(self.now, self.c.refresh_s):
            target = random_id_in_bucket(node_id, index, self.rng)
            self.start_lookup(node_id, target, 0, "refresh", lambda _j, _n: None)
        self._schedule_refresh(node_id)

    # ----------------------------------------------------------------- measuring
    def _lookup_done(self, job: _Job, _now: float) -> None:
        r = self.result
        r.lookups += 1
        r.messages.append(job.messages)
        if job.providers():
            r.successes += 1
            r.rounds.append((job.winner or job.lookup).rounds)
            r.times.append((job.first_result or self.now) - job.started)

    def _measured_lookup(self, flood: bool) -> None:
        src = self.rng.choice(self._honest() if self.sybils else self.alive)
        side = self.peers[src].side
        keys = [k for k, h in self.resources.items()
                if self.peers[h].alive and (not self.partitioned or self.peers[h].side == side)]
        if not keys:
            return
        key = self.rng.choice(keys)
        if flood:
            self._flood(src, self.resources[key])
        self.start_lookup(src, key, self.c.want_providers, "measured", self._lookup_done)

    def _flood(self, src: bytes, holder: bytes) -> None:
        """Messages and rounds if *src* flooded the query over a random graph of live nodes."""
        live = [n for n in self.alive if not self.partitioned
                or self.peers[n].side == self.peers[src].side]
        index = {n: i for i, n in enumerate(live)}
        adj: list[list[int]] = [[] for _ in live]
        half = max(1, self.c.flood_degree // 2)
        for i in range(len(live)):
            for j in self.rng.sample(range(len(live)), min(half, len(live))):
                if j != i:
                    adj[i].append(j)
                    adj[j].append(i)
        start, goal = index[src], index[holder]
        depth = {start: 0}
        frontier, msgs, found = [start], 0, 0
        while frontier:
            nxt = []
            for u in frontier:
                msgs += len(adj[u]) - (u != start)
                for w in adj[u]:
                    if w not in depth:
                        depth[w] = depth[u] + 1
                        nxt.append(w)
            frontier = nxt
        found = depth.get(goal, -1)
        self.result.flood_messages.append(msgs)
        self.result.flood_rounds.append(found)

    def _memory(self) -> None:
        live = [self.peers[n] for n in self.alive]
        r = self.result
        r.contacts_per_node = statistics.fmean(len(p.node.table) for p in live)
        r.records_per_node = statistics.fmean(len(p.node.store) for p in live)
        r.rejected_records = sum(p.node.rejected for p in self.peers.values())
        sample = live[: min(50, len(live))]
        r.bytes_per_node = statistics.fmean(_node_bytes(p.node) for p in sample)

    def run(self, progress: Callable[[float, SimResult], None] | None = None) -> SimResult:
        """Runs the whole simulation; *progress* (if given) is called every 5 virtual minutes
        with the virtual time and the result so far (long runs print it)."""
        c = self.c
        if progress is not None:
            report = progress
            for i in range(1, int((60 + c.duration_s) // 300) + 1):
                self.at(300.0 * i, lambda: report(self.now, self.result))
        for _ in range(c.nodes):
            self.alive.append(random_id(self.rng))
            self._new_peer(self.alive[-1])
        self._fill_tables()
        if c.adversaries > 0:
            self.sybils = set(self.rng.sample(self.alive, round(c.adversaries * c.nodes)))
        for i in range(c.resources):
            holder = self.rng.choice(self._honest() if self.sybils else self.alive)
            key = resource_key(f"sim-resource-{c.seed}-{i}")
            self.resources[key] = holder
            self.publish(holder, key)
        for node_id in self.alive:
            self._schedule_refresh(node_id)
        self.run_until(60.0)  # announcements settle
        t0 = self.now
        if c.churn_fraction > 0:
            count = round(c.churn_fraction * c.nodes * c.duration_s / c.churn_period_s)
            for i in range(count):
                self.at(t0 + c.duration_s * (i + 0.5) / count, self._join)
        if c.partition is not None:
            start, end, _ = c.partition
            self.at(t0 + start, lambda: setattr(self, "partitioned", True))
            self.at(t0 + end, lambda: setattr(self, "partitioned", False))
        every = max(1, c.lookups // max(1, c.flood_samples))
        for i in range(c.lookups):
            when = t0 + c.duration_s * (i + 0.5) / c.lookups
            self.at(when, functools.partial(self._measured_lookup, i % every == 0))
        self.run_until(t0 + c.duration_s + 10 * c.timeout_s)
        self._memory()
        return self.result


def _wilson_low(successes: int, n: int, z: float = 1.96) -> float:
    """The lower end of the 95 % Wilson interval of a success rate measured on *n* lookups."""
    if n == 0:
        return float("nan")
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt((p * (1 - p) + z * z / (4 * n)) / n)
    return (centre - spread) / (1 + z * z / n)


def _node_bytes(node: DhtNode) -> int:
    """Approximate heap bytes of one node's table and records (IDs counted per node)."""
    size = sys.getsizeof(node.table.buckets)
    for b in node.table.buckets.values():
        size += sys.getsizeof(b) + sys.getsizeof(b.entries) + sys.getsizeof(b.replacements)
        size += (len(b.entries) + len(b.replacements)) * (sys.getsizeof(b"\0" * ID_BYTES) + 24)
    size += sys.getsizeof(node.store.records)
    for holders in node.store.records.values():
        size += sys.getsizeof(holders) + sum(r.size() + 56 for r in holders.values())
    return size
