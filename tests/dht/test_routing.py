"""k-buckets: XOR metric, least-recently-seen eviction with a ping, replacement cache, refresh."""

from __future__ import annotations

import random

import pytest

from agent.dht.keyspace import bucket_index, distance, random_id, random_id_in_bucket, resource_key
from agent.dht.routing import RoutingTable

OWN = bytes(32)


def in_bucket(index: int, n: int) -> bytes:
    """An ID in OWN's bucket *index* (distance 2**index + n)."""
    return ((1 << index) + n).to_bytes(32, "big")


def test_xor_metric() -> None:
    a, b = random_id(random.Random(1)), random_id(random.Random(2))
    assert distance(a, a) == 0
    assert distance(a, b) == distance(b, a) > 0
    assert bucket_index(OWN, in_bucket(255, 0)) == 255
    assert bucket_index(OWN, in_bucket(0, 0)) == 0
    assert bucket_index(OWN, OWN) == -1
    assert len(resource_key("a/b")) == 32 and resource_key("a/b") != resource_key("a/c")


def test_random_id_in_bucket_lands_in_that_bucket() -> None:
    rng = random.Random(3)
    own = random_id(rng)
    for index in (0, 1, 7, 100, 255):
        assert bucket_index(own, random_id_in_bucket(own, index, rng)) == index
    with pytest.raises(ValueError):
        random_id_in_bucket(own, 256, rng)


def test_rejects_malformed_ids() -> None:
    table = RoutingTable(OWN)
    with pytest.raises(ValueError):
        table.observe(b"\x01" * 31, 0.0)
    assert table.observe(OWN, 0.0) is None and len(table) == 0


def test_full_bucket_pings_oldest_and_keeps_it_when_it_answers() -> None:
    table = RoutingTable(OWN, k=3)
    ids = [in_bucket(10, n) for n in range(5)]
    for t, node in enumerate(ids[:3]):
        assert table.observe(node, float(t)) is None
    assert table.observe(ids[3], 3.0) == ids[0]  # oldest pinged, newcomer waits
    assert table.observe(ids[4], 4.0) is None  # one ping at a time per bucket
    assert ids[3] not in table
    table.ping_answered(ids[0], 5.0)
    assert ids[0] in table and ids[3] not in table
    assert table.buckets[10].entries.popitem(last=True)[0] == ids[0]  # now most recently seen


def test_failed_oldest_is_replaced_by_freshest_replacement() -> None:
    table = RoutingTable(OWN, k=3)
    ids = [in_bucket(10, n) for n in range(5)]
    for t, node in enumerate(ids):
        table.observe(node, float(t))
    table.failed(ids[0])
    assert ids[0] not in table
    assert ids[4] in table and ids[3] not in table  # the freshest replacement is promoted
    assert list(table.buckets[10].replacements) == [ids[3]]


def test_replacement_cache_is_bounded() -> None:
    table = RoutingTable(OWN, k=2, replacements=2)
    for n in range(50):
        table.observe(in_bucket(20, n), float(n))
    bucket = table.buckets[20]
    assert len(bucket.entries) == 2 and len(bucket.replacements) == 2
    assert list(bucket.replacements) == [in_bucket(20, 48), in_bucket(20, 49)]


def test_closest_orders_by_xor_distance() -> None:
    rng = random.Random(4)
    table = RoutingTable(OWN)
    nodes = [random_id(rng) for _ in range(300)]
    for node in nodes:
        table.observe(node, 0.0)
    target = random_id(rng)
    got = table.closest(target, 5)
    known = sorted(table.contacts(), key=lambda c: distance(c, target))
    assert got == known[:5]
    assert len(table) <= 20 * len(table.buckets)


def test_stale_buckets_need_refresh_until_a_lookup_touches_them() -> None:
    table = RoutingTable(OWN, now=0.0)
    table.observe(in_bucket(5, 0), 0.0)
    table.observe(in_bucket(9, 0), 0.0)
    assert table.stale_buckets(100.0, 600.0) == []
    assert table.stale_buckets(700.0, 600.0) == [5, 9]
    table.touch(in_bucket(9, 3), 650.0)
    assert table.stale_buckets(700.0, 600.0) == [5]


def test_node_answers_and_asks_for_a_ping_when_a_bucket_is_full() -> None:
    from agent.dht.messages import FindNode, Nodes, Ping, Pong
    from agent.dht.node import DhtNode
    from agent.dht.sim import sim_verify

    node = DhtNode(OWN, sim_verify, k=2)
    a, b, c = in_bucket(30, 0), in_bucket(30, 1), in_bucket(30, 2)
    assert node.handle(a, Ping(), 0.0).reply == Pong()
    assert node.handle(b, Ping(), 1.0).ping is None
    handled = node.handle(c, FindNode(c), 2.0)
    assert handled.ping == a  # bucket 30 full: the caller pings its oldest contact
    assert handled.reply == Nodes((a, b))  # closest to c first (2 ^ 0 < 2 ^ 1), never c
