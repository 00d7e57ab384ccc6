"""Multi-hop reach with real agents in one process: A reaches B through paired relays.

Every agent is a real Node on loopback; only direct sessions that the test opens exist, so
a relayed session is the only way A can reach B.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from relay_helpers import connect, ident, nodes, pair

from agent.errors import ErrorKind, ShoalError
from agent.peer import wire
from agent.peer.connection import PeerGone, RemoteError
from agent.relay.service import NoRoute, RelayRefused, RelayUntrusted
from tests.waiting import wait_until


def _publish(node, tmp_path: Path, name: str, size: int, public: bool = False) -> bytes:
    data = os.urandom(size)
    src = tmp_path / name
    src.write_bytes(data)
    node.store.publish_file(src, signer=node.identity, public=public)
    node.catalog_changed()
    return data


def _held(node, tmp_path: Path, name: str) -> bytes:
    rec = node.store.find(name)
    out = tmp_path / f"out-{name}"
    node.store.export(rec.manifest, out)
    return out.read_bytes()


async def test_fetch_through_one_relay_sees_only_ciphertext(tmp_path: Path) -> None:
    async with nodes("a", "r", "b") as n:
        a, r, b = n["a"], n["r"], n["b"]
        pair(a, r), pair(r, b), pair(a, b)
        await connect(a, r)
        await connect(r, b)
        data = _publish(b, tmp_path, "plan-7f3.bin", 600 * 1024)
        seen: list[bytes] = []
        forward = r.relay.on_frame

        def record(conn, frame):  # everything the relay is handed to forward
            seen.append(bytes(frame.data))
            forward(conn, frame)

        r.router._frames = record
        s = await a.relay.open(ident(b), via=ident(r))
        assert s.transport == "relay" and s.peer_id == ident(b)
        result = await a.fetcher.fetch("plan-7f3.bin")
        assert result["version"] == 1
        assert _held(a, tmp_path, "plan-7f3.bin") == data
        # the target authenticated A itself (not the relay) and applied its own trust
        back = [c for c in b.connections.sessions() if c.transport == "relay"]
        assert [c.peer_id for c in back] == [ident(a)]
        assert b.trust.is_trusted(back[0].peer_id)
        # the relay saw only ciphertext: no piece of the resource, nor its name
        blob = b"".join(seen)
        assert len(blob) > len(data)
        for off in range(0, len(data) - 64, 37 * 1024):
            assert data[off:off + 64] not in blob
        assert b"plan-7f3" not in blob
        # relayed bytes are counted in the relay class, and shown
        stats = r.relay.stats()
        assert stats["forwarded_bytes"] >= len(data)
        assert r.gate.scheduler.released_bytes["relay"] >= len(data)
        status = await r.commands.status({}, None)
        assert status["relay"]["forwarding"] == 1
        peers = await a.commands.peers({}, None)
        row = next(p for p in peers if p["peer_id"] == ident(b).hex())
        assert "relay" in row["sources"] and row["connected"]


async def test_fetch_through_two_relays(tmp_path: Path) -> None:
    async with nodes("a", "r1", "r2", "b") as n:
        a, r1, r2, b = n["a"], n["r1"], n["r2"], n["b"]
        pair(a, r1), pair(r1, r2), pair(r2, b), pair(a, b)
        await connect(a, r1)
        await connect(r1, r2)
        await connect(r2, b)
        # r1 has no session to b: the resolver (the DHT's job in the agent) names r2
        r1.relay.set_next_hop(lambda t: ident(r2) if t == ident(b) else None)
        data = _publish(b, tmp_path, "far.bin", 300 * 1024)
        s = await a.relay.open(ident(b), via=ident(r1))
        assert s.peer_id == ident(b)
        await a.fetcher.fetch("far.bin")
        assert _held(a, tmp_path, "far.bin") == data
        assert r1.relay.stats()["forwarded_bytes"] >= len(data)
        assert r2.relay.stats()["forwarded_bytes"] >= len(data)
        # the same call again returns the live session, not a second circuit
        assert await a.relay.open(ident(b), via=ident(r1)) is s
        assert len(r1.relay.table) == 1


async def test_hop_limit_is_refused() -> None:
    async with nodes("a", "r1", "r2", "b") as n:
        a, r1, r2, b = n["a"], n["r1"], n["r2"], n["b"]
        pair(a, r1), pair(r1, r2), pair(r2, b), pair(a, b)
        await connect(a, r1)
        await connect(r1, r2)
        await connect(r2, b)
        r1.relay.set_next_hop(lambda t: ident(r2))
        with pytest.raises(RelayRefused, match="hop limit"):
            await a.relay.open(ident(b), via=ident(r1), max_relays=1)
        for node in (a, r1, r2, b):
            assert len(node.relay.table) == 0
        assert not [c for c in a.connections.sessions() if c.transport == "relay"]


async def test_a_routing_loop_is_refused() -> None:
    """Resolvers that send a circuit round r1 -> r2 -> r3 -> r1: the circuit's nonce is
    already carried at r1 the second time, so the loop ends there."""
    async with nodes("a", "r1", "r2", "r3") as n:
        a, r1, r2, r3 = n["a"], n["r1"], n["r2"], n["r3"]
        pair(a, r1), pair(r1, r2), pair(r2, r3), pair(r3, r1)
        await connect(a, r1)
        await connect(r1, r2)
        await connect(r2, r3)
        await connect(r3, r1)
        for x, y in ((r1, r2), (r2, r3), (r3, r1)):
            x.relay.set_next_hop(lambda t, y=y: ident(y))
        with pytest.raises(RelayRefused, match="loop"):
            await a.relay.open(os.urandom(32), via=ident(r1))
        for node in (a, r1, r2, r3):
            assert len(node.relay.table) == 0


async def test_unpaired_origin_is_refused_by_the_relay() -> None:
    async with nodes("a", "r", "b") as n:
        a, r, b = n["a"], n["r"], n["b"]
        pair(r, b), pair(a, b)  # a and b trust each other, but r does not know a
        await connect(a, r)
        await connect(r, b)
        with pytest.raises(RelayUntrusted):
            await a.relay.open(ident(b), via=ident(r))
        assert r.relay.stats()["refused"] == 1
        assert len(r.relay.table) == 0
        # and no route at all without a relay or a resolver
        with pytest.raises(NoRoute):
            await a.relay.open(ident(b))


async def test_target_applies_its_own_trust_to_the_origin(tmp_path: Path) -> None:
    """r is paired with both, a and b are strangers: b sees a (not r) and treats it as the
    stranger it is: public resources only, and nothing a stranger may not change."""
    async with nodes("a", "r", "b", config={"b": {"prefetch": {"enabled": True}}}) as n:
        a, r, b = n["a"], n["r"], n["b"]
        pair(a, r), pair(r, b)
        await connect(a, r)
        await connect(r, b)
        _publish(b, tmp_path, "private.bin", 50 * 1024)
        pub = _publish(b, tmp_path, "public.bin", 50 * 1024, public=True)
        s = await a.relay.open(ident(b), via=ident(r))
        back = await wait_until(lambda: [c for c in b.connections.sessions()
                                         if c.transport == "relay"], "b's side of the circuit")
        assert back[0].peer_id == ident(a) and not b.trust.is_trusted(ident(a))
        await a.fetcher.fetch("public.bin")
        assert _held(a, tmp_path, "public.bin") == pub
        with pytest.raises(ShoalError) as refused:  # b does not offer it to a stranger
            await a.fetcher.fetch("private.bin")
        assert refused.value.kind == ErrorKind.NOT_FOUND
        with pytest.raises(RemoteError) as e:  # a mirror on b would change b's store
            await s.request("mirror", {"do": "hold", "r": "00" * 16, "n": 1})
        assert e.value.remote_kind == ErrorKind.UNTRUSTED


async def test_relay_dying_mid_fetch_closes_the_circuit_and_the_fetch_fails_over(
        tmp_path: Path) -> None:
    """r1 dies mid-fetch: a's relayed session closes at once (a pending request fails, it
    does not hang), and the fetch continues over a circuit through r2."""
    slow = {"bandwidth": {"global_limit": 1_000_000}}
    async with nodes("a", "r1", "r2", "b", config={"b": slow}) as n:
        a, r1, r2, b = n["a"], n["r1"], n["r2"], n["b"]
        for x, y in ((a, r1), (a, r2), (r1, b), (r2, b), (a, b)):
            pair(x, y)
            await connect(x, y)
        a_b = next(c for c in a.connections.sessions() if c.peer_id == ident(b))
        await a_b.close("only relays lead to b in this test")
        await wait_until(lambda: not [c for c in b.connections.sessions()
                                      if c.peer_id == ident(a)], "a-b closed")
        data = _publish(b, tmp_path, "big.bin", 3 * 1024 * 1024)
        s = await a.relay.open(ident(b), via=ident(r1))
        fetch = asyncio.ensure_future(a.fetcher.fetch("big.bin"))
        await wait_until(lambda: r1.relay.stats()["forwarded_bytes"] > 300 * 1024,
                         "the fetch under way")
        pending = asyncio.ensure_future(s.request("ping", {"t": 1}, timeout=60))
        for c in r1.connections.sessions():  # r1 dies: its sockets just go
            c.channel._writer.transport.abort()
        await wait_until(s.closed.is_set, "a's relayed session closed", timeout=10)
        with pytest.raises(PeerGone):
            await asyncio.wait_for(pending, 10)
        assert not fetch.done()
        s2 = await a.relay.open(ident(b), via=ident(r2))
        assert s2 is not s and not s2.closed.is_set()
        await asyncio.wait_for(fetch, 60)
        assert _held(a, tmp_path, "big.bin") == data
        assert r2.relay.stats()["forwarded_bytes"] > 0
        assert len(a.relay.table) == 1


async def test_bad_frames_end_only_their_circuit() -> None:
    async with nodes("a", "r", "b", "c") as n:
        a, r, b, c = n["a"], n["r"], n["b"], n["c"]
        for x, y in ((a, r), (r, b), (r, c), (a, b), (a, c)):
            pair(x, y)
        link = await connect(a, r)
        await connect(r, b)
        await connect(r, c)
        to_b = await a.relay.open(ident(b), via=ident(r))
        to_c = await a.relay.open(ident(c), via=ident(r))
        circuits = {cc.end.peer: cc for cc in a.relay.table.circuits()}  # type: ignore[union-attr]
        hop_b = next(cc.inbound for cc in a.relay.table.circuits()
                     if cc.end is not None and cc.end.remote_static == b.identity.public_key)
        assert circuits
        # reserved flag bits: the relay ends that circuit (both ends learn it) and no other
        bad = wire.encode_relay_header(hop_b.cid, 0x80 | wire.RELAY_FROM_OPENER)
        await link.send_raw((bad, b"x"))
        await wait_until(to_b.closed.is_set, "the bad circuit closed at a")
        await wait_until(lambda: not [s for s in b.connections.sessions()
                                      if s.transport == "relay"], "and at b")
        assert not to_c.closed.is_set() and not link.closed.is_set()
        await to_c.request("ping", {"t": 1})
        assert r.relay.stats()["closed_bad_frames"] == 1
        # garbage ciphertext in a well-formed frame: the relay cannot tell, the target can
        to_b = await a.relay.open(ident(b), via=ident(r))
        hop_b = next(cc.inbound for cc in a.relay.table.circuits()
                     if cc.end is not None and cc.end.remote_static == b.identity.public_key)
        junk = wire.encode_relay_header(hop_b.cid, hop_b.flags(wire.RELAY_DATA))
        await link.send_raw((junk, os.urandom(200)))
        await wait_until(to_b.closed.is_set, "the tampered circuit closed at a")
        assert not to_c.closed.is_set() and not link.closed.is_set()
        await to_c.request("ping", {"t": 1})
        await link.request("ping", {"t": 1})


async def test_unpairing_a_neighbour_ends_the_circuits_it_is_part_of() -> None:
    async with nodes("a", "r", "b") as n:
        a, r, b = n["a"], n["r"], n["b"]
        pair(a, r), pair(r, b), pair(a, b)
        await connect(a, r)
        await connect(r, b)
        s = await a.relay.open(ident(b), via=ident(r))
        r.trust.remove(ident(a).hex())
        r.relay.unpaired(ident(a))  # what UnpairService tells its listeners
        await wait_until(s.closed.is_set, "the circuit through r closed")
        with pytest.raises(RelayUntrusted):
            await a.relay.open(ident(b), via=ident(r))


async def test_cli_opens_a_relayed_session_and_shows_it(tmp_path: Path, capsys) -> None:
    from agent.control import cli

    async with nodes("a", "r", "b") as n:
        a, r, b = n["a"], n["r"], n["b"]
        pair(a, r), pair(r, b)  # b is not paired with a: reached by its full ID
        await connect(a, r)
        await connect(r, b)
        base = ["--data-dir", str(a.cfg.node.data_dir)]
        rc = await asyncio.to_thread(cli.main, [*base, "relay", b.identity.hex_id, "--via", "r"])
        out = capsys.readouterr().out
        assert rc == 0 and "relayed session to b" in out and "not paired" in out
        rc = await asyncio.to_thread(cli.main, [*base, "peers"])
        row = next(line for line in capsys.readouterr().out.splitlines() if " b " in line
                   or line.startswith("b "))
        assert "relay" in row
        rc = await asyncio.to_thread(cli.main, ["--data-dir", str(r.cfg.node.data_dir),
                                                "relay", "--json"])
        stats = json.loads(capsys.readouterr().out)
        assert rc == 0 and stats["forwarding"] == 1 and stats["forwarded_bytes"] > 0
        rc = await asyncio.to_thread(cli.main, [*base, "relay", "nobody", "--via", "r"])
        err = capsys.readouterr().err
        assert rc != 0 and "no device matches 'nobody'" in err and len(err.splitlines()) == 1


async def test_circuits_are_bounded_per_neighbour_and_idle_ones_close() -> None:
    async with nodes("a", "r", "b", "c", config={"r": {"relay": {"max_per_peer": 1}}}) as n:
        a, r, b, c = n["a"], n["r"], n["b"], n["c"]
        for x, y in ((a, r), (r, b), (r, c)):
            pair(x, y)
        await connect(a, r)
        await connect(r, b)
        await connect(r, c)
        s = await a.relay.open(ident(b), via=ident(r))
        with pytest.raises(RelayRefused, match="too many relay circuits from this device"):
            await a.relay.open(ident(c), via=ident(r))
        # no frame for idle_timeout (virtual time: the relay's clock jumps ahead)
        later = r.relay._clock() + r.cfg.relay.idle_timeout + 1
        r.relay._clock = lambda: later
        r.relay.tick()
        await wait_until(s.closed.is_set, "the idle circuit closed at a")
        await wait_until(lambda: len(b.relay.table) == 0, "and at b")
        assert len(r.relay.table) == 0
