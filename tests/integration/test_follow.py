"""Followed copies stay current, by delta, and only on what paired publishers signed.

Three real agents (in-process Nodes on loopback): ``a`` publishes, ``b`` follows, ``m`` is
connected to ``b`` but unpaired (or paired and lying) and tries to push versions.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.node import Node
from agent.security.tombstone import withdraw
from agent.store import NotFound
from agent.transfer.follow.service import FollowError
from agent.transfer.listing import listing_entry
from agent.transfer.versions import versions_answer
from tests.waiting import wait_until

from .test_signed_manifests import connect, nodes, pair


def publish(node: Node, path: Path, update: str | None = None) -> str:
    """What `shoal publish` does: store, catalog, announce."""
    m = node.store.publish_file(path, signer=node.identity, update=update)
    node.catalog_changed()
    node.follow.published(node.store.find(m.resource_id))
    return m.resource_id


def held_version(node: Node, rid: str) -> int:
    try:
        return node.store.find(rid).version
    except NotFound:
        return 0


async def test_follower_gets_each_new_version_by_delta_and_the_file_is_replaced(
        tmp_path: Path) -> None:
    src = tmp_path / "map.bin"
    data = bytearray(os.urandom(600_000))
    src.write_bytes(data)
    out = tmp_path / "out" / "map.bin"
    out.parent.mkdir()
    async with nodes("a", "b") as n:
        a, b = n["a"], n["b"]
        pair(a, b)
        rid = publish(a, src)
        await connect(b, a)
        r = await b.follow.follow(rid, str(out))
        assert r["version"] == 1 and out.read_bytes() == bytes(data)
        await wait_until(lambda: (b.follow.list()[0]["last"] or {}).get("why") == "first",
                         "the check right after following")
        classes: list[str] = []  # the bandwidth class of each chunk a serves
        permit = a.gate.permit

        def spy(peer: str, cls: str, nbytes: int):  # type: ignore[no-untyped-def]
            classes.append(cls)
            return permit(peer, cls, nbytes)

        a.gate.permit = spy  # type: ignore[method-assign]
        data[300_000:300_000] = b"X"  # one byte inserted mid-file
        src.write_bytes(data)
        publish(a, src)  # the announcement, not a periodic check, brings it
        await wait_until(lambda: held_version(b, rid) == 2, "b follows v2")
        await wait_until(lambda: out.read_bytes() == bytes(data), "export replaced")
        last = await wait_until(lambda: (b.follow.list()[0]["last"] or {}).get("updated")
                                and b.follow.list()[0]["last"], "sync recorded")
        assert last["why"] == "announced"
        # only the changed chunk moved, as a delta against b's v1 chunk at that offset:
        # the bytes saved are nearly the whole chunk
        assert b.store.find(rid).latest.chunks_added <= 2
        assert last["deltas"] >= 1 and last["delta_bytes_saved"] > 0.9 * last["bytes_fetched"]
        assert classes and set(classes) == {"mirror"}  # a sync never competes with demand


async def test_an_unpaired_device_cannot_push_a_version(tmp_path: Path) -> None:
    src = tmp_path / "doc.bin"
    src.write_bytes(os.urandom(50_000))
    async with nodes("a", "b", "m") as n:
        a, b, m = n["a"], n["b"], n["m"]
        pair(a, b)
        rid = publish(a, src)
        await connect(b, a)
        await b.follow.follow(rid, None)
        await wait_until(lambda: b.follow.list()[0]["last"], "first check done")
        # a genuine v2 record, relayed by an unpaired device: not believed from it
        src.write_bytes(os.urandom(50_000))
        a.store.publish_file(src, signer=a.identity)
        entry = listing_entry(a.store.find(rid))
        conn = await connect(m, b)
        before = b.follow.dropped_announcements
        await conn.send_event("version", {"e": entry})
        await wait_until(lambda: b.follow.dropped_announcements > before, "dropped")
        assert b.follow.policy.status(rid, 0)["announced"] is None
        # nor a genuine withdrawal by a: relayed by an unpaired device, it is not acted on
        gone = withdraw(a.identity, rid, 2, 1.0)
        await conn.send_event("withdrawn", {"t": gone.to_obj()})
        await wait_until(lambda: b.follow.dropped_announcements > before + 1, "dropped too")
        assert held_version(b, rid) == 1 and b.follow.book.get(rid) is not None


async def test_forged_and_downgrade_announcements_from_a_paired_device_are_refused(
        tmp_path: Path) -> None:
    src = tmp_path / "doc.bin"
    src.write_bytes(os.urandom(50_000))
    async with nodes("a", "b", "m") as n:
        a, b, m = n["a"], n["b"], n["m"]
        pair(a, b)
        pair(m, b)
        rid = publish(a, src)
        await connect(b, a)
        src.write_bytes(os.urandom(50_000))
        publish(a, src)
        await b.fetcher.fetch(rid)
        await b.follow.follow(rid, None)
        assert held_version(b, rid) == 2
        v2 = listing_entry(a.store.find(rid))
        assert v2 is not None
        conn = await connect(m, b)
        before = b.follow.dropped_announcements
        await conn.send_event("version", {"e": dict(v2, version=99)})  # forged field
        await wait_until(lambda: b.follow.dropped_announcements > before, "forged dropped")
        # a downgrade: a's genuine v1 record, replayed by a paired device: verifies, is
        # never news (the version must increase)
        v1 = [e for e in versions_answer(a.store, a.store.find(rid)) if e["version"] == 1]
        await conn.send_event("version", {"e": v1[0]})
        await conn.send_event("version", {"e": v2})  # same as held: not news either
        await conn.ping()  # events are handled in order: both were seen by now
        assert b.follow.policy.status(rid, 0)["announced"] is None
        assert held_version(b, rid) == 2


async def test_unpublish_reaches_followers_who_drop_their_copy_but_keep_the_file(
        tmp_path: Path) -> None:
    src = tmp_path / "doc.bin"
    src.write_bytes(os.urandom(40_000))
    out = tmp_path / "kept.bin"
    async with nodes("a", "b", "m") as n:
        a, b, m = n["a"], n["b"], n["m"]
        pair(a, b)
        pair(m, b)
        rid = publish(a, src)
        await connect(b, a)
        await b.follow.follow(rid, str(out))
        # a paired device that is not the publisher cannot withdraw it
        fake = withdraw(m.identity, rid, 5, 1.0)
        conn = await connect(m, b)
        before = b.follow.dropped_announcements
        await conn.send_event("withdrawn", {"t": dict(fake.to_obj(), withdrawal=fake.to_obj()[
            "withdrawal"].replace(m.identity.hex_id, a.identity.hex_id))})
        await wait_until(lambda: b.follow.dropped_announcements > before, "fake refused")
        assert held_version(b, rid) == 1
        r = await a.follow.unpublish(rid)
        assert r["told"] >= 1
        await wait_until(lambda: held_version(b, rid) == 0, "b dropped its copy")
        assert b.follow.list() == [] and out.exists()
        assert held_version(a, rid) == 0
        with pytest.raises(FollowError, match="withdrawn"):
            await b.follow.follow(rid, None)  # known withdrawn: not fetched again


async def test_following_into_a_directory_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "doc.bin"
    src.write_bytes(os.urandom(1000))
    async with nodes("a", "b") as n:
        a, b = n["a"], n["b"]
        pair(a, b)
        rid = publish(a, src)
        await connect(b, a)
        with pytest.raises(FollowError, match="directory"):
            await b.follow.follow(rid, str(tmp_path))
        with pytest.raises(FollowError, match="absolute"):
            await b.follow.follow(rid, "relative/x")
        assert b.follow.list() == []


async def test_versions_and_fetching_an_older_version_from_a_holder(tmp_path: Path) -> None:
    src = tmp_path / "doc.bin"
    blobs = [os.urandom(40_000) for _ in range(3)]
    async with nodes("a", "b") as n:
        a, b = n["a"], n["b"]
        pair(a, b)
        src.write_bytes(blobs[0])
        rid = publish(a, src)
        for blob in blobs[1:]:
            src.write_bytes(blob)
            publish(a, src)
        await connect(b, a)
        await b.fetcher.fetch(rid)
        assert held_version(b, rid) == 3
        v = await b.commands.ctx.versions.versions(rid)  # type: ignore[union-attr]
        rows = {r["version"]: r for r in v["versions"]}
        assert set(rows) == {1, 2, 3} and rows[3]["here"] and not rows[1]["here"]
        assert rows[1]["holders"] == ["a"]

        got = bytearray()

        class Sink:
            async def start(self, manifest: object) -> None:
                pass

            async def data(self, chunk: bytes) -> None:
                got.extend(chunk)

        r = await b.commands.ctx.versions.fetch_version(rid, 1, Sink())  # type: ignore
        assert bytes(got) == blobs[0] and r["version"] == 1
        assert held_version(b, rid) == 3  # an older version is exported, never recorded
        try:
            await b.commands.ctx.versions.fetch_version(rid, 7, None)  # type: ignore
        except Exception as e:
            assert "shoal versions" in str(e) and getattr(e, "kind", None) is not None
        else:
            raise AssertionError("v7 does not exist")


async def test_the_followed_set_survives_a_restart_and_catches_up_on_reconnect(
        tmp_path: Path) -> None:
    import asyncio

    from .test_signed_manifests import _config

    src = tmp_path / "doc.bin"
    src.write_bytes(os.urandom(80_000))
    async with nodes("a") as n:
        a = n["a"]
        rid = publish(a, src)
        b_dir = tmp_path / "b"

        async def start_b() -> tuple[Node, asyncio.Future[None]]:
            b = Node(_config(b_dir, "b"))
            task = asyncio.ensure_future(b.run())
            await asyncio.wait_for(b.ready.wait(), 10)
            pair(a, b)
            await connect(b, a)
            return b, task

        b, task = await start_b()
        await b.follow.follow(rid, None)
        b.stop()
        await asyncio.wait_for(task, 15)
        os.close(b._lock_fd)  # what the process's exit would release
        b.store.close()
        src.write_bytes(os.urandom(80_000))
        publish(a, src)  # b is away: nobody hears this announcement
        b, task = await start_b()  # the followed set is read back; the session catches up
        try:
            assert [f.resource_id for f in b.follow.book.all()] == [rid]
            await wait_until(lambda: held_version(b, rid) == 2, "caught up after restart")
        finally:
            b.stop()
            await asyncio.wait_for(task, 15)


async def test_a_followed_folder_stays_current_on_two_followers_while_it_is_edited(
        tmp_path: Path) -> None:
    """A folder followed into a directory on two devices: an edited file is rewritten, a
    renamed one is moved (no chunk of it travels), a file a follower changed is kept."""
    src = tmp_path / "album"
    (src / "raw").mkdir(parents=True)
    (src / "a.jpg").write_bytes(os.urandom(300_000))
    (src / "raw" / "b.dng").write_bytes(os.urandom(400_000))
    (src / "notes.txt").write_bytes(b"v1 notes\n")
    async with nodes("a", "b", "c") as n:
        a = n["a"]
        m = a.store.publish_tree(src, signer=a.identity)
        a.catalog_changed()
        rid = m.resource_id
        outs = {}
        for f in ("b", "c"):
            pair(a, n[f])
            await connect(n[f], a)
            outs[f] = tmp_path / f"{f}-album"
            r = await n[f].follow.follow(rid, str(outs[f]))
            assert r["version"] == 1
            assert (outs[f] / "raw" / "b.dng").read_bytes() == (src / "raw" / "b.dng").read_bytes()
        (outs["c"] / "notes.txt").write_bytes(b"c's own notes\n")  # c's user edits a file
        (src / "a.jpg").write_bytes(os.urandom(300_000))  # edited
        (src / "raw" / "b.dng").rename(src / "b-final.dng")  # renamed (and moved)
        (src / "notes.txt").write_bytes(b"v2 notes\n")
        a.store.publish_tree(src, signer=a.identity, update=rid)
        a.catalog_changed()
        a.follow.published(a.store.find(rid))
        for f in ("b", "c"):
            await wait_until(lambda f=f: held_version(n[f], rid) == 2,
                             f"{f} follows v2")
            out = outs[f]
            # the apply renames new files into place first and unlinks removed ones last
            # (a crash leaves a file old or new, never missing): wait for the whole of it
            await wait_until(lambda out=out: (out / "b-final.dng").exists()
                             and (out / "a.jpg").read_bytes() == (src / "a.jpg").read_bytes()
                             and not (out / "raw" / "b.dng").exists(),
                             "tree updated")
            assert (out / "b-final.dng").read_bytes() == (src / "b-final.dng").read_bytes()
            last = await wait_until(
                lambda f=f: (n[f].follow.list()[0]["last"] or {}).get("updated")
                and n[f].follow.list()[0]["last"], "sync recorded")
            assert last["bytes_fetched"] < 320_000  # the edited file; the renamed one moved
        assert (outs["b"] / "notes.txt").read_bytes() == b"v2 notes\n"
        assert (outs["c"] / "notes.txt").read_bytes() == b"c's own notes\n"  # kept
