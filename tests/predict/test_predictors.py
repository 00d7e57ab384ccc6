"""Count-based predictors on small sequences whose right answers are known, and their bounds."""

from __future__ import annotations

import pytest

from agent.predict.base import ContextTable, Histories, Predictor, Successors, deep_size
from agent.predict.blend import Blend, Fallback
from agent.predict.lookahead import Lookahead
from agent.predict.popularity import Popularity
from agent.predict.ppm import PPM, Markov
from agent.predict.registry import PREDICTORS, make
from agent.predict.scope import PerDevice


def feed(pred: Predictor, seq: list[tuple[str, str]], t0: float = 0.0, dt: float = 1.0) -> None:
    for i, (dev, res) in enumerate(seq):
        pred.observe(dev, res, t0 + i * dt, 100)


def names(ranked: list[tuple[str, float]]) -> list[str]:
    return [r for r, _ in ranked]


def test_every_registered_predictor_satisfies_the_protocol() -> None:
    for name in PREDICTORS:
        pred = make(name)
        assert isinstance(pred, Predictor), name
        assert pred.predict("nobody", 3) == []


def test_popularity_ranks_by_decayed_count_and_excludes() -> None:
    pop = Popularity(half_life_s=10.0)
    feed(pop, [("d", "old")] * 5)  # t = 0..4
    pop.observe("d", "new", 100.0, 1)  # 10 half-lives later: 5 old requests weigh ~0.005
    pop.observe("d", "new", 101.0, 1)
    ranked = pop.predict("x", 2)
    assert names(ranked) == ["new", "old"]
    assert ranked[0][1] > 0.99
    assert names(pop.predict("x", 2, exclude={"new"})) == ["old"]
    assert pop.temperature("new") == pytest.approx(1.0 + 0.5 ** 0.1, rel=1e-6)


def test_popularity_without_decay_counts_plainly() -> None:
    pop = Popularity(half_life_s=1e12)
    feed(pop, [("d", "a"), ("d", "b"), ("d", "b"), ("d", "c"), ("d", "b"), ("d", "c")])
    ranked = pop.predict("d", 3)
    assert names(ranked) == ["b", "c", "a"]
    assert [round(s, 3) for _, s in ranked] == [0.5, 0.333, 0.167]


def test_popularity_table_is_bounded() -> None:
    pop = Popularity(max_resources=10, top=4)
    for i in range(1000):
        pop.observe("d", f"r{i}", float(i), 1)
    assert pop.state_size() <= pop.max_state()
    assert len(pop.predict("d", 10)) == 4


def test_markov_predicts_the_most_frequent_successor_mesh_wide() -> None:
    m = Markov()
    feed(m, [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "x"), ("c", "z")])
    m.observe("new", "x", 10.0, 1)  # a device never seen: the mesh taught the table
    ranked = m.predict("new", 2)
    assert names(ranked) == ["y", "z"]
    assert ranked[0][1] == pytest.approx(2 / 3)


def test_markov_context_is_per_device() -> None:
    m = Markov()
    # interleaved devices: a's transitions are x->y, b's are p->q; nothing crosses devices
    feed(m, [("a", "x"), ("b", "p"), ("a", "y"), ("b", "q")])
    m.observe("a", "x", 10.0, 1)
    assert names(m.predict("a", 5)) == ["y"]


def test_ppm2_uses_the_longer_context_to_disambiguate() -> None:
    ppm = PPM(2)
    seq = [("d", r) for r in ["a", "b", "c", "x", "b", "d"] * 3]
    feed(ppm, seq)
    ppm.observe("e", "a", 100.0, 1)
    ppm.observe("e", "b", 101.0, 1)
    assert names(ppm.predict("e", 1)) == ["c"]  # order 1 alone is a tie between c and d
    ppm.observe("f", "x", 100.0, 1)
    ppm.observe("f", "b", 101.0, 1)
    assert names(ppm.predict("f", 1)) == ["d"]


