"""The iterative lookup state machine: alpha in flight, convergence, lost replies, providers."""

from __future__ import annotations

import random

from agent.dht.keyspace import distance, random_id
from agent.dht.lookup import Lookup
from agent.dht.records import make_record
from agent.dht.routing import RoutingTable
from agent.dht.sim import sim_signer


def network(n: int, seed: int) -> tuple[list[bytes], dict[bytes, RoutingTable]]:
    rng = random.Random(seed)
    ids = [random_id(rng) for _ in range(n)]
    tables = {i: RoutingTable(i) for i in ids}
    for i in ids:
        for j in rng.sample(ids, 60):
            tables[i].observe(j, 0.0)
    return ids, tables


def drive(lk: Lookup, tables: dict[bytes, RoutingTable], lose: set[bytes]) -> int:
    """Answer every request at once (those to *lose* fail); returns requests sent."""
    sent = 0
    while not lk.finished:
        batch = lk.next_queries()
        assert batch and lk.in_flight <= lk.alpha
        sent += len(batch)
        for node in batch:
            if node in lose:
                lk.on_failure(node)
            else:
                lk.on_reply(node, tuple(tables[node].closest(lk.target)))
    return sent


def test_find_node_converges_to_the_true_closest() -> None:
    ids, tables = network(400, 1)
    target = random_id(random.Random(9))
    lk = Lookup(target)
    lk.seed(tables[ids[0]].closest(target))
    drive(lk, tables, set())
    truth = sorted(ids, key=lambda i: distance(i, target))[:20]
    assert len(set(lk.closest()) & set(truth)) >= 18
    assert lk.rounds <= 5


def test_converges_when_the_first_alpha_replies_are_lost() -> None:
    ids, tables = network(400, 2)
    target = random_id(random.Random(10))
    seeds = tables[ids[0]].closest(target)
    lk = Lookup(target)
    lk.seed(seeds)
    first = lk.next_queries()
    assert len(first) == 3
    for node in first:  # a whole wave lost
        lk.on_failure(node)
    drive(lk, tables, set())
    assert lk.failures == 3 and lk.finished
    truth = sorted(set(ids) - set(first), key=lambda i: distance(i, target))[:20]
    assert len(set(lk.closest()) & set(truth)) >= 18


def test_lookup_with_only_dead_contacts_finishes_empty() -> None:
    rng = random.Random(3)
    lk = Lookup(random_id(rng))
    dead = [random_id(rng) for _ in range(5)]
    lk.seed(dead)
    sent = drive(lk, {}, set(dead))
    assert sent == 5 and lk.finished and lk.closest() == []


def test_late_and_unsolicited_replies_are_ignored() -> None:
    rng = random.Random(4)
    lk = Lookup(random_id(rng))
    a, stranger = random_id(rng), random_id(rng)
    lk.seed([a])
    lk.on_reply(stranger, (random_id(rng),))
    assert lk.replies == 0 and stranger not in lk.candidates
    assert lk.next_queries() == [a]
    lk.on_failure(a)
    lk.on_reply(a, (random_id(rng),))  # after its timeout: too late
    assert lk.replies == 0 and lk.finished


def test_provider_lookup_stops_at_first_holder_and_counts_rounds() -> None:
    rng = random.Random(5)
    key, holder = random_id(rng), random_id(rng)
    rec = make_record(key, holder, b"sim", 0.0, sim_signer(holder))
    lk = Lookup(key, want_providers=1)
    near = [random_id(rng) for _ in range(3)]
    lk.seed(near)
    batch = lk.next_queries()
    second = random_id(rng)
    lk.on_reply(batch[0], (second,))
    lk.on_reply(batch[1], ())
    lk.on_reply(batch[2], ())
    assert lk.next_queries() == [second] and lk.round_of(second) == 2
    other_key = make_record(random_id(rng), holder, b"sim", 0.0, sim_signer(holder))
    lk.on_reply(second, (), (other_key, rec))
    assert lk.finished and list(lk.providers) == [holder] and lk.rounds == 2


def test_candidates_are_bounded() -> None:
    rng = random.Random(6)
    lk = Lookup(random_id(rng), max_candidates=40)
    lk.seed([random_id(rng) for _ in range(20)])
    for node in lk.next_queries():
        lk.on_reply(node, tuple(random_id(rng) for _ in range(20)))
    assert len(lk.candidates) <= 40
