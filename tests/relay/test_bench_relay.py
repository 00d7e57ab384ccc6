"""bench/relay.py runs end to end on a tiny payload (its figures are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench_loader import load_bench


def test_relay_bench_measures_direct_and_relayed(tmp_path: Path) -> None:
    bench = load_bench("relay")
    out = tmp_path / "r.json"
    assert bench.main(["--mib", "1", "--runs", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"0", "1", "2"}
    assert all(r["mb_s"] > 0 for r in res.values())
    assert res["2"]["overhead"] > 0  # frames and inner records cost something
