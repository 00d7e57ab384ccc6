"""Router: the table from peer operation to the service that answers it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from peer_helpers import make_peer, wait_until

from agent.peer import wire
from agent.peer.connection import Refused, RemoteError
from agent.peer.router import Router

CONN = SimpleNamespace(name="peer", peer_id=b"p" * 32)
CLUSTER = {"c": "ab" * 16, "n": 1, "l": ""}


async def test_requests_go_to_their_handler():
    seen = []

    async def ping(conn, req):
        seen.append((conn, req.op, req.args))
        return {"pong": req.args["t"]}

    r = Router()
    r.add_requests({"ping": ping})
    assert await r.handle(CONN, wire.Request(1, "ping", {"t": 5})) == {"pong": 5}
    assert seen == [(CONN, "ping", {"t": 5})]


async def test_unknown_request_is_refused():
    r = Router()
    with pytest.raises(Refused, match="'list' is not supported"):
        await r.handle(CONN, wire.Request(1, "list", {}))


async def test_handler_errors_reach_the_caller():
    async def boom(conn, req):
        raise Refused("no such chunk")

    r = Router()
    r.add_requests({"chunk": boom})
    with pytest.raises(Refused, match="no such chunk"):
        await r.handle(CONN, wire.Request(1, "chunk", {"c": "00" * 32}))


def test_an_operation_is_registered_once():
    async def h(conn, req):
        return None

    r = Router()
    r.add_requests({"ping": h, "list": h})
    with pytest.raises(ValueError, match="'ping' registered twice"):
        r.add_requests({"ping": h})
    r.add_events(("raft",), lambda *a: None)
    with pytest.raises(ValueError, match="'raft' registered twice"):
        r.add_events(("report", "raft"), lambda *a: None)


def test_events_go_to_their_sink_and_unknown_ones_are_ignored():
    got = []
    r = Router()
    r.add_events(("raft", "cluster"), lambda conn, op, args: got.append((conn, op, args)))
    r.event(CONN, wire.Event("cluster", CLUSTER))
    r.event(CONN, wire.Event("report", {}))  # nobody listens: ignored
    assert got == [(CONN, "cluster", CLUSTER)]


def test_a_raising_event_sink_does_not_escape_the_router():
    got = []

    def sink(conn, op, args):
        got.append(op)
        if op == "raft":
            raise RuntimeError("bug in a service")

    r = Router()
    r.add_events(("raft", "cluster"), sink)
    r.event(CONN, wire.Event("raft", {"c": "ab" * 16, "m": "x"}))  # logged, not raised
    r.event(CONN, wire.Event("cluster", CLUSTER))
    assert got == ["raft", "cluster"]


async def test_a_raising_event_sink_does_not_kill_the_session(tmp_path):
    """Over a real session: a service's bug on one event must not end the peer's session
    (before the fix the exception escaped into PeerConnection.serve and closed it)."""
    a, b = make_peer(tmp_path, "alpha"), make_peer(tmp_path, "bravo")
    await a.conns.start()
    await b.conns.start()
    try:
        got = []

        def sink(conn, op, args):
            got.append(op)
            if op == "raft":
                raise KeyError("bug")

        b.router.add_events(("raft", "cluster"), sink)
        conn = await a.conns.connect(b.address)
        await conn.send_event("raft", {"c": "ab" * 16, "m": "x"})
        await conn.send_event("cluster", CLUSTER)
        await wait_until(lambda: got == ["raft", "cluster"], "both events handled")
        assert not conn.closed.is_set()
        assert await conn.ping() >= 0
        # and an unknown request is a refusal on the same session, not a disconnect
        with pytest.raises(RemoteError, match="not supported"):
            await conn.request("manifest", {"resource": "x"})
        assert await conn.ping() >= 0
    finally:
        await a.stop()
        await b.stop()
