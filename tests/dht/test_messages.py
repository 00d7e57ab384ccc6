"""Strict parsing of DHT messages from hostile peers."""

from __future__ import annotations

from typing import Any

import pytest

from agent.dht.keyspace import resource_key
from agent.dht.messages import (
    AddProvider,
    FindNode,
    GetProviders,
    MessageError,
    Nodes,
    Ping,
    Pong,
    Providers,
    parse,
    record_wire,
    wire,
)
from agent.dht.records import make_record
from agent.dht.sim import sim_signer

ID = "ab" * 32
REC = make_record(resource_key("x"), b"\x01" * 32, b"sim", 1000.0, sim_signer(b"\x01" * 32))


@pytest.mark.parametrize("msg", [
    Ping(), Pong(), FindNode(b"\x01" * 32), Nodes((b"\x02" * 32,) * 20),
    GetProviders(b"\x03" * 32), Providers((REC,), (b"\x04" * 32,)), AddProvider(REC),
])
def test_round_trip(msg: Any) -> None:
    assert parse(wire(msg)) == msg


BAD: dict[str, object] = {
    "not a dict": ["find_node"],
    "unknown type": {"t": "store"},
    "extra field": {"t": "ping", "x": 1},
    "missing field": {"t": "find_node"},
    "short id": {"t": "find_node", "target": "ab" * 31},
    "long id": {"t": "find_node", "target": "ab" * 33},
    "odd hex": {"t": "find_node", "target": "a" * 63},
    "non-hex": {"t": "find_node", "target": "zz" * 32},
    "non-ascii": {"t": "find_node", "target": "\u0660" * 64},
    "id not a string": {"t": "find_node", "target": 5},
    "too many closer": {"t": "nodes", "closer": [ID] * 21},
    "closer not a list": {"t": "nodes", "closer": ID},
    "too many providers": {"t": "providers", "providers": [record_wire(REC)] * 21, "closer": []},
    "record extra key": {"t": "add_provider", "record": {**record_wire(REC), "x": 1}},
    "record bool expiry": {"t": "add_provider", "record": {**record_wire(REC), "expiry": True}},
    "record negative expiry": {"t": "add_provider", "record": {**record_wire(REC), "expiry": -1}},
    "record huge expiry": {"t": "add_provider", "record": {**record_wire(REC), "expiry": 2**64}},
    "record long sig": {"t": "add_provider", "record": {**record_wire(REC), "sig": "00" * 65}},
    "record long key": {"t": "add_provider", "record": {**record_wire(REC), "pub": "00" * 65}},
    "non-string keys": {"t": "ping", 1: 2},
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_hostile_messages_are_refused(name: str) -> None:
    with pytest.raises(MessageError):
        parse(BAD[name])