def test_ppm_falls_back_to_order_one_and_scales_by_escape() -> None:
    ppm = PPM(2)
    feed(ppm, [("d", "a"), ("d", "b"), ("d", "c")])
    ppm.observe("e", "q", 10.0, 1)  # context (q, b) never seen: order 1 answers
    ppm.observe("e", "b", 11.0, 1)
    ranked = ppm.predict("e", 3)
    assert names(ranked) == ["c"] and ranked[0][1] == 1.0
    # with two candidates at order 2 and a different one at order 1, order 2 ranks first
    ppm2 = PPM(2)
    feed(ppm2, [("d", r) for r in ["a", "b", "c", "z", "b", "y"]])
    ppm2.observe("e", "a", 20.0, 1)
    ppm2.observe("e", "b", 21.0, 1)
    ranked = ppm2.predict("e", 2)
    assert names(ranked) == ["c", "y"]
    assert ranked[1][1] == pytest.approx(0.5 * 1 / (1 + 1))  # order-1 score x escape


def test_ppm_blend_mixes_orders() -> None:
    ppm = PPM(2, "blend")
    feed(ppm, [("d", r) for r in ["a", "b", "c", "z", "b", "y", "z", "b", "y"]])
    ppm.observe("e", "a", 20.0, 1)
    ppm.observe("e", "b", 21.0, 1)
    ranked = dict(ppm.predict("e", 3))
    # order 2 (a,b): c once, 1 distinct -> weight 1/(1+1); order 1 b: c 1, y 2, 2 distinct ->
    # weight 3/(3+2) of what escaped order 2
    assert ranked["c"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.6 * (1 / 3))
    assert ranked["y"] == pytest.approx(0.5 * 0.6 * (2 / 3))


def test_ppm_does_not_learn_across_a_session_gap() -> None:
    ppm = PPM(1, session_gap_s=60.0)
    ppm.observe("d", "a", 0.0, 1)
    ppm.observe("d", "b", 1000.0, 1)  # a new session: a -> b is not a transition
    ppm.observe("e", "a", 2000.0, 1)
    assert ppm.predict("e", 3) == []


def test_lookahead_predicts_a_page_s_objects_whatever_their_order() -> None:
    la = Lookahead(window=4, order=1, min_count=1, prior=0.0)
    visits = [["page", "i1", "i2", "i3"], ["page", "i3", "i1", "i2"], ["page", "i2", "i3", "i1"]]
    for n, visit in enumerate(visits):
        for j, res in enumerate(visit):
            la.observe(f"dev{n}", res, n * 10_000.0 + j, 1)
    la.observe("fresh", "page", 99_000.0, 1)
    ranked = la.predict("fresh", 3)
    assert sorted(names(ranked)) == ["i1", "i2", "i3"]
    assert all(s == 1.0 for _, s in ranked)  # each followed every visit within the window
    # next-request PPM on the same data splits its mass three ways
    ppm = PPM(1)
    for n, visit in enumerate(visits):
        for j, res in enumerate(visit):
            ppm.observe(f"dev{n}", res, n * 10_000.0 + j, 1)
    ppm.observe("fresh", "page", 99_000.0, 1)
    assert max(s for _, s in ppm.predict("fresh", 3)) == pytest.approx(1 / 3)


def test_lookahead_credits_once_per_context_occurrence_and_respects_window() -> None:
    la = Lookahead(window=2, order=1, min_count=1, prior=0.0)
    feed(la, [("d", r) for r in ["a", "x", "x", "y", "z"]])
    succ = la.table.get("a")
    assert succ is not None and succ.seen == 1
    assert succ.as_dict() == {"x": 1.0}  # x once (not twice); y is 3 steps away, past window 2


def test_lookahead_prior_keeps_a_single_sighting_below_certainty() -> None:
    la = Lookahead(window=2, order=1, min_count=1, prior=1.0)
    feed(la, [("d", "a"), ("d", "b")])
    la.observe("e", "a", 10.0, 1)
    assert la.predict("e", 1) == [("b", 0.5)]


def test_successors_and_context_table_evict_within_bounds() -> None:
    s = Successors(cap=2)
    for r, n in (("a", 3), ("b", 1), ("c", 2)):
        for _ in range(n):
            s.add(r)
    assert set(s.as_dict()) == {"a", "c"} and s.total == 5  # b (least counted) went with its count
    table = ContextTable(max_contexts=3, max_successors=2)
    for i in range(100):
        table.add(f"ctx{i}", f"r{i % 7}")
        table.add(f"ctx{i}", f"r{(i + 1) % 7}")
        table.add(f"ctx{i}", f"r{(i + 2) % 7}")
        assert len(table) <= 3 and table.entries() <= table.max_entries()
    assert table.get("ctx0") is None and table.get("ctx99") is not None


