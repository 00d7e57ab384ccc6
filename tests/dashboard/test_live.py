"""The live view and the actions against real in-process agents: the stream carries each
section, then only what changed; publishing, pairing and fetching through the dashboard's
actions work as through the CLI (the same command handlers)."""

from __future__ import annotations

import asyncio
import json

from agent.dashboard.live import LiveFeed

from .helpers import Browser, Stream, nodes


async def test_feed_reads_only_while_a_page_listens_and_sends_only_changes():
    value = {"n": 0}

    async def source() -> dict[str, object]:
        return {"a": value["n"], "b": "same"}

    feed = LiveFeed(source, 0.01)
    await asyncio.sleep(0.05)
    assert feed.reads == 0  # nobody listens: nothing is read
    lst = feed.subscribe()
    first = await asyncio.wait_for(lst.next(), 5)
    assert first == {"a": "0", "b": '"same"'}
    value["n"] = 1
    second = await asyncio.wait_for(lst.next(), 5)
    assert second == {"a": "1"}  # b did not change: not sent again
    feed.unsubscribe(lst)
    await asyncio.sleep(0.1)
    reads = feed.reads
    await asyncio.sleep(0.1)
    assert feed.reads == reads  # the page closed: reading stopped
    late = feed.subscribe()  # a new page starts from the whole picture
    assert json.loads((await asyncio.wait_for(late.next(), 5))["a"]) == 1
    await feed.close()


async def test_stream_shows_the_agent_and_publish_updates_it(tmp_path):
    async with nodes("a") as ns:
        b = await Browser(ns["a"]).login()
        async with Stream(b) as s:
            await s.until(lambda x: {"status", "mesh", "resources", "raft", "pairing",
                                     "transfers", "history", "doctor"} <= set(x))
            assert s.latest["status"]["name"] == "a"
            f = tmp_path / "notes.txt"
            f.write_bytes(b"hello dashboard\n" * 100)
            ans = (await b.action("publish", {"path": str(f)})).json()
            assert ans["ok"], ans
            names = await s.until(lambda x: [r["name"] for r in
                                             x["resources"].get("local", [])] or None)
            assert names == ["notes.txt"]
            up = await b.upload("up.bin", b"\x00\x01" * 5000)
            assert up["ok"] and up["result"]["size"] == 10000, up
            await s.until(lambda x: "up.bin" in [r["name"] for r in x["resources"]["local"]])
            assert not list((ns["a"].cfg.node.data_dir / "uploads").iterdir())  # cleaned up
            got = await b.get("/api/download?resource=notes.txt")
            assert got.status == 200 and got.body == f.read_bytes()
            assert 'filename="notes.txt"' in got.headers["content-disposition"]
            assert (await b.get("/api/download?resource=nothing")).status == 404


async def test_pair_and_fetch_through_the_dashboard(tmp_path):
    async with nodes("a", "b") as ns:
        a, b = await Browser(ns["a"]).login(), await Browser(ns["b"]).login()
        opened = (await b.action("pair_open", {})).json()
        assert opened["ok"], opened
        started = (await a.action("pair_start", {
            "address": f"127.0.0.1:{ns['b'].connections.lan_port}"})).json()
        assert started["ok"], started
        code = started["result"]["code"]
        async with Stream(b) as sb:  # b's screen shows the same code
            pending = await sb.until(lambda x: x.get("pairing", {}).get("pending"))
            assert [p["code"] for p in pending] == [code]
        assert (await a.action("pair_confirm", {"code": code})).json()["ok"]
        assert (await b.action("pair_confirm", {"code": code})).json()["ok"]
        for n in ns.values():
            await asyncio.wait_for(_paired(n), 20)
        f = tmp_path / "data.bin"
        f.write_bytes(bytes(range(256)) * 400)
        assert (await a.action("publish", {"path": str(f)})).json()["ok"]
        async with Stream(b) as sb:
            got = (await b.action("fetch", {"resource": "data.bin"})).json()
            assert got["ok"], got
            rows = await sb.until(lambda x: [t for t in x.get("transfers", {}).get("page", [])
                                             if t["state"] == "done"])
            assert rows[0]["resource"] == "data.bin" and rows[0]["total"] == 256 * 400
        assert [r.name for r in ns["b"].store.resources()] == ["data.bin"]


async def _paired(n) -> None:
    while len(n.trust.list()) != 1:
        await asyncio.sleep(0.05)
