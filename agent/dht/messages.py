"""The DHT's messages: typed dataclasses, parsed strictly from the JSON-like dicts a peer sends.

Shaped after libp2p Kademlia (PING, FIND_NODE, GET_PROVIDERS, ADD_PROVIDER and their replies)
but addressed by Shoal device IDs: the transport reaches a device by ID over an existing
encrypted session, so a contact carries no addresses. Every message from a peer is hostile:
``parse`` accepts exactly the documented keys, hex strings of exact length, lists of at most
K entries and integers in range, and raises MessageError for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.dht.keyspace import ID_BYTES
from agent.dht.records import MAX_HOLDER_KEY, MAX_SIGNATURE, ProviderRecord
from agent.dht.routing import K

MAX_LIST = K  # closer peers and providers per reply
MAX_EXPIRY = 1 << 40


class MessageError(ValueError):
    """A DHT message that does not match its schema."""


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class FindNode:
    target: bytes


@dataclass(frozen=True)
class Nodes:
    """The reply to FindNode: the responder's closest known contacts to the target."""

    closer: tuple[bytes, ...]


@dataclass(frozen=True)
class GetProviders:
    key: bytes


@dataclass(frozen=True)
class Providers:
    """The reply to GetProviders: records the responder holds, and closer contacts."""

    providers: tuple[ProviderRecord, ...]
    closer: tuple[bytes, ...]


@dataclass(frozen=True)
class AddProvider:
    """A holder announces itself; only accepted when the sender is the record's holder."""

    record: ProviderRecord


Message = Ping | Pong | FindNode | Nodes | GetProviders | Providers | AddProvider


def _hex(value: object, *, exact: int | None = None, most: int | None = None) -> bytes:
    if not isinstance(value, str) or not value.isascii():
        raise MessageError("expected a hex string")
    n = len(value)
    if n % 2 or (exact is not None and n != 2 * exact) or (most is not None and n > 2 * most):
        raise MessageError("hex string of the wrong length")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise MessageError("not hex") from None


def _ids(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise MessageError(f"expected a list of at most {MAX_LIST} IDs")
    return tuple(_hex(v, exact=ID_BYTES) for v in value)


def _fields(obj: dict[str, Any], *names: str) -> None:
    if set(obj) != {"t", *names}:
        raise MessageError("unexpected or missing fields")


def parse_record(obj: object) -> ProviderRecord:
    """A ProviderRecord from its wire form (shape only; ``records.check_record`` judges it)."""
    if not isinstance(obj, dict) or set(obj) != {"key", "holder", "expiry", "pub", "sig"}:
        raise MessageError("malformed provider record")
    expiry = obj["expiry"]
    if not isinstance(expiry, int) or isinstance(expiry, bool) or not 0 < expiry < MAX_EXPIRY:
        raise MessageError("record expiry out of range")
    return ProviderRecord(
        key=_hex(obj["key"], exact=ID_BYTES),
        holder=_hex(obj["holder"], exact=ID_BYTES),
        expiry=expiry,
        holder_key=_hex(obj["pub"], most=MAX_HOLDER_KEY),
        signature=_hex(obj["sig"], most=MAX_SIGNATURE),
    )


def record_wire(rec: ProviderRecord) -> dict[str, Any]:
    return {"key": rec.key.hex(), "holder": rec.holder.hex(), "expiry": rec.expiry,
            "pub": rec.holder_key.hex(), "sig": rec.signature.hex()}


def parse(obj: object) -> Message:
    """The message in *obj*, or MessageError."""
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise MessageError("a DHT message is an object")
    kind = obj.get("t")
    if kind == "ping":
        _fields(obj)
        return Ping()
    if kind == "pong":
        _fields(obj)
        return Pong()
    if kind == "find_node":
        _fields(obj, "target")
        return FindNode(_hex(obj["target"], exact=ID_BYTES))
    if kind == "nodes":
        _fields(obj, "closer")
        return Nodes(_ids(obj["closer"]))
    if kind == "get_providers":
        _fields(obj, "key")
        return GetProviders(_hex(obj["key"], exact=ID_BYTES))
    if kind == "providers":
        _fields(obj, "providers", "closer")
        recs = obj["providers"]
        if not isinstance(recs, list) or len(recs) > MAX_LIST:
            raise MessageError(f"expected a list of at most {MAX_LIST} records")
        return Providers(tuple(parse_record(r) for r in recs), _ids(obj["closer"]))
    if kind == "add_provider":
        _fields(obj, "record")
        return AddProvider(parse_record(obj["record"]))
    raise MessageError("unknown DHT message type")


def wire(msg: Message) -> dict[str, Any]:
    """The JSON-like form of *msg* (``parse(wire(m)) == m``)."""
    if isinstance(msg, Ping):
        return {"t": "ping"}
    if isinstance(msg, Pong):
        return {"t": "pong"}
    if isinstance(msg, FindNode):
        return {"t": "find_node", "target": msg.target.hex()}
    if isinstance(msg, Nodes):
        return {"t": "nodes", "closer": [c.hex() for c in msg.closer]}
    if isinstance(msg, GetProviders):
        return {"t": "get_providers", "key": msg.key.hex()}
    if isinstance(msg, Providers):
        return {"t": "providers", "providers": [record_wire(r) for r in msg.providers],
                "closer": [c.hex() for c in msg.closer]}
    return {"t": "add_provider", "record": record_wire(msg.record)}
