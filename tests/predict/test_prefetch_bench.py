"""bench/prefetch.py: the cache replay's arithmetic on hand-made traces, and --quick end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from array import array
from pathlib import Path
from types import ModuleType

import pytest
from bench_loader import load_bench

from agent.predict.traces import Request

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("prefetch")


def trace_of(bench: ModuleType, seq: list[tuple[str, str, int]], split: float) -> object:
    reqs = [Request(float(i), d, r, s) for i, (d, r, s) in enumerate(seq)]
    return bench.intern(reqs, split)


def record(bench: ModuleType, trace: object, per_event: list[list[tuple[str, float]]]) -> object:
    names = {n: i for i, n in enumerate(trace.names)}  # type: ignore[attr-defined]
    rec = bench.Record("hand", array("q", [0]), array("i"), array("f"))
    for ranked in per_event:
        for name, score in ranked:
            rec.ids.append(names[name])
            rec.scores.append(score)
        rec.offsets.append(len(rec.ids))
    return rec


def test_replay_counts_hits_precision_and_waste(bench: ModuleType) -> None:
    # test part: d asks a, b, c, a (split 0 = everything is test). After a the predictor
    # offers b (used next) and x (never used, 50 bytes wasted); after b it offers c (used).
    seq = [("d", "a", 100), ("d", "b", 200), ("d", "c", 300), ("d", "a", 100), ("e", "x", 50)]
    tr = trace_of(bench, seq, 0.0)
    rec = record(bench, tr, [[("b", 0.9), ("x", 0.4)], [("c", 0.8)], [], [], []])
    m = bench.simulate(tr, rec, 10, 2, 0.0)
    assert m["requests"] == 5
    assert m["hit_ratio"] == pytest.approx(3 / 5)  # b, c prefetched; a cached the 2nd time
    assert m["byte_hit_ratio"] == pytest.approx(600 / 750)
    assert m["prefetched"] == 3 and m["precision"] == pytest.approx(2 / 3)
    assert m["wasted_pct"] == pytest.approx(100 * 50 / 750)
    # threshold 0.5 drops x: no waste; depth 1 likewise
    assert bench.simulate(tr, rec, 10, 2, 0.5)["wasted_pct"] == 0.0
    assert bench.simulate(tr, rec, 10, 1, 0.0)["prefetched"] == 2
    # a cache of one object: the prefetched b evicts a; a's second request misses
    assert bench.simulate(tr, None, 1, 1, 0.0)["hit_ratio"] == 0.0


def test_a_predicted_name_absent_from_the_trace_counts_as_waste(bench: ModuleType) -> None:
    # after /t1 the predictor names /t2 (asked next) and /t9 (never asked: a phantom, -1)
    seq = [("d", "/t1", 100), ("d", "/t2", 100)]
    tr = trace_of(bench, seq, 0.0)
    rec = bench.Record("hand", array("q", [0, 2, 2]), array("i", [1, -1]),
                       array("f", [0.9, 0.8]))
    m = bench.simulate(tr, rec, 10, 2, 0.0)
    assert m["prefetched"] == 2 and m["precision"] == 0.5
    assert m["wasted_pct"] == pytest.approx(100 * 100 / 200)  # sized like the request before


def test_caches_start_empty_at_the_test_part(bench: ModuleType) -> None:
    seq = [("d", "a", 1), ("d", "a", 1), ("d", "a", 1), ("d", "a", 1)]
    tr = trace_of(bench, seq, 0.5)
    m = bench.simulate(tr, None, 10, 1, 0.0)
    assert m["requests"] == 2 and m["hit_ratio"] == 0.5  # the first test request is cold


def test_oracle_prefetches_exactly_the_next_requests(bench: ModuleType) -> None:
    seq = [("d", r, 10) for r in "abcabd"]
    tr = trace_of(bench, seq, 0.0)
    rec = bench.oracle_record(tr, 1)
    m = bench.simulate(tr, rec, 10, 1, 0.0)
    assert m["hit_ratio"] == pytest.approx(5 / 6) and m["precision"] == 1.0
    assert m["wasted_pct"] == 0.0


def test_pareto_and_best_at(bench: ModuleType) -> None:
    pts = [{"wasted_pct": w, "hit_ratio": h, "precision": p, "prefetched": 1}
           for w, h, p in ((1, 0.3, 0.9), (2, 0.25, 0.9), (5, 0.5, 0.5), (9, 0.45, 0.7))]
    assert [p["hit_ratio"] for p in bench.pareto(pts)] == [0.3, 0.5]
    assert bench.best_at(pts, 10.0, 0.55)["hit_ratio"] == 0.45
    assert bench.best_at(pts, 0.5) is None


def test_gains_compare_at_no_more_waste_than_ppm2(bench: ModuleType) -> None:
    def pt(h: float, w: float, p: float, d: int = 1, t: float = 0.0) -> dict[str, float]:
        return {"hit_ratio": h, "wasted_pct": w, "precision": p, "prefetched": 1, "depth": d,
                "threshold": t}

    ref_curve = [pt(0.40, 12.0, 0.4), pt(0.30, 5.0, 0.6, 2, 0.3)]
    out = {"predictors": {
        "ppm2": {"top1": ref_curve[0], "curve": ref_curve},
        # 0.50 wastes more than either PPM-2 point: only 0.36 (5 %) and 0.45 (11 %) count
        "x": {"top1": pt(0.5, 30.0, 0.3), "curve": [pt(0.5, 30.0, 0.3), pt(0.36, 5.0, 0.7),
                                                     pt(0.45, 11.0, 0.5)]},
    }}
    g = bench.gains(out)
    assert g["top1"]["predictors"]["x"]["gain"] == pytest.approx(0.45 / 0.40 - 1)
    assert g["target"]["anchor"]["hit_ratio"] == 0.30
    assert g["target"]["predictors"]["x"]["gain"] == pytest.approx(0.36 / 0.30 - 1)


def test_quick_run_end_to_end_on_a_generated_trace(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    png = tmp_path / "curve.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "prefetch.py"), "--quick", "--json", str(out),
         "--png", str(png)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    preds = data["predictors"]
    assert {"popularity", "markov1", "ppm2", "gru", "oracle"} <= set(preds)
    lru = data["lru_only"]["hit_ratio"]
    oracle = preds["oracle"]["top1"]["hit_ratio"]
    for name, p in preds.items():
        assert lru <= p["top1"]["hit_ratio"] + 1e-9 <= oracle + 1e-9 or name == "popularity"
    assert preds["gru"]["fit_cpu_s"] > 0 and preds["gru"]["stored_bytes"] <= 1 << 20
    assert data["scope"] and data["cold_devices"] >= 0
    if png.exists():  # matplotlib is the bench extra; without it the run says so
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_trace_and_bad_arguments(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    lines = ["time,client,resource,size"]
    for i in range(400):
        lines.append(f"{i},dev{i % 7},/r{(i * 3) % 11},{100 + i % 5}")
    lines.append("garbage line")
    csv.write_text("\n".join(lines) + "\n")
    run = [sys.executable, str(ROOT / "bench" / "prefetch.py")]
    ok = subprocess.run([*run, "--trace", str(csv), "--format", "csv", "--quick",
                         "--predictors", "markov1,ppm2", "--compare", "ppm2"],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "1 bad lines skipped" in ok.stdout
    bad = subprocess.run([*run, "--predictors", "nope", "--quick"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown predictor")
    missing = subprocess.run([*run, "--trace", str(tmp_path / "none.log")],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_top1_baselines_equal_the_unbounded_reference_replay(bench: ModuleType) -> None:
    """The harness's markov1/ppm2 top-1 figures are the traces README's: unbounded tables
    (this trace has more distinct transitions than the agent's 20,000-context bound), the
    top-1 candidate only and nothing when it is cached (not the next uncached one)."""
    import random

    rng = random.Random(3)
    tiles = 22_000
    reqs: list[Request] = []
    t = 0.0
    for client in ("a", "b", "c"):
        for i in range(tiles):
            t += 1.0
            reqs.append(Request(t, client, f"/tile{i}", 100))
            if rng.random() < 0.1:  # detours: a re-read, or one of a few shared pages
                t += 1.0
                name = f"/tile{rng.randrange(max(1, i - 5), i + 1)}" if rng.random() < 0.5 \
                    else f"/page{rng.randrange(8)}"
                reqs.append(Request(t, client, name, 100))
    ref = load_bench("prefetch_reference")
    trace = bench.intern(reqs)
    out = bench.run(trace, ["markov1", "ppm2"], cache_sizes=[10], depths=[1], cache=10,
                    depth=1, thresholds=(0.0,), compare=[], log=lambda m: None)
    for name, order in (("markov1", 1), ("ppm2", 2)):
        expected = ref.replay(reqs, order, 10)
        assert expected > 0.8  # the scan is learnt, bound or not
        assert out["predictors"][name]["top1"]["hit_ratio"] == pytest.approx(expected, abs=1e-12)
