"""Peer protocol messages carried inside secure-session messages.

Every session message is one wire message: a kind byte, then a body. Requests, responses and
events are small JSON objects validated against a per-operation schema; chunk replies are
binary (header + possibly-lz4 bytes) so bulk data is never JSON-escaped or base64-inflated.
All of it arrives from peers and is untrusted: sizes are bounded and schemas are exact.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lz4.block

from agent.errors import ErrorKind

KIND_REQUEST = 0x01
KIND_RESPONSE = 0x02
KIND_CHUNK = 0x03
KIND_EVENT = 0x04
#: A relay circuit frame (agent/relay/): binary, so relayed ciphertext is never re-encoded
KIND_RELAY = 0x05

MAX_JSON = 1024 * 1024  # a Raft snapshot of a large authority map must fit
MAX_CHUNK = 4 * 1024 * 1024
MAX_REQUEST_ID = 2**32 - 1
_CHUNK_HDR = struct.Struct(">IB32sI")  # request id, flags, chunk id, raw length
FLAG_LZ4 = 0x01
#: The payload is a chunk delta against the base chunk the request named (agent/transfer/delta.py)
FLAG_DELTA = 0x02

TRAFFIC_CLASSES = ("demand", "mirror", "prefetch")

# Relay circuit frames: kind byte, circuit id (u32), flags (u8), then the payload.
_RELAY_HDR = struct.Struct(">BIB")
RELAY_HEADER_SIZE = _RELAY_HDR.size
#: The frame travels from the side that opened this hop of the circuit (each side of a
#: session numbers the hops it opens itself, so the flag keeps the two id spaces apart).
RELAY_FROM_OPENER = 0x01
RELAY_TYPE_MASK = 0x06
RELAY_DATA = 0x00  # payload: 1..RELAY_MAX_DATA bytes of end-to-end ciphertext
RELAY_CREDIT = 0x02  # payload: u32, bytes the receiving end has consumed (flow control)
RELAY_CLOSE = 0x04  # payload: empty; the circuit is gone
#: Largest data payload: header + payload fit one record of the carrying session (65518
#: bytes of plaintext), so a relayed frame is never split and re-joined on a hop.
RELAY_MAX_DATA = 65512
#: End-to-end flow-control window of one circuit direction (bytes of data frames a sender
#: may have in flight before the far end's credit): bounds what a relay may have queued.
RELAY_WINDOW = 1024 * 1024
#: Relays a circuit may cross (the ttl of relay-open starts here, each relay takes one).
MAX_RELAYS = 3


class WireError(ValueError):
    """A peer sent a message that does not follow the protocol."""


# An argument's schema: the JSON type(s) it must have, then a predicate on a value of that type.
ArgSpec = tuple[type | tuple[type, ...], Callable[[Any], bool]]


def _hex(n: int) -> ArgSpec:
    def check(v: Any) -> bool:
        if len(v) != n:
            return False
        try:
            bytes.fromhex(v)
        except ValueError:
            return False
        return True

    return (str, check)


def _str(maxlen: int) -> ArgSpec:
    return (str, lambda v: 0 < len(v) <= maxlen)


def _num(lo: float, hi: float) -> ArgSpec:
    return ((int, float), lambda v: not isinstance(v, bool) and lo <= v <= hi)


_BOOL: ArgSpec = (bool, lambda v: True)

# op -> {arg: (type, predicate)}; a trailing "?" marks an optional argument.
REQUEST_SCHEMAS: dict[str, dict[str, ArgSpec]] = {
    "ping": {"t": _num(0, 2**53)},
    "pair_request": {"name": _str(64)},
    "pair_confirm": {"code": (str, lambda v: len(v) == 6 and v.isdigit())},
    "pair_cancel": {},
    "list": {},
    # base: a manifest the asker holds; the answer may carry "mdelta" against it
    # (agent/transfer/manifest_delta.py) instead of "manifest"
    # c: why it is asked when not for the user (a prefetch, a mirror, a freshness check):
    # the holder then does not log it as the requester's use
    "manifest": {"resource": _str(255), "base?": _hex(64),
                 "c?": (str, lambda v: v in ("mirror", "prefetch", "check"))},
    # b: 1-3 chunks the asker holds (ids concatenated); the answer may be a delta against
    # them (FLAG_DELTA, agent/transfer/delta.py)
    "chunk": {"c": _hex(64), "cls?": (str, lambda v: v in TRAFFIC_CLASSES), "z?": _BOOL,
              "b?": (str, lambda v: len(v) in (64, 128, 192) and _hex(len(v))[1](v))},
    "endpoints": {},
    # a publisher hands a delegation to its delegate (agent/transfer/server.py checks it)
    "delegation": {"d": (dict, lambda v: set(v) == {"delegation", "sig"})},
    "raft_join": {"c": _hex(32), "r?": _BOOL},
    # usage aggregate (agent/usage/aggregate.py parses the contents strictly)
    "usage": {"a": (dict, lambda v: len(v) <= 16)},
    # the model lifecycle's advert (agent/usage/models.py; the answer is parsed strictly)
    "model": {},
    "unpaired": {},  # "the sender no longer trusts you" (agent/peer/unpair.py)
    # mirrors (agent/mirrors/service.py): list hosted mirrors, hold one on a lease, release
    "mirror": {"do": (str, lambda v: v in ("list", "hold", "release")), "r?": _hex(32),
               "n?": _num(0, 2**53)},
    # the versions a holder keeps of one resource (agent/transfer/versions.py)
    "versions": {"resource": _str(255)},
    # withdrawals (signed tombstones) this device knows for these resource IDs
    "tombstones": {"r": (list, lambda v: 0 < len(v) <= 256 and all(
        isinstance(x, str) and len(x) == 32 and _hex(32)[1](x) for x in v))},
    # one DHT message (agent/dht/messages.py parses it strictly: exact keys, bounded lists);
    # only paired devices are answered (agent/dht/service.py)
    "dht": {"m": (dict, lambda v: 0 < len(v) <= 3 and isinstance(v.get("t"), str))},
    # open one hop of a relay circuit (agent/relay/service.py): t the target device, ttl the
    # relays the circuit may still cross, cid this hop's id (the opener's numbering), n the
    # circuit's nonce (the same on every hop: a relay already carrying it refuses, a loop)
    "relay-open": {"t": _hex(64),
                   "ttl": (int, lambda v: not isinstance(v, bool) and 0 <= v <= MAX_RELAYS),
                   "cid": (int, lambda v: not isinstance(v, bool) and 0 < v <= 2**32 - 1),
                   "n": _hex(32)},
}

EVENT_SCHEMAS: dict[str, dict[str, ArgSpec]] = {
    # authority (agent/authority/service.py validates the contents further)
    "raft": {"c": _hex(32), "m": _str(MAX_JSON - 1024)},
    "cluster": {"c": _hex(32), "n": _num(0, 10_000), "l": (str, lambda v: len(v) <= 64)},
    "report": {"c": _hex(32), "h": (dict, lambda v: len(v) <= 4096), "load": _num(0, 1),
               "up": _num(0, 1)},
    # a new version was published: its signed version record, as a `list` entry
    # (agent/transfer/follow/service.py verifies it; only from paired sessions)
    "version": {"e": (dict, lambda v: len(v) <= 16)},
    # the publisher withdrew a resource: its signed tombstone (agent/security/tombstone.py)
    "withdrawn": {"t": (dict, lambda v: set(v) == {"withdrawal", "sig"})},
    # the paired devices the sender reaches and in how many hops (agent/relay/adverts.py
    # parses each row strictly)
    "routes": {"r": (list, lambda v: len(v) <= 1024)},
}


def _check_args(
    kind: str, op: str, args: Any, schemas: dict[str, dict[str, ArgSpec]]
) -> dict[str, Any]:
    schema = schemas.get(op)
    if schema is None:
        raise WireError(f"unknown {kind} {op!r}")
    if not isinstance(args, dict):
        raise WireError(f"{kind} {op}: arguments must be an object")
    names = {k.rstrip("?"): k.endswith("?") for k in schema}
    extra = set(args) - set(names)
    if extra:
        raise WireError(f"{kind} {op}: unexpected argument {sorted(extra)[0]!r}")
    for key, spec in schema.items():
        name = key.rstrip("?")
        if name not in args:
            if not key.endswith("?"):
                raise WireError(f"{kind} {op}: missing argument {name!r}")
            continue
        typ, pred = spec
        value = args[name]
        if not isinstance(value, typ) or not pred(value):
            raise WireError(f"{kind} {op}: bad value for {name!r}")
    return args


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Response:
    id: int
    ok: bool
    result: Any  # JSON value when ok, error message string when not
    # An error's kind, when the peer sent one: what the requester may act on (a chunk "not
    # found" there means "ask someone else", not "this source is failing"). Never parsed
    # out of the message text. None from older peers or for an unknown kind.
    kind: ErrorKind | None = None


@dataclass(frozen=True)
class Event:
    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class ChunkReply:
    id: int
    chunk_id: bytes
    # Raw (decompressed) bytes; NOT yet verified against chunk_id. Uncompressed, a view into
    # the received message (no copy: the store hashes and writes it from there).
    data: bytes | memoryview
    #: *data* is a delta against the base chunk the request named, not the chunk itself
    delta: bool = False


@dataclass(frozen=True)
class RelayFrame:
    """One circuit frame. Only the header is checked here: the flags and payload are the
    relay service's to judge, so a bad frame ends its circuit, not the whole session."""

    cid: int
    flags: int
    data: memoryview  # a view into the received message (relayed on without a copy)


