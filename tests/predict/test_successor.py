"""agent/predict/successor.py: the compact first-order table (scans, by-name successors,
the budget, determinism)."""

from __future__ import annotations

import pytest

from agent.predict.successor import SLOT_BYTES, Successor


def test_a_scan_seen_once_is_predicted_for_another_device() -> None:
    p = Successor(1 << 16)
    for i in range(100):
        p.observe("a", f"/d/N{60 + i // 10:02d}W{i % 10:03d}.nc", float(i), 1)
    p.observe("b", "/d/N60W009.nc", 200.0, 1)  # end of a row: the next row, a by-name successor
    assert [r for r, _ in p.predict("b", 3)] == ["/d/N61W000.nc"]
    p.observe("b", "/d/N61W000.nc", 201.0, 1)
    ranked = p.predict("b", 3)
    assert [r for r, _ in ranked] == ["/d/N61W001.nc"]
    assert 0.0 < ranked[0][1] <= 1.0
    assert p.predict("b", 3, exclude={"/d/N61W001.nc"}) == []
    assert p.predict("nobody", 3) == []


def test_the_majority_successor_is_kept_and_a_device_record_scales_the_score() -> None:
    p = Successor(1 << 16)
    seq = ["x", "y", "x", "y", "x", "z", "x", "y"]
    for i, r in enumerate(seq):
        p.observe("a", r, float(i), 1)
    p.observe("a", "x", 10.0, 1)
    (name, score_right), = p.predict("a", 1)
    assert name == "y"  # y won the vote; z took one away without replacing it
    q = Successor(1 << 16)
    for i, r in enumerate(seq):
        q.observe("a", r, float(i), 1)
    for i in range(10):  # a device whose next request is never the table's guess
        q.observe("b", "x", 20.0 + 2 * i, 1)
        q.observe("b", f"w{i}", 21.0 + 2 * i, 1)
    q.observe("b", "x", 50.0, 1)
    (_, score_wrong), = q.predict("b", 1)
    assert score_wrong < score_right


def test_memory_is_bounded_by_the_budget_and_the_result_is_deterministic() -> None:
    budget = 4096
    runs = []
    for _ in range(2):
        p = Successor(budget, max_named=8, max_devices=4)
        for i in range(5000):
            p.observe(f"d{i % 7}", f"/r{(i * 7919) % 3001}/q", float(i), 1)
        assert len(p.keys) * SLOT_BYTES <= budget
        assert len(p.named) <= 8 and len(p._last) <= 4
        assert p.state_size() <= p.max_state()
        runs.append([p.predict(f"d{d}", 2) for d in range(7)])
    assert runs[0] == runs[1]
    with pytest.raises(ValueError):
        Successor(10)


def test_the_gate_answers_scanners_and_not_devices_the_table_gets_wrong() -> None:
    p = Successor(1 << 16, gate=0.6)
    for i in range(20):  # a scan, learnt by device a
        p.observe("a", f"/t{i}", float(i), 1)
    for i in range(10):  # device s repeats it: its record opens the gate
        p.observe("s", f"/t{i}", 100.0 + i, 1)
    assert [r for r, _ in p.predict("s", 1)] == ["/t10"]
    for i in range(10):  # device w jumps around: the table's guesses are wrong for it
        p.observe("w", f"/t{(i * 7) % 19}", 200.0 + i, 1)
    assert p.predict("w", 1) == []
    assert Successor(1 << 16).predict("w", 1) == []  # w unknown to a fresh table


def test_short_edits_fit_a_slot_and_long_ones_go_by_name_in_a_bounded_ring() -> None:
    p = Successor(1 << 16, max_named=4)
    pairs = [("/d/MOD13.h10v05.hdf", "/d/MYD13.h10v05.hdf"),   # one character: in the slot
             ("/d/A_N62E032_dem.nc", "/d/A_N70E020_dem.nc"),   # two numbers: by name
             ("/d/x", "/elsewhere/entirely/y.txt")]             # no relation: by name
    for i, (a, b) in enumerate(pairs * 2):
        p.observe(f"a{i}", a, float(2 * i), 1)  # one device per pair: no other transitions
        p.observe(f"a{i}", b, float(2 * i + 1), 1)
    assert sum(1 for blob in p.named if blob) == 2  # the edit needed no ring entry
    for a, b in pairs:
        p.observe("b", a, 100.0, 1)
        assert [r for r, _ in p.predict("b", 1)] == [b]
    for i in range(8):  # eight more by-name successors push the old ones out of the ring
        p.observe("c", f"/other/{i}/start", 200.0 + 2 * i, 1)
        p.observe("c", f"/far/away/{i}/end.bin", 201.0 + 2 * i, 1)
    p.observe("b", "/d/x", 300.0, 1)
    assert p.predict("b", 1) == []  # its ring entry was overwritten: no wrong name comes back
    assert len(p.named) == 4


def test_skip_stride_keeps_slots_for_what_a_stride_would_get_wrong() -> None:
    plain, skip = Successor(1 << 16), Successor(1 << 16, skip_stride=True)
    for p in (plain, skip):
        for i in range(200):  # rows of 20: steps a stride predicts, and row ends it does not
            p.observe("a", f"/t/r{i // 20:02d}c{i % 20:02d}", float(i), 1)
    used = [sum(1 for c in p.counts if c) for p in (plain, skip)]
    assert used[1] < used[0] // 4
    skip.observe("b", "/t/r03c19", 500.0, 1)  # a row end: learnt, as stride misses it
    assert [r for r, _ in skip.predict("b", 1)] == ["/t/r04c00"]