def test_a_recurring_context_survives_a_flood_of_one_off_contexts() -> None:
    # Plain LRU would evict "home" after 8 new contexts; segmented LRU keeps it in the
    # protected segment because it occurred twice, and evicts the one-offs from probation.
    table = ContextTable(max_contexts=8, max_successors=2)
    table.add("home", "a")
    table.add("home", "b")  # second occurrence: promoted
    for i in range(1000):
        table.add(f"once{i}", "x")
    succ = table.get("home")
    assert succ is not None and succ.as_dict() == {"a": 1.0, "b": 1.0}
    assert len(table) <= 8 and table.entries() <= table.max_entries()
    # crediting an evicted context (lookahead's occurrence=False) does not recreate it
    table.add("once0", "y", occurrence=False)
    assert table.get("once0") is None


def test_histories_evict_the_least_recent_device() -> None:
    h = Histories(depth=2, max_devices=2)
    h.push("a", "1", 0.0)
    h.push("b", "1", 0.0)
    h.push("a", "2", 1.0)
    h.push("c", "1", 2.0)  # evicts b, the least recently seen
    assert [r for r, _ in h.get("a")] == ["1", "2"] and not h.get("b")
    assert h.entries() <= h.max_entries()


@pytest.mark.parametrize("name", ["markov1", "ppm2", "ppm3-blend", "lookahead", "popularity"])
def test_memory_stays_bounded_on_an_endless_stream(name: str) -> None:
    pred = make(name)
    for i in range(30_000):
        pred.observe(f"dev{i % 5000}", f"res{(i * 7919) % 50_000}", float(i), 10)
    assert pred.state_size() <= pred.max_state()


def test_small_bounds_hold_on_the_measured_bytes() -> None:
    la = Lookahead(window=4, order=2, max_contexts=50, max_successors=4, max_devices=10)
    for i in range(5000):
        la.observe(f"dev{i % 40}", f"res{(i * 31) % 977}", float(i), 10)
    one = Lookahead(window=4, order=2, max_contexts=50, max_successors=4, max_devices=10)
    one.observe("d", "r", 0.0, 1)
    assert la.memory_bytes() < 60_000  # 50 contexts x 4 successors, not 5000 requests
    assert la.context_bytes() < 15_000
    assert deep_size({"a": [1.5, 2.5]}) > deep_size({})


def test_per_device_learning_shares_nothing() -> None:
    per = PerDevice(Markov, max_devices=3)
    mesh = Markov()
    for pred in (per, mesh):
        feed(pred, [("a", "x"), ("a", "y")])
        pred.observe("b", "x", 10.0, 1)
    assert per.predict("b", 1) == []  # b never saw x -> y itself
    assert names(mesh.predict("b", 1)) == ["y"]
    for i in range(10):
        per.observe(f"d{i}", "x", float(i), 1)
    assert per.state_size() <= per.max_state()


def test_blend_and_fallback_combine_members() -> None:
    m = Markov()
    pop = Popularity(half_life_s=1e12)
    blend = Blend([(0.5, m), (0.5, pop)])
    feed(blend, [("a", "x"), ("a", "y"), ("b", "y")])
    blend.observe("c", "x", 10.0, 1)
    ranked = dict(blend.predict("c", 2))
    assert ranked["y"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 4)
    fb = Fallback([Markov(), Popularity(half_life_s=1e12)], discount=0.5)
    feed(fb, [("a", "x"), ("a", "y"), ("b", "y")])
    fb.observe("c", "new", 10.0, 1)  # no successor of "new": popularity answers, discounted
    assert fb.predict("c", 1) == [("y", pytest.approx(0.5 * 2 / 4))]


def test_predictions_are_deterministic() -> None:
    seq = [(f"d{i % 3}", f"r{(i * i) % 11}") for i in range(200)]
    outs = []
    for _ in range(2):
        pred = make("lookahead")
        feed(pred, seq)
        outs.append([pred.predict(f"d{i}", 5) for i in range(3)])
    assert outs[0] == outs[1]
