"""FetchPlanner unit tests: one behaviour each, driven by hand with a virtual clock."""

from __future__ import annotations

import hashlib

import pytest

from agent.transfer import HASH_MISMATCH, TIMEOUT, FetchPlanner, Want

L = 256 * 1024


def wants(n: int, length: int = L) -> list[Want]:
    return [Want(hashlib.blake2b(bytes([i, 7]), digest_size=32).digest(), length) for i in range(n)]


def ids(reqs: list[tuple[str, Want]]) -> list[bytes]:
    return [w.chunk_id for _, w in reqs]


def test_fills_the_window_in_file_order() -> None:
    ws = wants(10)
    p = FetchPlanner(ws, initial_window=4)
    p.add_source("a", 0.0)
    reqs = p.next_requests(0.0)
    assert reqs == [("a", w) for w in ws[:4]]
    assert p.next_requests(0.0) == []  # window full: nothing more until something lands
    assert p.pending_count == 6 and p.in_flight_count == 4


def test_sources_never_share_a_chunk_outside_endgame() -> None:
    ws = wants(12)
    p = FetchPlanner(ws, initial_window=3)
    for s in "abc":
        p.add_source(s, 0.0)
    reqs = p.next_requests(0.0)
    assert len(reqs) == 9
    assert len(set(ids(reqs))) == 9
    assert sorted(ids(reqs)) == sorted(w.chunk_id for w in ws[:9])  # the first nine


def test_window_grows_per_chunk_up_to_max_window() -> None:
    ws = wants(200)
    p = FetchPlanner(ws, initial_window=1, max_window=6)
    p.add_source("a", 0.0)
    now, seen = 0.0, []
    while not p.done:
        reqs = p.next_requests(now)
        stats = p.source_stats()["a"]
        assert 1 <= stats.window <= 6 and stats.in_flight <= stats.window
        seen.append(stats.window)
        # a long, fat pipe: everything in flight lands one RTT later, back to back
        now += 0.5
        for i, (_, w) in enumerate(reqs):
            assert p.on_chunk("a", w.chunk_id, now + i * 0.001)
        now += len(reqs) * 0.001
    assert seen[0] == 1 and max(seen) == 6


def test_timeout_requeues_halves_window_and_counts_one_failure_per_round() -> None:
    ws = wants(10)
    p = FetchPlanner(ws, initial_window=4, request_timeout=10.0)
    p.add_source("a", 0.0)
    first = p.next_requests(0.0)
    assert p.tick(9.9) == []
    expired = p.tick(10.0)
    assert sorted(ids(expired)) == sorted(ids(first))
    st = p.source_stats()["a"]
    assert st.window == 2 and st.failures == 1 and st.in_flight == 0
    assert st.last_error == TIMEOUT and st.state == "active"
    # requeued chunks go out first again, in file order
    assert ids(p.next_requests(10.0)) == ids(first)[:2]


def test_timeout_rounds_drop_a_silent_source() -> None:
    p = FetchPlanner(wants(10), request_timeout=1.0, max_failures_per_source=3)
    p.add_source("a", 0.0)
    now = 0.0
    while p.failed is None:
        p.next_requests(now)
        now += 0.25
        p.tick(now)
        assert now < 10
    st = p.source_stats()["a"]
    assert st.state == "dropped" and "3 consecutive failures (last: timeout)" in st.reason


def test_consecutive_failures_drop_the_source_and_success_resets_the_count() -> None:
    ws = wants(20)
    p = FetchPlanner(ws, initial_window=8, max_failures_per_source=3)
    p.add_source("a", 0.0)
    p.add_source("b", 0.0)
    reqs = [w for s, w in p.next_requests(0.0) if s == "a"]
    p.on_failure("a", reqs[0].chunk_id, "busy", 0.1)
    p.on_failure("a", reqs[1].chunk_id, "busy", 0.1)
    assert p.on_chunk("a", reqs[2].chunk_id, 0.2)
    assert p.source_stats()["a"].consecutive_failures == 0
    p.on_failure("a", reqs[3].chunk_id, "busy", 0.3)
    p.on_failure("a", reqs[4].chunk_id, "busy", 0.3)
    assert p.source_stats()["a"].state == "active"
    p.on_failure("a", reqs[5].chunk_id, "not found", 0.3)
    st = p.source_stats()["a"]
    assert st.state == "dropped" and st.reason == "3 consecutive failures (last: not found)"
    assert st.failures == 5 and st.in_flight == 0
    # its other requests are reported for cancelling
    assert sorted(p.cancelled_requests()) == sorted(("a", w.chunk_id) for w in reqs[6:])
    assert p.failed is None  # b is still there


def test_hash_mismatch_drops_at_once_and_bans_the_source() -> None:
    ws = wants(6)
    p = FetchPlanner(ws, initial_window=2)
    p.add_source("liar", 0.0)
    p.add_source("good", 0.0)
    reqs = p.next_requests(0.0)
    bad = next(w for s, w in reqs if s == "liar")
    p.on_failure("liar", bad.chunk_id, HASH_MISMATCH, 0.1)
    st = p.source_stats()["liar"]
    assert st.state == "dropped" and "bad hash" in st.reason
    assert bad.chunk_id.hex()[:16] in st.reason
    p.add_source("liar", 0.2)  # a reconnect does not launder it
    assert p.source_stats()["liar"].state == "dropped"
    assert all(s == "good" for s, _ in p.next_requests(0.2))


