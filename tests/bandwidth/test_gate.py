"""BandwidthGate on a real event loop. Assertions are on order and counts, never wall time."""

from __future__ import annotations

import asyncio

import pytest

from agent.bandwidth import CHUNK, DEFAULT_WEIGHTS, BandwidthGate, LinkScheduler

pytestmark = pytest.mark.timeout(30)


class SlowSink:
    """A fake link: each send takes a little while; records order and concurrency."""

    def __init__(self, delay: float = 0.002) -> None:
        self.delay = delay
        self.order: list[str] = []
        self.active = 0
        self.max_active = 0
        self.progress = asyncio.Event()

    async def send(self, tag: str) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.order.append(tag)
        self.progress.set()
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1


async def wait_for_sends(sink: SlowSink, n: int) -> None:
    while len(sink.order) < n:
        sink.progress.clear()
        await sink.progress.wait()


async def test_demand_overtakes_a_hundred_queued_prefetches() -> None:
    gate = BandwidthGate(LinkScheduler(DEFAULT_WEIGHTS))
    sink = SlowSink()

    async def transfer(cls: str, tag: str) -> None:
        async with gate.permit("peer", cls, CHUNK):
            await sink.send(tag)

    background = [asyncio.create_task(transfer("prefetch", f"p{i}")) for i in range(100)]
    await wait_for_sends(sink, 5)
    queued_at = len(sink.order)
    await transfer("demand", "demand")
    served_at = sink.order.index("demand")
    # behind at most the sends already on the link (2) and the prefetch turn in progress
    assert served_at - queued_at <= 3, sink.order[: served_at + 1]
    await asyncio.gather(*background)
    assert len(sink.order) == 101
    assert sink.max_active <= 2  # at most two sends in flight on the link
    assert gate.scheduler.in_flight("peer") == 0 and gate.scheduler.queued() == 0
    gate.close()


async def test_classes_interleave_by_weight_through_the_gate() -> None:
    gate = BandwidthGate(LinkScheduler(DEFAULT_WEIGHTS, max_inflight_per_peer=1))
    sink = SlowSink(delay=0)

    async def transfer(cls: str) -> None:
        async with gate.permit("peer", cls, CHUNK):
            await sink.send(cls)

    tasks = [asyncio.create_task(transfer(c)) for c in ["prefetch"] * 60 + ["demand"] * 160]
    await asyncio.gather(*tasks)
    # while both classes were backlogged, 16 demand sends per prefetch send
    first = sink.order[:170]
    assert first.count("prefetch") <= 12
    assert sink.order.count("prefetch") == 60


async def test_cancelled_and_failed_permits_give_their_slot_back() -> None:
    gate = BandwidthGate(LinkScheduler(DEFAULT_WEIGHTS, max_inflight_per_peer=1))
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.permit("peer", "mirror", CHUNK):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())  # queued behind the holder
    await asyncio.sleep(0)
    assert gate.scheduler.queued() == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.scheduler.queued() == 0
    release.set()
    await holder

    with pytest.raises(OSError):
        async with gate.permit("peer", "demand", CHUNK):
            raise OSError("connection reset")
    assert gate.scheduler.in_flight("peer") == 0
    async with gate.permit("peer", "demand", CHUNK):  # the slot is free again
        pass
    assert gate.scheduler.in_flight("peer") == 0


async def test_cancel_racing_the_release_does_not_leak_the_slot() -> None:
    sched = LinkScheduler(DEFAULT_WEIGHTS, max_inflight_per_peer=1)
    gate = BandwidthGate(sched)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with gate.permit("peer", "demand", 1):
            entered.set()
            await release.wait()
        # Leaving the block released t2's permit; t2 has not resumed yet (same loop step).
        assert t2_released()
        t2.cancel()

    async def second() -> None:
        async with gate.permit("peer", "demand", 1):
            pytest.fail("cancelled before it could run")

    def t2_released() -> bool:
        return sched.queued() == 0 and sched.in_flight("peer") == 1

    t1 = asyncio.create_task(first())
    await entered.wait()
    t2 = asyncio.create_task(second())
    await asyncio.sleep(0)
    assert sched.queued() == 1
    release.set()
    await t1
    with pytest.raises(asyncio.CancelledError):
        await t2
    assert sched.in_flight("peer") == 0 and sched.queued() == 0


async def test_rate_limited_gate_wakes_itself_up() -> None:
    sched = LinkScheduler(DEFAULT_WEIGHTS, global_limit=20 * CHUNK, burst=CHUNK)
    gate = BandwidthGate(sched)
    done: list[int] = []

    async def transfer(i: int) -> None:
        async with gate.permit(f"peer{i % 3}", "mirror", CHUNK):
            done.append(i)

    await asyncio.gather(*(transfer(i) for i in range(6)))
    assert sorted(done) == list(range(6))
    assert sched.released_bytes["mirror"] == 6 * CHUNK
    gate.close()


async def test_unknown_class_is_refused_before_waiting() -> None:
    gate = BandwidthGate(LinkScheduler(DEFAULT_WEIGHTS))
    with pytest.raises(ValueError, match="unknown traffic class"):
        async with gate.permit("peer", "urgent", 1):
            pass
