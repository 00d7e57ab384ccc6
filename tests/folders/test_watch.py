"""Watched publishes: the debounce policy (pure), the saved watch list (hostile file), and
the watch service on a real inotify descriptor with a recording publisher."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from waiting import wait_until

from agent.config import WatchConfig
from agent.folders import watchstate
from agent.folders.debounce import Debounce
from agent.folders.watch import NotWatched, WatchLimit, WatchService
from agent.folders.watchstate import WatchEntry
from agent.security.identity import Identity
from agent.store import ContentStore, Manifest


@contextlib.asynccontextmanager
async def running(svc: WatchService) -> AsyncIterator[None]:
    """The watch service's loop, running for the block."""
    task = asyncio.create_task(svc.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


RID = "ab" * 16


def test_debounce_waits_for_quiet_and_spaces_versions() -> None:
    d = Debounce(quiet=2.0, min_interval=10.0)
    assert d.due() is None
    d.changed(100.0)
    d.changed(101.0)  # a burst: the quiet period restarts
    assert d.due() == 103.0
    d.start()
    d.changed(103.5)  # during the publish: one more afterwards, not now
    assert d.due() is None
    d.finished(104.0)
    assert d.due() == 114.0  # min_interval after the last publish
    d.start()
    d.finished(114.0)
    assert d.due() is None  # nothing changed since


def test_watch_state_round_trip_and_hostile_files(tmp_path: Path) -> None:
    p = tmp_path / "watches.json"
    entries = [WatchEntry(Path("/srv/photos"), RID, True)]
    watchstate.save(p, entries)
    assert watchstate.load(p) == entries
    def one(**over: object) -> str:
        entry = {"path": "/a", "public": False, "resource_id": RID} | over
        return json.dumps({"watches": [entry]})

    for bad in (one(path="relative"), one(path="/a\x1b[2J"), one(public=1),
                one(resource_id="../x"), one(extra=1), '{"watches": [], "extra": 1}',
                "not json", "[]"):
        p.write_text(bad)
        assert watchstate.load(p) == []
    p.write_bytes(b" " * (watchstate.MAX_STATE_BYTES + 1))
    assert watchstate.load(p) == []


class Recorder:
    """A republish port over a real store: counts calls, returns the store's answer."""

    def __init__(self, store: ContentStore, signer: Identity) -> None:
        self.store, self.signer, self.calls = store, signer, 0

    def __call__(self, w: WatchEntry) -> Manifest:
        self.calls += 1
        if w.path.is_dir():
            return self.store.publish_tree(w.path, signer=self.signer, update=w.resource_id)
        return self.store.publish_file(w.path, signer=self.signer, update=w.resource_id)


@pytest.fixture
def setup(tmp_path: Path):
    store = ContentStore(tmp_path / "store")
    signer = Identity.generate()
    yield store, signer, Recorder(store, signer)
    store.close()


async def test_folder_watch_publishes_versions(tmp_path: Path, setup) -> None:
    store, signer, rec = setup
    root = tmp_path / "site"
    (root / "css").mkdir(parents=True)
    (root / "index.html").write_text("<h1>v1</h1>")
    m1 = store.publish_tree(root, signer=signer)
    published = []
    svc = WatchService(WatchConfig(quiet=0.05, min_interval=0.0), tmp_path / "w.json", rec,
                       lambda m: published.append(1))
    async with running(svc):
        svc.add(root, m1.resource_id, False, 1, m1.name)

        def version() -> int:
            return store.find(m1.resource_id).version

        (root / "css" / "site.css").write_text("h1 {}")
        await wait_until(lambda: version() == 2, "v2 after a file in a subdirectory")
        (root / ".index.html.swp").write_text("vim swap")  # ignored: never published
        (root / "index.html.part").write_text("partial download")
        (root / "new").mkdir()
        (root / "new" / "x.txt").write_text("in a directory created just now")
        await wait_until(lambda: version() == 3, "v3 after a file in a new directory")
        await wait_until(lambda: len(published) == 2, "the catalog told of each version")
        files = [f.path for f in store.find(m1.resource_id).manifest.files or ()]
        assert files == ["css/site.css", "index.html", "new/x.txt"]
        assert svc.describe()[0]["dirs"] == 3
        assert watchstate.load(tmp_path / "w.json") == [WatchEntry(root, m1.resource_id,
                                                                    False)]
        with pytest.raises(NotWatched):
            svc.remove("nothing-like-it")
        assert [w["path"] for w in svc.remove(m1.resource_id[:8])] == [str(root)]
        assert watchstate.load(tmp_path / "w.json") == []


async def test_file_watch_sees_atomic_saves_and_limits(tmp_path: Path, setup) -> None:
    store, signer, rec = setup
    doc = tmp_path / "doc.txt"
    doc.write_text("one")
    m1 = store.publish_file(doc, signer=signer)
    svc = WatchService(WatchConfig(quiet=0.05, min_interval=0.0, max_watched=1),
                       tmp_path / "w.json", rec, lambda m: None)
    async with running(svc):
        svc.add(doc, m1.resource_id, False, 1, m1.name)
        (tmp_path / "other.txt").write_text("a neighbour: not this watch's business")
        tmp = tmp_path / "doc.txt.tmp"  # an editor's save: write a temp, rename it over
        tmp.write_text("two")
        tmp.replace(doc)
        await wait_until(lambda: store.find(m1.resource_id).version == 2, "v2 after a save")
        assert rec.calls == 1  # the save only: the neighbour's write (seen first) was not
        with pytest.raises(WatchLimit, match="max_watched"):
            svc.add(tmp_path / "other.txt", "cd" * 16, False, 1, "other.txt")


async def test_saved_watches_come_back_and_catch_up(tmp_path: Path, setup) -> None:
    store, signer, rec = setup
    doc = tmp_path / "doc.txt"
    doc.write_text("one")
    m1 = store.publish_file(doc, signer=signer)
    state = tmp_path / "w.json"
    watchstate.save(state, [WatchEntry(doc, m1.resource_id, False)])
    doc.write_text("changed while the agent was stopped")
    svc = WatchService(WatchConfig(quiet=0.05, min_interval=0.0), state, rec, lambda m: None)
    async with running(svc):
        await wait_until(lambda: store.find(m1.resource_id).version == 2, "catch-up v2")
        assert json.loads(state.read_text())["watches"][0]["path"] == str(doc)


async def test_watches_sharing_a_directory_stay_independent(tmp_path: Path, setup) -> None:
    """Two files of one directory share one kernel watch: unwatching one must not blind
    the other. And the directory limit is enforced."""
    store, signer, rec = setup
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("1")
    two.write_text("2")
    m1, m2 = store.publish_file(one, signer=signer), store.publish_file(two, signer=signer)
    svc = WatchService(WatchConfig(quiet=0.05, min_interval=0.0, max_dirs=2),
                       tmp_path / "w.json", rec, lambda m: None)
    async with running(svc):
        svc.add(one, m1.resource_id, False, 1, m1.name)
        svc.add(two, m2.resource_id, False, 1, m2.name)
        svc.remove(str(one))
        two.write_text("2, edited")
        await wait_until(lambda: store.find(m2.resource_id).version == 2, "two.txt v2")
        deep = tmp_path / "a" / "b" / "c"
        deep.mkdir(parents=True)
        (deep / "f").write_text("x")
        m3 = store.publish_tree(tmp_path / "a", signer=signer)
        with pytest.raises(WatchLimit, match="max_dirs"):
            svc.add(tmp_path / "a", m3.resource_id, False, 1, "a")
        assert [w["path"] for w in svc.describe()] == [str(two)]


async def test_a_publish_that_met_a_changing_file_is_retried(tmp_path: Path, setup) -> None:
    """The file was being written while it was read (SourceChanged): no event may follow,
    so the watch tries again once quiet instead of staying on the old version."""
    from agent.store import SourceChanged

    store, signer, rec = setup
    doc = tmp_path / "log.txt"
    doc.write_text("one")
    m1 = store.publish_file(doc, signer=signer)
    failures = []

    def flaky(w: WatchEntry) -> Manifest:
        if not failures:
            failures.append(1)
            raise SourceChanged(f"{w.path} changed while it was being published")
        return rec(w)

    svc = WatchService(WatchConfig(quiet=0.05, min_interval=0.0), tmp_path / "w.json",
                       flaky, lambda m: None)
    async with running(svc):
        svc.add(doc, m1.resource_id, False, 1, m1.name)
        doc.write_text("two")  # one change; the first publish of it fails
        await wait_until(lambda: store.find(m1.resource_id).version == 2, "v2 on the retry")
        await wait_until(lambda: svc.describe()[0]["error"] is None, "the error cleared")
        assert failures == [1]
