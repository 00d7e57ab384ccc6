"""Provider records: signed by the holder; forged, stale, unsigned and oversized ones refused;
stores bounded per key, in keys and in bytes; republish schedule."""

from __future__ import annotations

import dataclasses

import pytest

from agent.dht.keyspace import resource_key
from agent.dht.messages import AddProvider, GetProviders, Providers
from agent.dht.node import DhtNode
from agent.dht.records import (
    EXPIRY_S,
    ProviderRecord,
    ProviderStore,
    RecordError,
    Republisher,
    StoreLimits,
    check_record,
    make_record,
)
from agent.dht.sim import sim_signer, sim_verify

KEY = resource_key("films/a.mkv")
HOLDER = b"\x11" * 32
OTHER = b"\x22" * 32
NOW = 1_000_000.0


def good(holder: bytes = HOLDER, key: bytes = KEY, now: float = NOW) -> ProviderRecord:
    return make_record(key, holder, b"sim", now, sim_signer(holder))


CASES = {
    "unsigned": dataclasses.replace(good(), signature=b""),
    "forged by another device": make_record(KEY, HOLDER, b"sim", NOW, sim_signer(OTHER)),
    "holder swapped": dataclasses.replace(good(), holder=OTHER),
    "key swapped": dataclasses.replace(good(), key=resource_key("other")),
    "expiry extended": dataclasses.replace(good(), expiry=good().expiry + 60),
    "stale": good(now=NOW - EXPIRY_S - 1),
    "expires now": good(now=NOW - EXPIRY_S),
    "too far ahead": good(now=NOW + 3600),
    "oversized signature": dataclasses.replace(good(), signature=b"\0" * 65),
    "oversized holder key": dataclasses.replace(good(), holder_key=b"\0" * 65),
    "short key": dataclasses.replace(good(), key=KEY[:31]),
    "wrong holder key": dataclasses.replace(good(), holder_key=b"mallory"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_records_are_refused(name: str) -> None:
    with pytest.raises(RecordError):
        check_record(CASES[name], NOW, sim_verify)
    store = ProviderStore(sim_verify)
    with pytest.raises(RecordError):
        store.add(CASES[name], NOW)
    assert len(store) == 0 and store.bytes_used == 0


def test_a_good_record_is_kept_until_it_expires() -> None:
    store = ProviderStore(sim_verify)
    rec = good()
    store.add(rec, NOW)
    assert store.get(KEY, NOW) == [rec]
    assert store.get(KEY, rec.expiry) == []
    assert store.sweep(rec.expiry) == 1 and store.bytes_used == 0


def test_newer_record_from_same_holder_replaces_older() -> None:
    store = ProviderStore(sim_verify)
    old, new = good(now=NOW), good(now=NOW + 100)
    store.add(new, NOW)
    store.add(old, NOW)  # an older copy never wins
    assert store.get(KEY, NOW) == [new] and len(store) == 1
    assert store.bytes_used == new.size()


def test_a_republished_record_replaces_the_only_one_of_its_key() -> None:
    """Regression: replacing a key's only record dropped the key, and the new record went
    into a dict nobody kept; a holder's republish erased its own record everywhere."""
    store = ProviderStore(sim_verify)
    old, new = good(now=NOW), good(now=NOW + 100)
    store.add(old, NOW)
    store.add(new, NOW + 100)
    assert store.get(KEY, NOW + 100) == [new] and len(store) == 1
    assert store.bytes_used == new.size()


def test_records_per_key_bounded_soonest_expiry_gives_way() -> None:
    store = ProviderStore(sim_verify, StoreLimits(per_key=3))
    recs = [good(holder=bytes([i]) * 32, now=NOW + i) for i in range(1, 5)]
    for rec in recs[:3]:
        store.add(rec, NOW)
    store.add(recs[3], NOW)
    assert {r.holder for r in store.get(KEY, NOW)} == {r.holder for r in recs[1:]}
    with pytest.raises(RecordError):
        store.add(good(holder=b"\x09" * 32, now=NOW - 10), NOW)  # expires sooner than all


def test_keys_and_bytes_bounded() -> None:
    store = ProviderStore(sim_verify, StoreLimits(keys=2))
    store.add(good(key=resource_key("a")), NOW)
    store.add(good(key=resource_key("b")), NOW)
    with pytest.raises(RecordError, match="too many keys"):
        store.add(good(key=resource_key("c")), NOW)
    assert len(store.records) == 2
    size = good().size()
    store = ProviderStore(sim_verify, StoreLimits(bytes=2 * size))
    store.add(good(key=resource_key("a")), NOW)
    store.add(good(key=resource_key("b")), NOW)
    with pytest.raises(RecordError, match="byte budget"):
        store.add(good(key=resource_key("c")), NOW)
    assert store.bytes_used == 2 * size and len(store.records) == 2


def test_node_accepts_announcements_only_from_the_holder() -> None:
    node = DhtNode(b"\x33" * 32, sim_verify)
    node.handle(OTHER, AddProvider(good()), NOW)  # relayed by someone else: refused
    assert node.rejected == 1 and len(node.store) == 0
    node.handle(HOLDER, AddProvider(CASES["stale"]), NOW)
    assert node.rejected == 2 and len(node.store) == 0
    node.handle(HOLDER, AddProvider(good()), NOW)
    reply = node.handle(OTHER, GetProviders(KEY), NOW).reply
    assert isinstance(reply, Providers) and reply.providers == (good(),)
    assert reply.closer == (HOLDER,)  # the asker itself is never returned


def test_reply_records_drop_forgeries() -> None:
    node = DhtNode(b"\x33" * 32, sim_verify)
    kept = node.reply_records((CASES["forged by another device"], good(), CASES["stale"]), NOW)
    assert kept == (good(),) and node.rejected == 2


def test_republisher_schedule() -> None:
    rep = Republisher(interval=12 * 3600)
    rep.provide(KEY, 0.0)
    assert rep.due(12 * 3600 - 1) == []
    assert rep.due(12 * 3600) == [KEY]
    rep.provide(KEY, 12 * 3600)
    assert rep.due(12 * 3600) == []
    rep.withdraw(KEY)
    assert rep.due(10**9) == []
