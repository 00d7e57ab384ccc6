"""Manifest, VersionHistory and record parsing: round trips and every validation rule."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import PUBLISHER

from agent.store import ChunkEntry, Manifest, ManifestError, VersionEntry, VersionHistory
from agent.store.manifest import MAX_CHUNKS, validate_name
from agent.store.record import StoredRecord

CID_A = blake3(b"a").digest()
CID_B = blake3(b"b").digest()
PARENT = "ee" * 32


def make(**over: Any) -> Manifest:
    fields: dict[str, Any] = dict(
        resource_id="12" * 16, name="notes.txt", version=1, size=30,
        avg_chunk_size=64 * 1024, chunks=(ChunkEntry(CID_A, 10), ChunkEntry(CID_B, 20)),
        created=1_700_000_000.25, publisher=PUBLISHER, public=False, parent=None,
    )
    fields.update(over)
    return Manifest(**fields)


def encode(obj: Any) -> bytes:
    """Canonical layout, but lets inf/nan through so the parser has to reject them."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def test_round_trip_and_digest() -> None:
    m = make(name="naïve résumé ☃.txt", version=3, parent=PARENT, public=True)
    data = m.to_bytes()
    assert data == encode(json.loads(data))  # canonical: sorted, compact
    assert b", " not in data and b": " not in data and data.isascii()
    back = Manifest.from_bytes(data)
    assert back == m
    assert back.digest == blake3(data).digest() == m.digest
    assert back.manifest_hash == m.digest.hex() and len(back.manifest_hash) == 64


def test_empty_manifest_round_trips() -> None:
    m = make(size=0, chunks=())
    assert Manifest.from_bytes(m.to_bytes()) == m


def test_any_change_changes_the_hash() -> None:
    assert make().manifest_hash != make(public=True).manifest_hash
    assert make().manifest_hash != make(created=1_700_000_000.5).manifest_hash


# -- property tests: arbitrary input only ever raises ManifestError -------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_from_bytes_on_random_bytes_only_raises_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_bytes(data)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_from_bytes_on_random_json_only_raises_manifest_error(value: Any) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_bytes(json.dumps(value).encode())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(make().to_obj())),
    json_values,
    st.booleans(),
)
def test_mutated_valid_manifest_never_raises_anything_else(key: str, value: Any,
                                                           drop: bool) -> None:
    obj = make(version=2, parent=PARENT).to_obj()
    if drop:
        del obj[key]
    else:
        obj[key] = value
    try:
        m = Manifest.from_bytes(encode(obj))
    except ManifestError:
        return
    assert Manifest.from_bytes(m.to_bytes()) == m  # whatever is accepted is valid


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deep nesting -> RecursionError inside json
        b'{"version":' + b"9" * 5000 + b"}",  # int digits limit
        b"\xff\xfe{}",  # not UTF-8
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b"",
    ],
    ids=["deep", "huge-int", "not-utf8", "nan", "inf", "empty"],
)
def test_nasty_inputs_raise_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_bytes(data)


def test_non_bytes_input_raises_manifest_error() -> None:
    with pytest.raises(ManifestError, match="expected bytes"):
        Manifest.from_bytes("{}")  # type: ignore[arg-type]


# -- each rule --------------------------------------------------------------------------------

Mut = Callable[[dict[str, Any]], None]


def _set(key: str, value: Any) -> Mut:
    def f(o: dict[str, Any]) -> None:
        o[key] = value
    return f


def _del(key: str) -> Mut:
    def f(o: dict[str, Any]) -> None:
        del o[key]
    return f


def _chunks(chunks: list[Any], size: int | None = None) -> Mut:
    def f(o: dict[str, Any]) -> None:
        o["chunks"] = chunks
        o["size"] = size if size is not None else sum(
            c[1] for c in chunks if isinstance(c, list) and len(c) > 1 and
            isinstance(c[1], int))
    return f