def test_remove_source_returns_its_chunks_and_they_are_retried_first() -> None:
    ws = wants(8)
    p = FetchPlanner(ws, initial_window=2)
    p.add_source("a", 0.0)
    p.add_source("b", 0.0)
    reqs = p.next_requests(0.0)
    on_a = [w for s, w in reqs if s == "a"]
    lost = p.remove_source("a", "disconnected", 1.0)
    assert lost == on_a
    assert p.source_stats()["a"].reason == "disconnected"
    assert p.remove_source("a", "again", 1.0) == []
    on_b = [w for s, w in reqs if s == "b"]
    for w in on_b:
        p.on_chunk("b", w.chunk_id, 1.5)
    retry = p.next_requests(1.5)
    assert {s for s, _ in retry} == {"b"}
    assert [w.chunk_id for _, w in retry] == [w.chunk_id for w in on_a]  # file order


def test_readding_a_removed_source_revives_it() -> None:
    p = FetchPlanner(wants(4))
    p.add_source("a", 0.0)
    p.remove_source("a", "disconnected", 1.0)
    assert p.failed is not None
    p.add_source("a", 2.0)
    assert p.failed is None and p.source_stats()["a"].state == "active"
    assert len(p.next_requests(2.0)) == 4


def test_duplicate_and_unexpected_chunks_are_refused() -> None:
    ws = wants(3)
    p = FetchPlanner(ws)
    p.add_source("a", 0.0)
    p.next_requests(0.0)
    assert p.on_chunk("a", ws[0].chunk_id, 0.1)
    assert not p.on_chunk("a", ws[0].chunk_id, 0.2)  # duplicate
    assert not p.on_chunk("a", b"\x00" * 32, 0.2)  # never wanted
    assert not p.on_chunk("stranger", ws[0].chunk_id, 0.2)
    assert p.bytes_done == L and p.bytes_total == 3 * L


def test_a_late_reply_after_a_timeout_is_still_welcome() -> None:
    ws = wants(2)
    p = FetchPlanner(ws, request_timeout=1.0)
    p.add_source("a", 0.0)
    p.next_requests(0.0)
    assert len(p.tick(1.0)) == 2
    assert p.pending_count == 2
    assert p.on_chunk("a", ws[1].chunk_id, 1.1)
    assert p.pending_count == 1
    assert ids(p.next_requests(1.1)) == [ws[0].chunk_id]


def test_endgame_duplicates_a_straggler_on_an_idle_faster_source() -> None:
    ws = wants(3)
    p = FetchPlanner(ws, initial_window=2, max_window=2)
    p.add_source("fast", 0.0)
    p.add_source("slow", 0.0)
    first = dict((w.chunk_id, s) for s, w in p.next_requests(0.0))
    assert len(first) == 3  # 2 on one source, 1 on the other: queue now empty
    slow_chunk = next(c for c, s in first.items() if s == "slow")
    # fast delivers its chunks quickly; slow stays quiet far longer than its pace predicts
    t = 0.0
    for c, s in first.items():
        if s == "fast":
            t += 0.05
            assert p.on_chunk("fast", c, t)
    dup = p.next_requests(5.0)
    assert dup == [("fast", next(w for w in ws if w.chunk_id == slow_chunk))]
    assert p.pending_count == 0  # endgame only once nothing is left to hand out
    assert p.on_chunk("fast", slow_chunk, 5.1)  # first arrival wins
    assert p.cancelled_requests() == [("slow", slow_chunk)]
    assert p.done
    assert not p.on_chunk("slow", slow_chunk, 6.0)  # the loser's reply is a duplicate
    assert p.source_stats()["slow"].in_flight == 0


def test_no_endgame_when_disabled() -> None:
    ws = wants(3)
    p = FetchPlanner(ws, initial_window=2, max_window=2, endgame=False)
    p.add_source("fast", 0.0)
    p.add_source("slow", 0.0)
    first = [(s, w) for s, w in p.next_requests(0.0)]
    for s, w in first:
        if s == "fast":
            p.on_chunk("fast", w.chunk_id, 0.05)
    assert p.next_requests(5.0) == []


def test_a_chunk_one_source_failed_goes_to_another() -> None:
    ws = wants(4)
    p = FetchPlanner(ws, initial_window=1)
    p.add_source("a", 0.0)
    p.add_source("b", 0.0)
    reqs = dict(p.next_requests(0.0))
    p.on_failure("a", reqs["a"].chunk_id, "not found", 0.1)
    p.on_chunk("b", reqs["b"].chunk_id, 0.1)
    again = p.next_requests(0.1)
    assert ("b", reqs["a"]) in again  # b takes the failed chunk
    assert ("a", reqs["a"]) not in again


