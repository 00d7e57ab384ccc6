"""The DHT and the real relay together (in-process agents on loopback): a line a - b - c - d of
paired agents; a fetches a resource only d holds. The DHT finds d, the relay opens the session
through the introducer b (b forwards to c, its introducer for d), and both intermediates
forward the bytes."""

from __future__ import annotations

import os
from pathlib import Path

from tests.integration.test_dht_agents import connect, keep_only, nodes, pair
from tests.waiting import wait_until


async def test_a_resource_three_hops_away_comes_through_dht_and_relay(tmp_path: Path) -> None:
    async with nodes("a", "b", "c", "d") as n:
        a, b, c, d = n["a"], n["b"], n["c"], n["d"]
        pair(a, b, c, d)
        await connect(a, b)
        await connect(b, c)
        await connect(c, d)
        path = tmp_path / "film.bin"
        path.write_bytes(os.urandom(300_000))
        m = d.store.publish_file(path, public=True, signer=d.identity)
        d.catalog_changed()
        assert a.dht is not None and d.dht is not None
        ids = {x.identity.device_id for x in (b, c, d)}
        await wait_until(lambda: d.dht.counters.announced > 0
                         and set(a.dht.node.table.contacts()) == ids,
                         "d announced; a's table holds the whole line", timeout=60)
        await keep_only(a, b)  # relayed sessions from the table's upkeep end
        before = {x.cfg.node.name: x.relay.stats()["forwarded_bytes"] for x in (b, c)}
        out = await a.fetcher.fetch(m.resource_id)
        assert out["bytes_fetched"] == m.size and list(out["sources"]) == ["d"]  # type: ignore[call-overload]
        assert a.dht.counters.lookups_found == 1
        for x in (b, c):
            assert x.relay.stats()["forwarded_bytes"] - before[x.cfg.node.name] > m.size
        assert path.read_bytes() == b"".join(
            a.store.get_chunk(ch.chunk_id) for ch in a.store.find(m.resource_id).manifest.chunks)
