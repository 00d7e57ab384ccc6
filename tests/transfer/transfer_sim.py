"""Seeded discrete-event simulator for FetchPlanner (virtual clock; no asyncio, no sockets).

Each simulated source serves requests FIFO: a request reaches it after ``latency``, waits
for the requests ahead of it, takes ``length / bandwidth`` (with jitter) and the reply comes
back after ``latency``. Sources can answer with errors, send corrupt data (the driver checks
the hash, as the real fetcher does, and reports ``HASH_MISMATCH``), join late, disconnect
(the driver calls ``remove_source``) or fall silent (only timeouts reveal it).

The driver checks the planner's invariants after every call, so each run is also a test.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from dataclasses import dataclass, field

from agent.transfer import HASH_MISMATCH, FetchPlanner, Want

KIB = 1024
MIB = 1024 * KIB


class InvariantError(AssertionError):
    """The planner broke one of its promises; the message names the run."""


@dataclass
class SimSource:
    name: str
    bandwidth: float  # bytes/s
    latency: float = 0.005  # one way, seconds
    fail_prob: float = 0.0  # chance a request gets an error reply
    lie_prob: float = 0.0  # chance a request gets corrupt data
    death_time: float = math.inf
    death_mode: str = "disconnect"  # or "silent"
    join_time: float = 0.0
    jitter: float = 0.1  # relative, on service time

    @property
    def reliable(self) -> bool:
        """Honest, never fails, never dies: a fetch with one of these must finish."""
        return self.fail_prob == 0 and self.lie_prob == 0 and self.death_time == math.inf


@dataclass
class SimResult:
    done: bool
    failed: str | None
    end_time: float
    accepted: dict[str, int]  # chunks accepted (first arrival) per source
    requests: int
    duplicate_requests: int  # endgame copies
    data_ok: bool
    planner: FetchPlanner
    lost_on_removal: dict[str, int] = field(default_factory=dict)


def make_chunks(rng: random.Random, n: int, *, mean: int = 256 * KIB) -> list[tuple[Want, bytes]]:
    """Stand-in chunks: short random content whose hash is the id, with a logical length
    drawn around ``mean`` (the length drives the simulated transfer time)."""
    out = []
    for i in range(n):
        data = i.to_bytes(4, "big") + rng.randbytes(12)
        length = max(1, int(rng.uniform(0.25, 1.75) * mean))
        out.append((Want(hashlib.blake2b(data, digest_size=32).digest(), length), data))
    return out


def run(
    sources: list[SimSource],
    chunks: list[tuple[Want, bytes]],
    *,
    seed: int = 0,
    tick_interval: float = 0.5,
    time_limit: float = 3600.0,
    label: str = "",
    **planner_kw: object,
) -> SimResult:
    rng = random.Random(seed)
    wants = [w for w, _ in chunks]
    content = {w.chunk_id: d for w, d in chunks}
    planner = FetchPlanner(wants, **planner_kw)  # type: ignore[arg-type]
    max_window = planner.max_window
    by_name = {s.name: s for s in sources}
    busy_until = {s.name: 0.0 for s in sources}
    dead: set[str] = set()
    events: list[tuple[float, int, str, tuple]] = []
    seq = 0

    def push(t: float, kind: str, *args: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, args))

    for s in sources:
        push(s.join_time, "join", s.name)
        if s.death_time < math.inf:
            push(s.death_time, "death", s.name)
    push(0.0, "tick")

    received: dict[bytes, bytes] = {}
    outstanding: dict[bytes, set[str]] = {}  # what the driver believes is in flight
    accepted = {s.name: 0 for s in sources}
    lost_on_removal = {s.name: 0 for s in sources}
    requests = dup_requests = 0

    def fail(msg: str) -> None:
        raise InvariantError(f"{label} seed={seed} t={now:.3f}: {msg}")

    def forget(name: str, cid: bytes) -> None:
        holders = outstanding.get(cid)
        if holders is not None:
            holders.discard(name)
            if not holders:
                del outstanding[cid]

    def send(name: str, want: Want) -> None:
        src = by_name[name]
        arrive = now + src.latency
        roll = rng.random()
        if roll < src.fail_prob:
            outcome, service = "error", 0.0
        elif roll < src.fail_prob + src.lie_prob:
            outcome, service = "lie", want.length / src.bandwidth
        else:
            outcome, service = "ok", want.length / src.bandwidth
        service *= 1 + rng.uniform(-src.jitter, src.jitter)
        start = max(arrive, busy_until[name])
        busy_until[name] = start + service
        push(start + service + src.latency, "reply", name, want.chunk_id, outcome)

    now = 0.0
    pending_joins = sum(1 for s in sources if s.join_time > 0)
    while events and not planner.done and (planner.failed is None or pending_joins):
        now, _, kind, args = heapq.heappop(events)
        if now > time_limit:
            fail(
                f"no progress: {planner.bytes_done}/{planner.bytes_total} bytes, "
                f"stats={planner.source_stats()}"
            )
        if kind == "join":
            pending_joins -= by_name[args[0]].join_time > 0
            planner.add_source(args[0], now)
        elif kind == "death":
            name = args[0]
            dead.add(name)
            if by_name[name].death_mode == "disconnect":
                lost = planner.remove_source(name, "disconnected", now)
                lost_on_removal[name] += len(lost)
                for w in lost:
                    forget(name, w.chunk_id)
        elif kind == "reply":
            name, cid, outcome = args
            src = by_name[name]
            if name in dead or now > src.death_time:
                continue  # the reply never left a dead source
            forget(name, cid)
            if outcome == "error":
                planner.on_failure(name, cid, "not available", now)
            elif outcome == "lie":
                planner.on_failure(name, cid, HASH_MISMATCH, now)  # the fetcher's hash check
            else:
                data = content[cid]
                if hashlib.blake2b(data, digest_size=32).digest() != cid:
                    fail("corrupt stand-in")
                fresh = planner.on_chunk(name, cid, now)
                if fresh:
                    if cid in received:
                        fail(f"{cid.hex()[:8]} accepted twice")
                    received[cid] = data
                    accepted[name] += 1
                elif cid not in received:
                    fail(f"needed chunk {cid.hex()[:8]} from {name} refused")
        elif kind == "tick":
            push(now + tick_interval, "tick")

        for name, want in planner.tick(now):
            forget(name, want.chunk_id)
        for name, cid in planner.cancelled_requests():
            forget(name, cid)
        reqs = planner.next_requests(now)
        if not reqs:
            continue
        active = set(planner.active_sources())
        for name, want in reqs:
            cid = want.chunk_id
            if cid in received:
                fail(f"requested {cid.hex()[:8]} from {name} after it was received")
            if name not in active:
                fail(f"requested from inactive source {name}")
            holders = outstanding.setdefault(cid, set())
            if name in holders:
                fail(f"{cid.hex()[:8]} requested twice from {name}")
            if holders:
                if not planner.endgame or planner.pending_count:
                    fail(f"{cid.hex()[:8]} in flight twice outside endgame")
                if len(holders) >= 2:
                    fail(f"{cid.hex()[:8]} in flight {len(holders) + 1} times")
                dup_requests += 1
            holders.add(name)
            requests += 1
            send(name, want)
        stats = planner.source_stats()
        asked = {name for name, _ in reqs}
        for name, st in stats.items():
            if not 1 <= st.window <= max_window:
                fail(f"{name} window {st.window} outside [1, {max_window}]")
            if name in asked and st.in_flight > st.window:
                fail(f"{name} has {st.in_flight} in flight, window {st.window}")

    data_ok = planner.done and b"".join(received[w.chunk_id] for w, _ in chunks) == b"".join(
        d for _, d in chunks
    )
    if planner.done and planner.bytes_done != planner.bytes_total:
        fail("done but byte count is off")
    return SimResult(
        done=planner.done,
        failed=planner.failed,
        end_time=now,
        accepted=accepted,
        requests=requests,
        duplicate_requests=dup_requests,
        data_ok=data_ok,
        planner=planner,
        lost_on_removal=lost_on_removal,
    )


def random_source(rng: random.Random, name: str, *, reliable: bool) -> SimSource:
    """A reliable source is fast enough that a full window never nears the request timeout;
    the others may be anything, including very slow, flaky, lying, late or dying."""
    if reliable:
        return SimSource(
            name,
            bandwidth=math.exp(rng.uniform(math.log(1 * MIB), math.log(20 * MIB))),
            latency=rng.uniform(0.0005, 0.05),
            join_time=rng.choice([0.0, 0.0, rng.uniform(0, 3)]),
        )
    kind = rng.choice(["slow", "flaky", "liar", "disconnect", "silent", "mixed"])
    src = SimSource(
        name,
        bandwidth=math.exp(rng.uniform(math.log(100 * KIB), math.log(20 * MIB))),
        latency=rng.uniform(0.0005, 0.2),
        join_time=rng.choice([0.0, 0.0, rng.uniform(0, 5)]),
    )
    if kind in ("flaky", "mixed"):
        src.fail_prob = rng.uniform(0.05, 0.6)
    if kind in ("liar", "mixed"):
        src.lie_prob = rng.uniform(0.05, 1.0)
    if kind in ("disconnect", "silent", "mixed"):
        src.death_time = rng.uniform(0, 10)
        src.death_mode = "silent" if kind == "silent" else rng.choice(["disconnect", "silent"])
    return src


def random_planner_kw(rng: random.Random) -> dict[str, object]:
    max_window = rng.choice([1, 2, 4, 8, 16, 64])
    return {
        "initial_window": rng.randint(1, 8),
        "max_window": max_window,
        "request_timeout": rng.choice([5.0, 10.0, 20.0]),
        "max_failures_per_source": rng.randint(1, 4),
        "endgame": rng.random() < 0.8,
    }
