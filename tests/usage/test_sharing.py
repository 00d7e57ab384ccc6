"""Sharing between real in-process peers: aggregates reach paired devices only, over the
encrypted sessions; unpaired sessions, hostile aggregates and `share = false` are refused."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest
from peer_helpers import Peer, make_peer, ordered_identities, wait_until

from agent.config import PredictConfig, UsageConfig
from agent.errors import ErrorKind
from agent.peer.connection import RemoteError
from agent.usage.aggregate import to_wire
from agent.usage.record import SEGMENT_MAGIC
from agent.usage.requester import hash_requester
from agent.usage.service import UsageService

pytestmark = pytest.mark.timeout(60)

USAGE = UsageConfig(flush_interval=0.05)
FAST = PredictConfig(share_interval=0.2, share_jitter=0.5, share_k=2)
R = [os.urandom(16).hex() for _ in range(4)]


def with_usage(peer: Peer, predict: PredictConfig = FAST) -> UsageService:
    svc = UsageService(peer.data_dir / "usage", USAGE, predict, connections=peer.conns,
                       trust=peer.trust)
    peer.router.add_requests(svc.handlers())
    return svc


def trust_each_other(x: Peer, y: Peer) -> None:
    for a, b in ((x, y), (y, x)):
        a.trust.add(b.identity.device_id, b.identity.public_key, b.name,
                    signing_key=b.identity.signing_public)


def browse(svc: UsageService, requesters: int = 3) -> None:
    """Several requesters walk the same path R0 -> R1 -> R2 (a shared habit)."""
    for i in range(requesters):
        for r in R[:3]:
            svc.record_access(bytes([i]) * 32, r, 1000, hit=True, source="local")


@pytest.fixture
async def mesh(tmp_path: Path):
    ia, ib, ic = ordered_identities(3)
    a, b, c = (make_peer(tmp_path, n, identity=i)
               for n, i in (("alpha", ia), ("bravo", ib), ("charlie", ic)))
    trust_each_other(a, b)  # charlie is paired with nobody
    services = [with_usage(p) for p in (a, b, c)]
    for p in (a, b, c):
        await p.conns.start()
    yield (a, b, c), services
    for s in services:
        s.close()
    for p in (a, b, c):
        await p.stop()


async def test_aggregates_reach_the_paired_peer_only(mesh) -> None:
    (a, b, c), (ua, ub, uc) = mesh
    await a.conns.connect(b.address)
    to_a_from_c = await c.conns.connect(a.address)
    await wait_until(lambda: len(a.conns.live_connections()) == 2, "alpha sees both")
    browse(ua)
    a.spawner(ua.run(), "usage")  # the periodic, jittered loop
    got = await wait_until(lambda: ub.received.get(a.hex), "bravo receives alpha's aggregate")
    assert (R[0], R[1], R[2]) in got.grams and got.k == 2
    assert uc.received == {} and uc.counters["received"] == 0
    # charlie pushing its own aggregate to alpha is refused: it is not paired
    with pytest.raises(RemoteError) as e:
        await to_a_from_c.request("usage", {"a": to_wire(ua.aggregate())})
    assert e.value.remote_kind is ErrorKind.UNTRUSTED
    assert c.hex not in ua.received and ua.counters["refused"] == 1
    # charlie's own loop sends nothing: it trusts no one
    assert await uc.share_once() == {}
    # what bravo holds feeds its mesh view
    assert ub.mesh_temperature(R[0]) > 0 and ub.mesh_counts().predict((R[0], R[1]), 1)[0][0] \
        == R[2]
    assert ub.budget(R[0]).bytes > ub.budget(R[3]).bytes


async def test_share_false_sends_nothing_and_refuses_everything(tmp_path: Path) -> None:
    ia, ib = ordered_identities(2)
    a, b = make_peer(tmp_path, "alpha", identity=ia), make_peer(tmp_path, "bravo", identity=ib)
    trust_each_other(a, b)
    off = dataclasses.replace(FAST, share=False)
    ua, ub = with_usage(a), with_usage(b, off)
    await a.conns.start()
    await b.conns.start()
    try:
        conn = await a.conns.connect(b.address)
        browse(ua)
        browse(ub)
        assert await ub.share_once() == {}  # bravo shares nothing
        result = await ua.share_once()
        assert "off on this device" in result["bravo"] and ub.received == {}
        with pytest.raises(RemoteError) as e:
            await conn.request("usage", {"a": to_wire(ua.aggregate())})
        assert e.value.remote_kind is ErrorKind.REFUSED
    finally:
        ua.close()
        ub.close()
        await a.stop()
        await b.stop()


async def test_a_hostile_aggregate_is_rejected_and_the_session_survives(mesh) -> None:
    (a, b, _), (ua, _ub, _) = mesh
    conn = await b.conns.connect(a.address)
    bad = {"v": 1, "t": 0, "k": 1, "e": 0, "r": ["a" * 32], "g": [[1, 5]], "h": []}
    with pytest.raises(RemoteError) as e:
        await conn.request("usage", {"a": bad})
    assert e.value.remote_kind is ErrorKind.INVALID and ua.counters["rejected"] == 1
    assert b.hex not in ua.received
    assert await conn.ping() >= 0  # still talking


# ----------------------------------------------------------------------- recording
class _NoConns:
    def live_connection(self, prefix: str) -> None:
        return None

    def live_connections(self) -> list[object]:
        return []

    async def connect(self, address: tuple[str, int], expect: str | None = None) -> object:
        raise AssertionError("not used")


class _NoTrust:
    def is_trusted(self, device_id: bytes) -> bool:
        return False

    def get(self, device_id: bytes) -> None:
        return None

    def recognise(self, device_id: bytes, public_key: bytes, signing_key: bytes | None) -> bool:
        return False


def _service(path: Path, clock: list[float], **usage: float) -> UsageService:
    cfg = dataclasses.replace(USAGE, **usage)  # type: ignore[arg-type]
    return UsageService(path, cfg, FAST, connections=_NoConns(), trust=_NoTrust(),  # type: ignore[arg-type]
                        clock=lambda: clock[0])


def test_requesters_are_logged_as_keyed_hashes_that_rotate(tmp_path: Path) -> None:
    clock = [1_700_000_000.0]
    svc = _service(tmp_path / "u", clock, key_rotation=3600.0, max_age=7200.0)
    device = b"d" * 32
    svc.record_access(device, R[0], 5, hit=False, source="0123456789abcdef")
    svc.record_access(device, R[1], 5, hit=True, source="local")
    svc.tick()
    key_file = tmp_path / "u" / "requester.key"
    assert key_file.stat().st_mode & 0o077 == 0
    first, second = list(svc.log.records())
    assert first.requester == second.requester != device[:16]
    assert first.requester == hash_requester(key_file.read_bytes()[8:], device)
    assert device not in b"".join(p.read_bytes() for p in (tmp_path / "u" / "log").iterdir())
    clock[0] += 3600.0  # the epoch ends: a new key, the old one is gone
    svc.tick()
    svc.record_access(device, R[2], 5, hit=True, source="local")
    svc.tick()
    third = list(svc.log.records())[-1]
    assert third.epoch == first.epoch + 1 and third.requester != first.requester
    svc.close()


def test_bad_arguments_are_counted_not_raised(tmp_path: Path) -> None:
    svc = _service(tmp_path / "u", [1_700_000_000.0])
    svc.record_access(b"x", "not hex", 1, hit=True, source="local")
    svc.record_access(b"x", R[0], 1, hit=True, source="somewhere")
    assert svc.counters["invalid"] == 2 and svc.log.buffered == 0
    svc.close()


async def test_temperature_is_warmed_from_the_log_of_an_earlier_run(tmp_path: Path) -> None:
    clock = [1_700_000_000.0]
    svc = _service(tmp_path / "u", clock, half_life=100.0)
    svc.record_access(b"x", R[0], 1, hit=True, source="local")
    svc.close()
    clock[0] += 100.0
    again = _service(tmp_path / "u", clock, half_life=100.0)
    assert again.temperature.value(R[0], clock[0]) == 0.0
    await again._warm_temperature()
    assert again.temperature.value(R[0], clock[0]) == pytest.approx(0.5)
    again.close()


def test_a_damaged_log_is_skipped_with_one_counted_warning(tmp_path: Path, caplog) -> None:
    d = tmp_path / "u" / "log"
    d.mkdir(parents=True)
    (d / "seg-000000000001.log").write_bytes(SEGMENT_MAGIC + os.urandom(67 * 3) + b"\x1b[2J")
    with caplog.at_level(logging.WARNING, logger="shoal.usage"):
        svc = _service(tmp_path / "u", [1_700_000_000.0])
    assert "access log damage skipped" in caplog.text and "corrupt_records=3" in caplog.text
    svc.record_access(b"x", R[0], 1, hit=True, source="local")
    svc.tick()
    assert len(list(svc.log.records())) == 1
    svc.close()


def test_dp_release_is_drawn_once_per_period_and_survives_a_restart(tmp_path: Path) -> None:
    clock = [1_700_000_000.0]
    dp = dataclasses.replace(FAST, share_k=1, share_epsilon=1.0, share_max_grams=1)

    def make() -> UsageService:
        cfg = dataclasses.replace(USAGE, key_rotation=3600.0, max_age=7200.0)
        return UsageService(tmp_path / "u", cfg, dp, connections=_NoConns(),  # type: ignore[arg-type]
                            trust=_NoTrust(), clock=lambda: clock[0])  # type: ignore[arg-type]

    svc = make()
    for i in range(40):
        svc.record_access(bytes([i]) * 32, R[0], 1, hit=True, source="local")
    svc.tick()
    clock[0] += 3600.0  # the period is complete
    svc.tick()
    first = svc.aggregate()
    assert (R[0],) in first.grams and first.epsilon == 1.0
    assert svc.aggregate() is first
    svc.close()
    again = make()
    assert again.aggregate() == first  # not drawn again (that would spend the budget twice)
    again.close()


def test_an_idle_device_does_not_rebuild_its_aggregate(tmp_path: Path) -> None:
    clock = [1_700_000_000.0]
    svc = _service(tmp_path / "u", clock)
    for i in range(3):
        svc.record_access(bytes([i]) * 32, R[0], 1, hit=True, source="local")
    svc.tick()
    first = svc.aggregate()
    assert svc.aggregate() is first  # nothing new: the cached one
    svc.record_access(b"x" * 32, R[1], 1, hit=True, source="local")
    second = svc.aggregate()
    assert second is not first and (R[0],) in second.grams
    svc.close()


class _TrustAll(_NoTrust):
    def is_trusted(self, device_id: bytes) -> bool:
        return True


async def test_what_peers_send_is_bounded_in_total(tmp_path: Path) -> None:
    from agent.peer import wire
    from agent.usage.aggregate import MAX_GRAMS, Aggregate
    from agent.usage.service import MAX_PEERS, MAX_RECEIVED_GRAMS

    svc = UsageService(tmp_path / "u", USAGE, FAST, connections=_NoConns(),  # type: ignore[arg-type]
                       trust=_TrustAll())  # type: ignore[arg-type]
    big = to_wire(Aggregate(0.0, 2, 0.0, {(f"{i:032x}",): 3 for i in range(MAX_GRAMS)}))

    class Conn:
        def __init__(self, i: int) -> None:
            self.peer_id, self.name = bytes([i]) * 32, f"p{i}"

    for i in range(MAX_PEERS + 4):
        await svc.handlers()["usage"](Conn(i), wire.Request(i, "usage", {"a": big}))  # type: ignore[arg-type]
        assert sum(len(a.grams) for a in svc.received.values()) <= MAX_RECEIVED_GRAMS
        assert len(svc.received) <= MAX_PEERS
    assert (bytes([MAX_PEERS + 3]) * 32).hex() in svc.received  # the newest is kept
    assert (bytes([0]) * 32).hex() not in svc.received  # the stalest went first
    svc.close()


def test_an_unusable_directory_means_no_access_log_not_no_agent(tmp_path: Path,
                                                                caplog) -> None:
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "log").write_text("a file where the log directory should be")
    with caplog.at_level(logging.WARNING, logger="shoal.usage"):
        svc = UsageService.open(tmp_path / "u", USAGE, FAST, connections=_NoConns(),  # type: ignore[arg-type]
                                trust=_NoTrust())  # type: ignore[arg-type]
    assert svc is None and "access log unavailable" in caplog.text


def test_listeners_hear_each_access_and_a_failing_one_fails_nothing(tmp_path: Path) -> None:
    clock = [1_700_000_000.0]
    svc = _service(tmp_path / "u", clock)
    heard: list[tuple[bytes, str, int, float]] = []

    def broken(*_: object) -> None:
        raise RuntimeError("listener bug")

    svc.on_access(broken)
    svc.on_access(lambda *a: heard.append(a))
    svc.record_access(b"d" * 32, R[0], 5, hit=False, source="local")
    svc.record_access(b"d" * 32, "not hex", 5, hit=False, source="local")  # invalid: unheard
    assert heard == [(b"d" * 32, R[0], 5, clock[0])]
    assert svc.counters["listener_failed"] == 1 and svc.counters["invalid"] == 1