def encode_relay_header(cid: int, flags: int) -> bytes:
    """The header of a circuit frame; its payload follows as a separate part (not joined)."""
    return _RELAY_HDR.pack(KIND_RELAY, cid, flags)


def _json(kind: int, obj: dict[str, Any]) -> bytes:
    try:  # never send what decode refuses
        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as e:
        raise WireError(f"not sendable as JSON: {e}") from None
    if len(body) > MAX_JSON:
        raise WireError(f"message too large ({len(body)} bytes)")
    return bytes([kind]) + body


def encode_request(req_id: int, op: str, args: dict[str, Any]) -> bytes:
    return _json(KIND_REQUEST, {"id": req_id, "op": op, "args": args})


def encode_response(req_id: int, ok: bool, result: Any,
                    kind: ErrorKind | None = None) -> bytes:
    key = "result" if ok else "error"
    obj = {"id": req_id, "ok": ok, key: result}
    if not ok and kind is not None:
        obj["kind"] = kind.value
    return _json(KIND_RESPONSE, obj)


def encode_event(op: str, args: dict[str, Any]) -> bytes:
    return _json(KIND_EVENT, {"op": op, "args": args})


def _lz4_worth_it(data: bytes | memoryview) -> bool:
    """Sample 8 KiB first: random data must not pay for a full compression attempt."""
    sample = bytes(data[:8192])
    return len(lz4.block.compress(sample, store_size=False)) < len(sample) * 0.9


