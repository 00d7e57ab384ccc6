"""The fetch path and mirrors: a mirror kept for us is tried first and its service is
logged as ``mirror:<id>``; a prefetch (or a mirror's own fetch) is not a request of this
device's user, so it is not logged (it must not feed the predictions)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from test_fetcher import FakeConn
from test_wiring import ME, PUBLISHER, Conns, Recorder

from agent.config import TransferConfig
from agent.store import ContentStore
from agent.transfer.service import FetchService

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def published(tmp_path: Path):
    """The origin a publishes; c holds the same version (fetched from a, as a mirror does)."""
    stores = [ContentStore(tmp_path / n, avg_chunk_size=16 * 1024) for n in ("a", "c")]
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(200 * 1024))
    m = stores[0].publish_file(f, name="data.bin", public=True, signer=PUBLISHER)
    await FetchService(stores[1], Conns(FakeConn("a", stores[0])),  # type: ignore[arg-type]
                       TransferConfig(), connect_timeout=1.0, default_port=1
                       ).fetch(m.manifest_hash, traffic_class="mirror")
    dst = ContentStore(tmp_path / "dst", avg_chunk_size=16 * 1024)
    yield stores, dst, m
    for s in (*stores, dst):
        s.close()


async def test_a_prefetch_is_not_logged_but_the_later_local_hit_is(published) -> None:
    (a, _), dst, m = published
    rec = Recorder()
    service = FetchService(dst, Conns(FakeConn("a", a)), TransferConfig(),  # type: ignore[arg-type]
                           connect_timeout=1.0, default_port=1, access=rec)
    await service.fetch(m.manifest_hash, traffic_class="prefetch")
    assert rec.calls == []
    await service.fetch(m.resource_id)
    assert rec.calls == [(ME, m.resource_id, m.size, True, "local")]


async def test_the_mirror_is_tried_first_and_logged_as_a_mirror(published) -> None:
    (a, c), dst, m = published
    rec = Recorder()
    origin, mirror = FakeConn("a", a), FakeConn("c", c)
    one = dataclasses.replace(TransferConfig(), max_sources=1)  # only the first is used
    service = FetchService(dst, Conns(origin, mirror), one,  # type: ignore[arg-type]
                           connect_timeout=1.0, default_port=1, access=rec,
                           mirrors=lambda rid: [mirror.peer_id.hex()] if rid == m.resource_id
                           else [])
    r = await service.fetch(m.manifest_hash)
    assert mirror.served > 0 and origin.served == 0
    assert str(r["why"]).startswith("mirror c first")
    assert rec.calls == [(ME, m.resource_id, m.size, False,
                          "mirror:" + mirror.peer_id.hex()[:16])]