def test_the_only_source_retries_a_chunk_it_failed() -> None:
    ws = wants(1)
    p = FetchPlanner(ws, max_failures_per_source=2)
    p.add_source("a", 0.0)
    p.next_requests(0.0)
    p.on_failure("a", ws[0].chunk_id, "busy", 0.1)
    assert p.next_requests(0.1) == [("a", ws[0])]
    p.on_failure("a", ws[0].chunk_id, "busy", 0.2)
    assert p.failed is not None and "a: 2 consecutive failures (last: busy)" in p.failed


def test_failed_names_every_source_and_what_went_wrong() -> None:
    ws = wants(4)
    p = FetchPlanner(ws, initial_window=1)
    assert p.failed is None  # no source yet is not a failure: the caller is still adding
    for s in ("aa11", "bb22", "cc33"):
        p.add_source(s, 0.0)
    reqs = dict(p.next_requests(0.0))
    p.on_chunk("cc33", reqs["cc33"].chunk_id, 0.1)
    p.on_failure("aa11", reqs["aa11"].chunk_id, HASH_MISMATCH, 0.1)
    p.remove_source("bb22", "disconnected", 0.2)
    p.remove_source("cc33", "session closed", 0.3)
    msg = p.failed
    assert msg is not None
    assert msg.startswith(f"3 of 4 chunks ({3 * L} bytes) still missing")
    assert "aa11: sent chunk" in msg and "bad hash" in msg
    assert "bb22: disconnected" in msg and "cc33: session closed" in msg


def test_done_fetch_is_never_failed() -> None:
    ws = wants(1)
    p = FetchPlanner(ws)
    p.add_source("a", 0.0)
    p.next_requests(0.0)
    p.on_chunk("a", ws[0].chunk_id, 0.1)
    p.remove_source("a", "bye", 0.2)
    assert p.done and p.failed is None and p.next_requests(0.3) == []


def test_repeated_chunks_are_fetched_once() -> None:
    w = wants(2)
    p = FetchPlanner([w[0], w[1], w[0]])
    assert p.bytes_total == 2 * L and p.pending_count == 2
    assert FetchPlanner([]).done


def test_next_deadline_follows_the_oldest_request() -> None:
    p = FetchPlanner(wants(4), request_timeout=10.0, initial_window=1)
    p.add_source("a", 0.0)
    assert p.next_deadline() is None
    p.next_requests(2.0)
    assert p.next_deadline() == 12.0


def test_stats_report_link_estimates() -> None:
    ws = wants(20)
    p = FetchPlanner(ws, initial_window=4)
    p.add_source("a", 0.0)
    now = 0.0
    while not p.done:
        reqs = p.next_requests(now)
        for _, w in reqs:
            now += L / 1e6  # 1 MB/s, served back to back
            p.on_chunk("a", w.chunk_id, now + 0.01)
    st = p.source_stats()["a"]
    assert st.completed == 20 and st.bytes == 20 * L and st.failures == 0
    assert st.throughput == pytest.approx(1e6, rel=0.2)
    assert st.rtt is not None and st.min_rtt is not None and st.min_rtt <= st.rtt


@pytest.mark.parametrize(
    "kw",
    [
        {"max_window": 0},
        {"initial_window": 0},
        {"request_timeout": 0},
        {"max_failures_per_source": 0},
    ],
)
def test_rejects_nonsense_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FetchPlanner(wants(1), **kw)  # type: ignore[arg-type]


def test_a_chunk_a_source_does_not_hold_is_never_asked_of_it_again() -> None:
    """'Not in my store' is an honest answer: no failure counted, the source keeps serving
    the rest, and the chunk goes to a source that has not said so."""
    ws = wants(4)
    p = FetchPlanner(ws, initial_window=1, max_failures_per_source=1)
    p.add_source("a", 0.0)
    first = p.next_requests(0.0)
    assert first == [("a", ws[0])]
    p.on_not_held("a", ws[0].chunk_id, "quarantined there", 0.1)
    assert p.source_stats()["a"].state == "active"
    assert p.source_stats()["a"].failures == 0
    nxt = p.next_requests(0.1)
    assert nxt == [("a", ws[1])]  # it skips the one it lacks
    assert p.lacks_needed("a")
    p.add_source("b", 0.1)
    assert ("b", ws[0]) in p.next_requests(0.1)


def test_failed_at_once_when_no_active_source_holds_a_missing_chunk() -> None:
    ws = wants(3)
    p = FetchPlanner(ws, initial_window=4)
    for s in "ab":
        p.add_source(s, 0.0)
    p.next_requests(0.0)
    p.on_not_held("a", ws[1].chunk_id, "not held", 0.1)
    assert p.failed is None  # b may still have it
    p.on_not_held("b", ws[1].chunk_id, "not held", 0.2)
    assert p.failed is not None and "held by none of the sources" in p.failed
    assert all(w != ws[1] for _, w in p.next_requests(0.2))  # never asked again
    p.on_chunk("a", ws[0].chunk_id, 0.3)
    p.on_chunk("b", ws[2].chunk_id, 0.3)
    assert p.failed is not None and not p.done
