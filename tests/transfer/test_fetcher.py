"""The asyncio fetch adapter against in-process fake peers and a real content store."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agent.errors import ErrorKind
from agent.peer import wire
from agent.peer.connection import RemoteError
from agent.security.identity import Identity
from agent.store import ContentStore
from agent.transfer.fetcher import Fetch, FetchError


class FakeConn:
    """Answers chunk requests from a source store; can lie or refuse."""

    def __init__(self, name: str, source: ContentStore, *, lie: bool = False,
                 refuse: bool = False, delay: float = 0.0,
                 lacks: frozenset[bytes] = frozenset()) -> None:
        self.name = name
        self.peer_id = name.encode().ljust(32, b"\0")
        self.address = ("10.0.0.1", 1)
        self.source = source
        self.lie, self.refuse, self.delay = lie, refuse, delay
        self.lacks = lacks  # answered as a chunk server does for a quarantined chunk
        self.asked_lacking = 0
        self.served = 0
        self.compress_asked: set[bool] = set()

    async def request(self, op: str, args: dict, timeout: float = 10.0):
        if op == "manifest":
            rec = next(r for r in self.source.resources()
                       if r.manifest.manifest_hash == args["resource"])
            return rec.manifest.envelope()
        assert op == "chunk"
        self.compress_asked.add(args["z"])
        await asyncio.sleep(self.delay)
        if self.refuse:
            raise RemoteError("no such chunk here")
        cid = bytes.fromhex(args["c"])
        if cid in self.lacks:
            self.asked_lacking += 1
            raise RemoteError("chunk failed verification here and was quarantined",
                              ErrorKind.INTEGRITY)
        data = self.source.get_chunk(cid)
        if self.lie:
            data = b"x" + data[1:]
        self.served += 1
        return wire.ChunkReply(1, cid, data)


@pytest.fixture
def published(tmp_path: Path):
    src = ContentStore(tmp_path / "src", avg_chunk_size=16 * 1024)
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(600 * 1024))
    m = src.publish_file(f, name="data.bin", signer=Identity.generate())
    yield src, m, f
    src.close()


async def test_multi_source_fetch_completes_and_shares(tmp_path, published):
    src, m, f = published
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    a, b = FakeConn("a", src), FakeConn("b", src)
    result = await Fetch(dst, m, [a, b], request_timeout=2.0).run()
    assert dst.complete(m)
    assert a.served > 0 and b.served > 0
    assert result.bytes_fetched == m.size
    out = tmp_path / "out.bin"
    dst.export(m, out)
    assert out.read_bytes() == f.read_bytes()
    dst.close()


async def test_lying_source_is_dropped_and_honest_one_finishes(tmp_path, published):
    src, m, _ = published
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    liar, honest = FakeConn("liar", src, lie=True), FakeConn("honest", src, delay=0.001)
    result = await Fetch(dst, m, [liar, honest], request_timeout=2.0).run()
    assert dst.complete(m)
    stats = result.sources[liar.peer_id.hex()]
    assert stats["state"] == "dropped" and "hash" in stats["reason"]
    dst.close()


async def test_resume_requests_only_missing_chunks(tmp_path, published):
    src, m, _ = published
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    half = m.chunks[: len(m.chunks) // 2]
    for c in half:
        dst.put_chunk(c.chunk_id, src.get_chunk(c.chunk_id))
    peer = FakeConn("a", src)
    result = await Fetch(dst, m, [peer], request_timeout=2.0).run()
    assert peer.served == len({c.chunk_id for c in m.chunks} - {c.chunk_id for c in half})
    assert result.bytes_fetched == m.size - sum(c.length for c in half)
    dst.close()


async def test_a_source_that_always_refuses_cannot_hold_the_fetch_forever(tmp_path, published):
    src, m, _ = published
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    bad = FakeConn("bad", src, refuse=True)

    async def find_sources():  # keeps offering the same failing source back
        return [bad]

    job = Fetch(dst, m, [bad], request_timeout=0.5, stall_timeout=1.0,
                find_sources=find_sources)
    with pytest.raises(FetchError, match=r"no usable source|no peer holds"):
        await asyncio.wait_for(job.run(), 30)
    dst.close()


async def test_lz4_is_asked_for_except_over_loopback(tmp_path, published):
    src, m, _ = published
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    lan, lo = FakeConn("lan", src), FakeConn("lo", src)
    lo.address = ("127.0.0.1", 1)
    await Fetch(dst, m, [lan, lo], request_timeout=2.0).run()
    assert lan.compress_asked == {True} and lo.compress_asked == {False}
    dst.close()


async def test_a_chunk_nobody_holds_fails_the_fetch_at_once(tmp_path, published):
    """The only holder says (typed INTEGRITY: quarantined) it lacks one chunk: the fetch
    fails without waiting for the stall timeout, asked that chunk once, and says why."""
    src, m, _ = published
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    gone = m.chunks[3].chunk_id
    holder = FakeConn("holder", src, lacks=frozenset({gone}))

    async def find_sources():  # keeps offering the same session back
        return [holder]

    job = Fetch(dst, m, [holder], request_timeout=600.0, stall_timeout=600.0,
                find_sources=find_sources)
    with pytest.raises(FetchError, match="held by none of the sources"):
        await asyncio.wait_for(job.run(), 30)  # hang guard only
    assert holder.asked_lacking == 1
    dst.close()


async def test_a_chunk_one_holder_lacks_comes_from_another_with_no_failure_counted(
        tmp_path, published):
    src, m, _ = published
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    gone = frozenset(c.chunk_id for c in m.chunks[:4])
    partial, full = FakeConn("partial", src, lacks=gone), FakeConn("full", src, delay=0.002)
    result = await asyncio.wait_for(Fetch(dst, m, [partial, full], request_timeout=600.0,
                                          stall_timeout=600.0).run(), 30)
    assert dst.complete(m)
    stats = result.sources[partial.peer_id.hex()]
    assert stats["state"] == "active" and stats["failures"] == 0
    assert partial.asked_lacking <= len(gone)
    dst.close()


async def test_resumed_fetch_progress_says_what_was_already_held(tmp_path, published):
    """The CLI's rate and its "resuming: N of M chunks" line need these two numbers."""
    src, m, _ = published
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    half = m.chunks[: len(m.chunks) // 2]
    for c in half:
        dst.put_chunk(c.chunk_id, src.get_chunk(c.chunk_id))
    events: list[dict] = []

    async def progress(p: dict) -> None:
        events.append(p)

    await Fetch(dst, m, [FakeConn("a", src)], request_timeout=2.0, progress=progress).run()
    held = sum(c.length for c in half)
    assert events and all(e["already"] == held for e in events)
    assert {(e["chunks_already"], e["chunks_total"]) for e in events} == {
        (len(half), len(m.chunks))}
    assert events[-1]["done"] == m.size
    dst.close()
