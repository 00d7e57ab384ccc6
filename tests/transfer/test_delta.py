"""Chunk deltas (agent/transfer/delta.py): small, exact, and never trusted."""

from __future__ import annotations

import os

import pytest

from agent.peer import wire
from agent.store import ChunkEntry, Manifest, chunk_bytes
from agent.transfer import delta

AVG = 16 * 1024


def test_an_insert_and_a_rewrite_cost_only_the_changed_bytes() -> None:
    base = os.urandom(256 * 1024)
    inserted = base[:100_000] + b"X" + base[100_000:]
    d = delta.encode(base, inserted)
    assert d is not None and len(d) == 16 + 1
    assert delta.apply(base, d, len(inserted)) == inserted
    rewritten = base[:5000] + os.urandom(4096) + base[9096:]
    d = delta.encode(base, rewritten)
    assert d is not None and len(d) <= 16 + 4096
    assert delta.apply(base, d, len(rewritten)) == rewritten


def test_unrelated_data_is_sent_whole() -> None:
    assert delta.encode(os.urandom(20_000), os.urandom(20_000)) is None


def _hdr(p_off: int, prefix: int, s_off: int, suffix: int) -> bytes:
    return b"".join(n.to_bytes(4, "big") for n in (p_off, prefix, s_off, suffix))


@pytest.mark.parametrize("bad", [b"", b"\x00\x00\x00\x01", _hdr(0, 10**6, 0, 0),
                                 _hdr(7000, 5000, 0, 0), _hdr(0, 0, 7000, 5000),
                                 _hdr(0, 0, 2**32 - 1, 2), _hdr(2**32 - 1, 2, 0, 0)])
def test_a_hostile_delta_is_refused(bad: bytes) -> None:
    with pytest.raises(delta.DeltaError):
        delta.apply(os.urandom(8000), bad, 1 << 20)


def test_a_delta_cannot_build_an_oversized_chunk() -> None:
    base = os.urandom(8000)
    d = _hdr(0, 0, 0, 8000) + b"y" * 100
    with pytest.raises(delta.DeltaError):
        delta.apply(base, d, 8050)


def _manifest(data: bytes, version: int = 1) -> Manifest:
    chunks = tuple(ChunkEntry(r.chunk_id, r.length) for r in chunk_bytes(data, AVG))
    return Manifest("42" * 16, "x", version, len(data), AVG, chunks, 1.0, "ab" * 32, False,
                    None if version == 1 else "cd" * 32)


def test_the_base_is_the_old_chunk_at_the_same_offset() -> None:
    old = os.urandom(400_000)
    new = old[:200_000] + b"Z" + old[200_000:] + os.urandom(30_000)  # insert + append
    a, b = _manifest(old), _manifest(new, 2)
    bases = delta.bases_for(a, b, lambda cid: True)
    changed = [c for c in b.chunks if c.chunk_id not in {x.chunk_id for x in a.chunks}]
    assert set(bases) == {c.chunk_id for c in changed}
    assert all(1 <= len(g) <= delta.MAX_BASES for g in bases.values())
    off = 0
    old_at = {}
    for c in a.chunks:
        old_at[off] = c.chunk_id
        off += c.length
    pos = 0
    for c in b.chunks:
        if c.chunk_id in bases and pos < len(old):
            start = max(o for o in old_at if o <= pos)
            assert bases[c.chunk_id][0] == old_at[start]
        pos += c.length
    assert delta.bases_for(a, b, lambda cid: False) == {}  # only chunks held here


def test_the_delta_flag_survives_the_wire() -> None:
    cid = os.urandom(32)
    parts = wire.encode_chunk(7, cid, b"\x00" * 8 + b"abc", True, delta=True)
    reply = wire.decode(b"".join(bytes(p) for p in parts))
    assert isinstance(reply, wire.ChunkReply) and reply.delta and bytes(reply.data)[8:] == b"abc"
    plain = wire.decode(b"".join(bytes(p) for p in wire.encode_chunk(7, cid, b"abc", False)))
    assert isinstance(plain, wire.ChunkReply) and not plain.delta


def test_an_edit_that_merged_two_chunks_costs_only_its_own_bytes() -> None:
    k, k1 = os.urandom(200_000), os.urandom(150_000)
    merged = k[:50_000] + os.urandom(4096) + k[54_096:] + k1  # the cut between them is gone
    d = delta.encode(k + k1, merged, (len(k), len(k) + len(k1)))
    assert d is not None and len(d) <= 16 + 4096
    assert delta.apply(k + k1, d, len(merged)) == merged
    inserted = k[:100] + b"!" + k[100:]  # the suffix ends at the first chunk's end
    d = delta.encode(k + k1, inserted, (len(k), len(k) + len(k1)))
    assert d is not None and len(d) == 17
    assert delta.apply(k + k1, d, len(inserted)) == inserted


def test_a_base_of_several_chunks_travels_as_concatenated_ids() -> None:
    wire.decode(wire.encode_request(1, "chunk", {"c": "ab" * 32, "b": "cd" * 96}))
    with pytest.raises(wire.WireError):
        wire.decode(wire.encode_request(1, "chunk", {"c": "ab" * 32, "b": "cd" * 128}))
    with pytest.raises(wire.WireError):
        wire.decode(wire.encode_request(1, "chunk", {"c": "ab" * 32, "b": "zz" * 32}))


def test_a_new_cut_inside_an_old_chunk_costs_only_the_edit() -> None:
    k, k1 = os.urandom(300_000), os.urandom(200_000)
    # a rewrite made a new cut at 120_000: the second new chunk starts inside k and runs
    # into k1 up to another cut
    tail = k[120_000:150_000] + os.urandom(4096) + k[154_096:] + k1[:80_000]
    d = delta.encode(k + k1, tail, (len(k), len(k) + len(k1)))
    assert d is not None and len(d) <= 16 + 4096
    assert delta.apply(k + k1, d, len(tail)) == tail