RULES: list[tuple[str, Mut, str]] = [
    ("missing key", _del("public"), "missing public"),
    ("extra key", _set("evil", 1), "unexpected evil"),
    ("resource_id short", _set("resource_id", "12" * 15), "resource_id"),
    ("resource_id upper", _set("resource_id", "AB" * 16), "resource_id"),
    ("resource_id traversal", _set("resource_id", "../../../../etc/passwd" + "0" * 10),
     "resource_id"),
    ("resource_id int", _set("resource_id", 12), "resource_id"),
    ("version 0", _set("version", 0), "version"),
    ("version str", _set("version", "1"), "version"),
    ("version bool", _set("version", True), "version"),
    ("version float", _set("version", 1.0), "version"),
    ("size negative", _chunks([], size=-1), "size"),
    ("size mismatch", _set("size", 31), "sum to 30 but size is 31"),
    ("avg too small", _set("avg_chunk_size", 16 * 1024 - 1), "avg_chunk_size"),
    ("avg too big", _set("avg_chunk_size", 4 * 1024 * 1024 + 1), "avg_chunk_size"),
    ("created negative", _set("created", -1.0), "created"),
    ("created str", _set("created", "now"), "created"),
    ("created int non-canonical", _set("created", 1_700_000_000), "canonical"),
    ("publisher not hex", _set("publisher", "zz" * 16), "publisher"),
    ("publisher too short", _set("publisher", "ab"), "publisher"),
    ("public int", _set("public", 1), "public"),
    ("parent on v1", _set("parent", PARENT), "parent"),
    ("parent bad", _set("parent", "x" * 64), "parent"),
    ("chunks not list", _set("chunks", {}), "chunks"),
    ("chunk not pair", _chunks([[CID_A.hex()]]), "chunks\\[0\\]"),
    ("chunk id short", _chunks([[CID_A.hex()[:-2], 10]]), "chunks\\[0\\] id"),
    ("chunk id upper", _chunks([[CID_A.hex().upper(), 10]]), "chunks\\[0\\] id"),
    ("chunk length 0", _chunks([[CID_A.hex(), 0]]), "length"),
    ("chunk length bool", _chunks([[CID_A.hex(), True]], size=1), "length"),
    ("chunk over max", _chunks([[CID_A.hex(), 4 * 64 * 1024 + 1]]), "exceeds max chunk size"),
]

NAMES = [
    ("", "1..255"), (".", "not allowed"), ("..", "not allowed"), ("a/b", "forbidden"),
    ("../../etc/passwd", "forbidden"), ("a\\b", "forbidden"), ("a\x00b", "forbidden"),
    ("tab\there", "forbidden"), ("del\x7f", "forbidden"), ("c1\x85", "forbidden"),
    ("lone\ud800", "forbidden"), ("x" * 256, "1..255"), ("é" * 200, "bytes"), (7, "string"),
    # bidi controls and other format characters: names that display as something else
    ("report\u202etxt.exe", "U\\+202E"), ("a\u2066b", "forbidden"), ("a\u200bb", "forbidden"),
    ("\ufeffbom", "forbidden"), ("a\u200fb", "forbidden"), ("line\u2028sep", "forbidden"),
    ("para\u2029sep", "forbidden"), ("tag\U000e0041", "forbidden"),
]


@pytest.mark.parametrize("mutate,message", [(m, msg) for _, m, msg in RULES],
                         ids=[r[0] for r in RULES])
def test_each_rule_is_enforced(mutate: Mut, message: str) -> None:
    obj = make().to_obj()
    mutate(obj)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_bytes(encode(obj))


@pytest.mark.parametrize("name,message", NAMES, ids=[repr(n)[:20] for n, _ in NAMES])
def test_name_rules(name: Any, message: str) -> None:
    obj = make().to_obj()
    obj["name"] = name
    with pytest.raises(ManifestError, match=message):
        Manifest.from_bytes(encode(obj))
    with pytest.raises(ManifestError, match=message):
        validate_name(name)


@pytest.mark.parametrize("name", ["a", "x" * 255, "é" * 127, "..hidden", "a b", "日本語.txt",
                                  "...", "-rf", "\u0645\u06cc\u200c\u0634\u0648\u062f",
                                  "\U0001f469\u200d\U0001f4bb.png"])
def test_valid_names_accepted(name: str) -> None:
    assert Manifest.from_bytes(make(name=name).to_bytes()).name == name


