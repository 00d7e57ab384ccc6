"""bench/mesh_replay.py: the slice/mapping rule and the accounting (pure, run anywhere), and a
tiny live replay (3 agents in namespaces, 20 requests; skipped without root)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from bench_loader import load_bench

from agent.predict.traces import Request


@pytest.fixture(scope="module")
def mr() -> ModuleType:
    return load_bench("mesh_replay")


def _trace() -> list[Request]:
    """Two busy clients and one quiet one; repeats, so some requests must be local hits."""
    reqs = []
    t = 1.4e9
    pattern = [("a", "/p1"), ("b", "/p1"), ("a", "/i1"), ("a", "/p1"), ("b", "/i2"),
               ("c", "/p1"), ("a", "/i1"), ("b", "/p1"), ("b", "/i1"), ("a", "/p2")]
    for k in range(20):
        client, res = pattern[k % len(pattern)]
        t += 30.0 if k != 10 else 7200.0  # one idle gap of two hours
        reqs.append(Request(t, client, res if k < 10 else res + "x", 1000 + 10 * k))
    return reqs


def test_mapping_rule_and_schedule(mr: ModuleType) -> None:
    reqs = _trace()
    sl = mr.select(reqs, offset=0, window=20, devices=2, max_requests=100, speed=100.0,
                   max_gap=0.5, cap=1024, others="drop")
    assert sl.mapping == {"a": "h2", "b": "h3"}  # busiest first; ties by first appearance
    assert sl.dropped == 2 and len(sl.items) == 18
    gaps = [y.at - x.at for x, y in zip(sl.items, sl.items[1:], strict=False)]
    assert all(0 <= g <= 0.5 for g in gaps)  # 30 s -> 0.3 s; the 2 h gap is capped
    assert max(sl.sizes.values()) <= 1024 and min(sl.sizes.values()) >= 1
    spread = mr.select(reqs, offset=0, window=20, devices=2, max_requests=100, speed=100.0,
                       max_gap=0.5, cap=1024, others="spread")
    assert spread.mapping["c"] == "h2" and spread.dropped == 0 and len(spread.items) == 20


def test_resource_names_are_store_valid(mr: ModuleType) -> None:
    from agent.store.manifest import validate_name

    for res in ("/a/b.png", "/" + "é" * 300, "/..", "/x\u202ey", "/", "/a/b.png?x=1"):
        assert validate_name(mr.resource_name(res))
    assert mr.resource_name("/a/b") != mr.resource_name("/a_b")


def test_accounting_counts_and_wasted_bytes(mr: ModuleType) -> None:
    out = mr.Outcome
    outs = [out(0, "h2", "/p1", 0.0, 0.05, "origin", sources={"h1": 100}),
            out(1, "h3", "/p1", 0.1, 0.04, "peer", sources={"h2": 100}),
            out(2, "h2", "/p1", 0.2, 0.01, "local"),
            out(3, "h3", "/x", 0.3, None, "error", "RuntimeError: timeout")]
    held = {"h1": {"/p1": 100, "/x": 50}, "h2": {"/p1": 100, "/q": 70},
            "h3": {"/p1": 100, "/r": 30}}
    m = mr.account(outs, {"/p1": 100, "/x": 50, "/q": 70, "/r": 30}, held, {"h1": {"/p1", "/x"}})
    assert (m["requests"], m["hits"], m["misses"], m["errors"]) == (4, 1, 2, 1)
    assert m["accounted"] and m["hit_ratio"] == 0.25
    # /q on h2 and /r on h3 were held but never asked for there nor served from there
    assert m["wasted_bytes"] == 100 and m["wasted_items"] == 2
    assert mr.classify({"already_held": True}) == ("local", {})
    assert mr.classify({"sources": {"h1": {"bytes": 5}, "h2": {"bytes": 9}}})[0] == "peer"
    assert mr.classify({"sources": {"h1": {"bytes": 9}, "h2": {"bytes": 9}}})[0] == "origin"
    mirrored = {"sources": {"h1": {"bytes": 1}, "h3": {"bytes": 9}},
                "why": "mirror h3 first, then authority h1 (term 2, epoch 1)"}
    assert mr.classify(mirrored) == ("mirror", {"h1": 1, "h3": 9})


def test_agent_config_merges_into_a_given_prefetch_section(mr: ModuleType) -> None:
    """--agent-config with its own [prefetch] section: the mode's key goes into it (a second
    [prefetch] header made the agent refuse its config file)."""
    import tomllib

    given = "[transfer]\nmax_sources = 2\n[prefetch]  # faster planning\ninterval = 1.0\n"
    out = mr.with_prefetch_keys(given, {"enabled": True, "interval": 5.0, "mirror_dwell": 5.0})
    assert tomllib.loads(out) == {"transfer": {"max_sources": 2},
                                  "prefetch": {"enabled": True, "interval": 1.0,
                                               "mirror_dwell": 5.0}}
    assert tomllib.loads(mr.with_prefetch_keys("[lan]\nmdns = true", {"enabled": False})) == {
        "lan": {"mdns": True}, "prefetch": {"enabled": False}}
    assert mr.with_prefetch_keys(given, {}) == given


@pytest.mark.netns
@pytest.mark.slow
def test_tiny_live_replay_accounts_every_request(mr: ModuleType, lan_factory, tmp_path: Path
                                                 ) -> None:
    lan = lan_factory(3)
    sl = mr.select(_trace(), offset=0, window=20, devices=2, max_requests=20, speed=100.0,
                   max_gap=0.2, cap=64 * 1024, others="spread")
    assert len(sl.items) == 20
    cls, _ = mr.agent_classes()
    ids, _secs = mr.build_template(lan, tmp_path / "template", cls, 3, sl, "", lambda m: None)
    assert set(ids) == set(sl.sizes)
    r = mr.one_run(lan, tmp_path / "run", cls, 3, sl, ids, "off", "", tmp_path / "template")
    assert r["requests"] == 20 and r["errors"] == 0, r["error_examples"]
    assert r["accounted"] and r["hits"] + r["misses"] == 20
    # prefetch off, no eviction: a request is local exactly when its device asked before,
    # which is what the offline harness's LRU-only replay counts on the same requests
    off = mr.offline(sl, cache=None, depth=2, threshold=0.1)
    assert r["hits"] == round(off["lru_only"]["hit_ratio"] * 20)
    assert r["wasted_bytes"] == 0
    # cross-check: the fetch service logs every miss with its peer as the source
    logged = sum(log.get("peer", 0) + log.get("mirror", 0) for log in r["access_log"].values())
    assert logged == r["misses"]