def encode_chunk(
    req_id: int, chunk_id: bytes, data: bytes | memoryview, compress: bool,
    delta: bool = False,
) -> list[bytes | memoryview]:
    """Header and payload as separate buffers (no copy of the payload when uncompressed).
    *delta*: *data* is a chunk delta (agent/transfer/delta.py), not the chunk."""
    flags, payload = (FLAG_DELTA if delta else 0), data
    if compress and len(data) >= 512 and _lz4_worth_it(data):
        packed = lz4.block.compress(data, store_size=False)
        if len(packed) < len(data):
            flags, payload = flags | FLAG_LZ4, packed
    header = bytes([KIND_CHUNK]) + _CHUNK_HDR.pack(req_id, flags, chunk_id, len(data))
    return [header, payload]


def _no_constant(name: str) -> Any:
    raise WireError(f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as inf without passing _no_constant
        raise WireError("a number is too large")
    return value


def _loads(body: bytes) -> Any:
    """Strict JSON: Python's json reads NaN, Infinity and 1e999, which no peer may send (the
    values break comparisons and make int() raise deep inside whoever reads them)."""
    return json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)


def decode(message: bytes | memoryview
           ) -> Request | Response | Event | ChunkReply | RelayFrame:
    """Parse one wire message; raise WireError for anything malformed."""
    if len(message) < 1:
        raise WireError("empty message")
    kind = message[0]
    if kind == KIND_CHUNK:
        return _decode_chunk(message)
    if kind == KIND_RELAY:
        if len(message) < _RELAY_HDR.size:
            raise WireError("truncated relay frame")
        _, cid, flags = _RELAY_HDR.unpack_from(message, 0)
        return RelayFrame(cid, flags, memoryview(message)[_RELAY_HDR.size:])
    if len(message) > MAX_JSON + 1:
        raise WireError("message too large")
    try:
        obj = _loads(bytes(message[1:]))
    except WireError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise WireError(f"malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise WireError("message must be a JSON object")
    if kind == KIND_REQUEST:
        if set(obj) != {"id", "op", "args"}:
            raise WireError("request has the wrong keys")
        req_id = _req_id(obj["id"])
        if not isinstance(obj["op"], str):
            raise WireError("request op must be a string")
        return Request(req_id, obj["op"], _check_args("request", obj["op"], obj["args"],
                                                      REQUEST_SCHEMAS))
    if kind == KIND_RESPONSE:
        req_id = _req_id(obj.get("id"))
        ok = obj.get("ok")
        if ok is True and set(obj) == {"id", "ok", "result"}:
            return Response(req_id, True, obj["result"])
        if (ok is False and set(obj) - {"kind"} == {"id", "ok", "error"}
                and isinstance(obj["error"], str)):
            return Response(req_id, False, obj["error"][:500], _kind(obj.get("kind")))
        raise WireError("response has the wrong keys")
    if kind == KIND_EVENT:
        if set(obj) != {"op", "args"} or not isinstance(obj["op"], str):
            raise WireError("event has the wrong keys")
        return Event(obj["op"], _check_args("event", obj["op"], obj["args"], EVENT_SCHEMAS))
    raise WireError(f"unknown message kind {kind}")


def _kind(v: Any) -> ErrorKind | None:
    """An error response's kind: absent or one this agent does not know (a newer peer) is
    None; anything but a short string is a protocol error."""
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > 32:
        raise WireError("bad error kind")
    try:
        return ErrorKind(v)
    except ValueError:
        return None


def _req_id(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_REQUEST_ID:
        raise WireError("bad request id")
    return v


def _decode_chunk(message: bytes | memoryview) -> ChunkReply:
    if len(message) < 1 + _CHUNK_HDR.size:
        raise WireError("truncated chunk header")
    req_id, flags, chunk_id, raw_len = _CHUNK_HDR.unpack_from(message, 1)
    if raw_len > MAX_CHUNK or flags & ~(FLAG_LZ4 | FLAG_DELTA):
        raise WireError("bad chunk header")
    payload = memoryview(message)[1 + _CHUNK_HDR.size :]
    data: bytes | memoryview
    if flags & FLAG_LZ4:
        try:
            data = lz4.block.decompress(payload, uncompressed_size=raw_len)
        except lz4.block.LZ4BlockError as e:
            raise WireError(f"corrupt compressed chunk: {e}") from None
    else:
        data = payload
    if len(data) != raw_len:
        raise WireError("chunk length does not match its header")
    return ChunkReply(req_id, chunk_id, data, bool(flags & FLAG_DELTA))