def test_v2_without_parent_rejected() -> None:
    with pytest.raises(ManifestError, match="parent"):
        make(version=2, parent=None)


def test_duplicate_keys_rejected() -> None:
    data = make().to_bytes()
    dup = data[:-1] + b',"version":1}'
    with pytest.raises(ManifestError, match="duplicate"):
        Manifest.from_bytes(dup)


def test_non_canonical_encodings_rejected() -> None:
    obj = make().to_obj()
    for data in (json.dumps(obj).encode(),  # spaces
                 json.dumps(dict(reversed(obj.items())), separators=(",", ":")).encode(),
                 make(name="é").to_bytes().replace(b"\\u00e9", "é".encode())):  # raw UTF-8
        with pytest.raises(ManifestError, match="canonical"):
            Manifest.from_bytes(data)


def test_overflowing_float_rejected() -> None:
    data = make().to_bytes().replace(b'"created":1700000000.25', b'"created":1e400')
    with pytest.raises(ManifestError, match="created"):
        Manifest.from_bytes(data)


def test_size_limit() -> None:
    data = make().to_bytes()
    with pytest.raises(ManifestError, match="limit"):
        Manifest.from_bytes(data, max_bytes=len(data) - 1)
    assert Manifest.from_bytes(data, max_bytes=len(data)) == make()


def test_chunk_count_is_bounded() -> None:
    n = MAX_CHUNKS + 1
    obj = make(avg_chunk_size=16 * 1024).to_obj()
    obj["chunks"] = [[CID_A.hex(), 1]] * n
    obj["size"] = n
    with pytest.raises(ManifestError, match="limit"):
        Manifest.from_bytes(encode(obj))


def test_manifest_is_immutable() -> None:
    m = make()
    with pytest.raises(AttributeError):
        m.version = 2  # type: ignore[misc]


# -- history and record -----------------------------------------------------------------------

def test_version_entry_delta() -> None:
    c = blake3(b"c").digest()
    v1 = make()
    v2 = make(version=2, parent=v1.manifest_hash, size=35,
              chunks=(ChunkEntry(CID_A, 10), ChunkEntry(c, 25)))
    e1, e2 = VersionEntry.between(None, v1), VersionEntry.between(v1, v2)
    assert (e1.chunks_added, e1.chunks_removed, e1.bytes_added) == (2, 0, 30)
    assert (e2.chunks_added, e2.chunks_removed, e2.bytes_added) == (1, 1, 25)
    h = VersionHistory((e1,)).append(e2)
    assert [e.version for e in h] == [1, 2] and h.latest == e2
    assert VersionHistory.from_bytes(h.to_bytes()) == h


def test_history_is_append_only_and_strict() -> None:
    e1 = VersionEntry.between(None, make())
    h = VersionHistory((e1,))
    with pytest.raises(ManifestError, match="increase"):
        h.append(e1)
    obj = h.to_obj()
    obj[0]["extra"] = 1
    with pytest.raises(ManifestError, match="unexpected extra"):
        VersionHistory.from_bytes(encode(obj))
    obj = h.to_obj()
    obj[0]["chunks_added"] = -1
    with pytest.raises(ManifestError, match="chunks_added"):
        VersionHistory.from_bytes(encode(obj))
    with pytest.raises(ManifestError):
        VersionHistory.from_bytes(b'{"not":"a list"}')


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_history_and_record_parsers_only_raise_manifest_error(value: Any) -> None:
    data = json.dumps(value).encode()
    for parse in (VersionHistory.from_bytes, StoredRecord.from_bytes):
        with contextlib.suppress(ManifestError):
            parse(data)


def test_stored_record_requires_current_to_be_latest() -> None:
    m = make()
    h = VersionHistory((VersionEntry.between(None, m),))
    good = {"resource_id": m.resource_id, "public": True, "current": m.manifest_hash,
            "versions": h.to_obj()}
    assert StoredRecord.from_bytes(encode(good)).current == m.manifest_hash
    with pytest.raises(ManifestError, match="current"):
        StoredRecord.from_bytes(encode({**good, "current": "ab" * 32}))
    with pytest.raises(ManifestError, match="resource_id"):
        StoredRecord.from_bytes(encode({**good, "resource_id": "../x"}))
