"""Real python-zeroconf between LanDiscovery instances in this process, on loopback only.

Everything is pinned to ``lo`` (``interfaces=["lo"]``), so no packet leaves the machine; other
processes on this machine may be browsing ``_shoal._tcp`` on loopback too: every node runs in
the test's own mesh ($SHOAL_MESH, fresh per test), and every check still filters on the random
ids made here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from radio.lan import SERVICE_TYPE, LanDiscovery, LanEvent, LanPeerGone, LanPeerSeen

pytestmark = pytest.mark.usefixtures("loopback_mcast")


class Collector:
    """An ``on_event`` callback that records (monotonic time, event) and can be awaited."""

    def __init__(self) -> None:
        self.events: list[tuple[float, LanEvent]] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: LanEvent) -> None:
        self.events.append((time.monotonic(), event))
        self._changed.set()

    async def wait_for(
        self, pred: Callable[[LanEvent], bool], timeout: float = 5.0
    ) -> tuple[float, LanEvent]:
        async with asyncio.timeout(timeout):
            while True:
                for t, event in self.events:
                    if pred(event):
                        return t, event
                self._changed.clear()
                await self._changed.wait()


def seen(short_id: str, **fields: object) -> Callable[[LanEvent], bool]:
    return lambda e: (
        isinstance(e, LanPeerSeen)
        and e.short_id == short_id
        and all(getattr(e, k) == v for k, v in fields.items())
    )


def gone(short_id: str) -> Callable[[LanEvent], bool]:
    return lambda e: isinstance(e, LanPeerGone) and e.short_id == short_id


Node = tuple[LanDiscovery, Collector, str]


@pytest.fixture
async def make_node() -> AsyncIterator[Callable[..., Node]]:
    nodes: list[LanDiscovery] = []

    def make(name: str, *, port: int = 7400, short_id: str | None = None, **kw: object) -> Node:
        short_id = short_id or secrets.token_hex(8)
        col = Collector()
        disc = LanDiscovery(
            name,
            short_id,
            port,
            1,
            interfaces=["lo"],
            include_loopback=True,
            on_event=col,
            **{"poll_interval": 60, "mesh": os.environ["SHOAL_MESH"], **kw},
        )  # type: ignore[arg-type]
        nodes.append(disc)
        return disc, col, short_id

    yield make
    await asyncio.gather(*(n.stop() for n in nodes))


async def test_two_nodes_find_each_other(make_node: Callable[..., Node]) -> None:
    a, col_a, id_a = make_node("alpha", port=7401)
    b, col_b, id_b = make_node("beta", port=7402)
    t0 = time.monotonic()
    await asyncio.gather(a.start(), b.start())
    t_a, ev_a = await col_a.wait_for(seen(id_b))
    t_b, ev_b = await col_b.wait_for(seen(id_a))
    print(f"loopback, probing: a saw b after {t_a - t0:.3f} s, b saw a after {t_b - t0:.3f} s")
    assert ev_a == LanPeerSeen(id_b, "beta", ["127.0.0.1"], 7402, 1, "lo")
    assert ev_b == LanPeerSeen(id_a, "alpha", ["127.0.0.1"], 7401, 1, "lo")
    assert not any(isinstance(e, LanPeerSeen) and e.short_id == id_a for _, e in col_a.events)


async def test_without_probing_first_announce_is_immediate(make_node: Callable[..., Node]) -> None:
    a, col_a, id_a = make_node("alpha", probe=False)
    b, col_b, id_b = make_node("beta", probe=False)
    t0 = time.monotonic()
    await asyncio.gather(a.start(), b.start())
    t_a, _ = await col_a.wait_for(seen(id_b))
    t_b, _ = await col_b.wait_for(seen(id_a))
    print(f"loopback, probe=False: seen after {t_a - t0:.3f} s / {t_b - t0:.3f} s")


async def test_late_joiner_sees_running_node_quickly(make_node: Callable[..., Node]) -> None:
    a, _, id_a = make_node("alpha", probe=False)
    await a.start()
    await asyncio.sleep(1.0)  # a's announcements are over: b must ask
    b, col_b, _ = make_node("beta")
    t0 = time.monotonic()
    await b.start()  # browser runs during b's own probing
    t_b, _ = await col_b.wait_for(seen(id_a))
    # a finished announcing long ago and re-announces only near its TTL (minutes): seeing it
    # at all proves b's own query was answered
    print(f"loopback: late joiner saw the running node after {t_b - t0:.3f} s")


async def test_stop_sends_goodbye_and_peer_reports_gone(make_node: Callable[..., Node]) -> None:
    a, col_a, _ = make_node("alpha", probe=False)
    b, _, id_b = make_node("beta", probe=False)
    await asyncio.gather(a.start(), b.start())
    await col_a.wait_for(seen(id_b))
    t0 = time.monotonic()
    await asyncio.wait_for(b.stop(), 30)  # hang guard only
    # records live for minutes (TTL): a gone event within the guard can only be the goodbye
    t_gone, _ = await col_a.wait_for(gone(id_b), timeout=30)
    print(f"gone seen {t_gone - t0:.3f} s after stop()")
    await b.stop()  # idempotent


async def test_update_port_is_seen(make_node: Callable[..., Node]) -> None:
    a, col_a, _ = make_node("alpha", probe=False)
    b, _, id_b = make_node("beta", port=7402, probe=False)
    await asyncio.gather(a.start(), b.start())
    await col_a.wait_for(seen(id_b, port=7402))
    await b.update(port=7999)
    await col_a.wait_for(seen(id_b, port=7999), timeout=3)


async def test_malformed_advertisements_are_ignored(make_node: Callable[..., Node]) -> None:
    a, col_a, _ = make_node("alpha", probe=False)
    await a.start()
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    bad_ids = []
    try:
        for i, props in enumerate(
            [
                {"v": "1", "port": "7400", "n": "no id"},
                {"v": "one", "id": "x", "port": "7400", "n": "bad v"},
                {"v": "1", "id": "y" * 40, "port": "7400", "n": "long id"},
                {"v": "1", "id": "z", "port": "7400", "n": "x" * 200},
                {"v": "1", "id": "w", "port": "1234", "n": "srv mismatch"},
            ]
        ):
            bad_ids.append(props.get("id"))
            info = AsyncServiceInfo(
                SERVICE_TYPE,
                f"bad{i}-{secrets.token_hex(4)}.{SERVICE_TYPE}",
                addresses=[socket.inet_aton("127.0.0.1")],
                port=7400,
                properties=props,
                server=f"bad{i}.local.",
            )
            await zc.async_register_service(info, cooperating_responders=True)
        b, _, id_b = make_node("beta", probe=False)
        await b.start()
        await col_a.wait_for(seen(id_b))
        await asyncio.sleep(0.3)
        assert not any(getattr(e, "short_id", None) in bad_ids for _, e in col_a.events)
    finally:
        await zc.async_close()


async def test_name_conflict_renames_instead_of_failing(make_node: Callable[..., Node]) -> None:
    short_id = secrets.token_hex(8)
    a, _, _ = make_node("twin", short_id=short_id)
    await a.start()
    b, _, _ = make_node("twin", short_id=short_id)  # same identity started twice
    await b.start()
    assert a.instance_name == f"twin ({short_id})"
    assert b.instance_name == f"twin ({short_id})-2"


async def test_socket_failure_at_start_is_retried(make_node: Callable[..., Node], mocker) -> None:
    import radio.lan as lan_mod

    real = lan_mod.AsyncZeroconf
    calls = 0

    def flaky(*args: object, **kwargs: object) -> AsyncZeroconf:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(99, "Cannot assign requested address")
        return real(*args, **kwargs)

    a, col_a, _ = make_node("alpha", probe=False)
    b, _, id_b = make_node("beta", probe=False, poll_interval=0.2)
    await a.start()
    mocker.patch.object(lan_mod, "AsyncZeroconf", side_effect=flaky)
    await b.start()  # logs and carries on; the poller retries
    assert b.interfaces == ()
    await col_a.wait_for(seen(id_b), timeout=3)
    assert calls == 2


async def test_stop_is_bounded_when_goodbyes_hang(make_node: Callable[..., Node], mocker) -> None:
    a, _, _ = make_node("alpha", probe=False, stop_timeout=0.5)
    await a.start()
    zc = a._zc
    assert zc is not None

    calls = 0

    async def hang_once() -> None:  # the goodbyes hang; close's own (empty) call does not
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)

    mocker.patch.object(zc, "async_unregister_all_services", side_effect=hang_once)
    # the goodbye hangs for 30 s: stop() must give up on it (its own bound), not wait it out
    stop = asyncio.ensure_future(a.stop())
    done, _ = await asyncio.wait({stop}, timeout=20)
    assert done, "stop() waited for the hanging goodbye"
    assert zc.zeroconf.done  # sockets closed despite the timeout


async def test_two_meshes_on_one_loopback_do_not_see_each_other(
    make_node: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    """Two meshes side by side (like two copies of the test suite on one machine): each node
    reports only its own mesh, though the other mesh's advertisements do arrive."""
    caplog.set_level(logging.DEBUG, logger="radio.lan")
    red, blue = f"red-{secrets.token_hex(4)}", f"blue-{secrets.token_hex(4)}"
    r1, col_r1, id_r1 = make_node("r1", probe=False, mesh=red)
    r2, col_r2, id_r2 = make_node("r2", probe=False, mesh=red)
    b1, col_b1, id_b1 = make_node("b1", probe=False, mesh=blue)
    b2, col_b2, id_b2 = make_node("b2", probe=False, mesh=blue)
    await asyncio.gather(r1.start(), r2.start(), b1.start(), b2.start())
    await col_r1.wait_for(seen(id_r2))
    await col_r2.wait_for(seen(id_r1))
    await col_b1.wait_for(seen(id_b2))
    await col_b2.wait_for(seen(id_b1))

    def ignored(short_id: str, mesh: str) -> bool:
        return any(
            short_id in rec.getMessage() and f"mesh {mesh!r}" in rec.getMessage()
            for rec in caplog.records
        )

    # the other mesh's records reached every node and were dropped there
    async with asyncio.timeout(10):
        while not all(ignored(i, blue) for i in (id_b1, id_b2)) or not all(
            ignored(i, red) for i in (id_r1, id_r2)
        ):
            await asyncio.sleep(0.05)
    for col, others in ((col_r1, {id_b1, id_b2}), (col_r2, {id_b1, id_b2}),
                        (col_b1, {id_r1, id_r2}), (col_b2, {id_r1, id_r2})):  # fmt: skip
        assert not any(e.short_id in others for _, e in col.events)
