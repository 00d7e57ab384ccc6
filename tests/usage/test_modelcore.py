"""The model lifecycle's pure core: power and headroom, the budget ledger, the advert schema,
the training input and the model-vs-fallback judgement (known values)."""

from __future__ import annotations

import pytest

from agent.predict.registry import make
from agent.usage.aggregate import MeshCounts
from agent.usage.lifecycle import choose_trainer
from agent.usage.modelcore import (
    DAY,
    Advert,
    AdvertError,
    TrainLedger,
    cpu_headroom,
    hit_ratio,
    is_reserved,
    judge,
    model_name,
    parse_advert,
    power_state,
    sequences_from_counts,
)

A, B, C = "a" * 32, "b" * 32, "c" * 32


def test_model_names_are_reserved_and_valid_store_names() -> None:
    from agent.store.manifest import validate_name

    assert model_name("gru") == ".shoal.model.gru"
    assert validate_name(model_name("gru")) == ".shoal.model.gru"
    assert is_reserved(model_name("gru")) and not is_reserved("shoal.model.gru")
    with pytest.raises(ValueError):
        model_name("../etc")


def test_power_state_from_sysfs_values() -> None:
    assert power_state({})[:2] == ("mains", 1.0)
    assert "assumed mains" in power_state({})[2]
    ac = {"AC": {"type": "Mains", "online": "1"},
          "BAT0": {"type": "Battery", "status": "Charging", "capacity": "40"}}
    assert power_state(ac)[:2] == ("mains", 0.4)
    unplugged = {"AC": {"type": "Mains", "online": "0"},
                 "BAT0": {"type": "Battery", "status": "Discharging", "capacity": "80"}}
    assert power_state(unplugged)[:2] == ("battery", 0.8)
    charging = {"BAT0": {"type": "Battery", "status": "Charging", "capacity": "70"}}
    assert power_state(charging)[:2] == ("charging", 0.7)
    bad = {"BAT0": {"type": "Battery", "status": "Discharging", "capacity": "lots"}}
    assert power_state(bad)[:2] == ("battery", 0.0)


def test_headroom() -> None:
    assert cpu_headroom(0.0, 4) == 1.0
    assert cpu_headroom(2.0, 4) == 0.5
    assert cpu_headroom(9.0, 2) == 0.0
    assert cpu_headroom(float("nan"), 2) == 0.0


def test_adverts_elect_one_trainer() -> None:
    mains = Advert(0.5, "mains", 1.0, 120.0, None)
    idle = Advert(0.9, "mains", 1.0, 120.0, None)
    battery = Advert(1.0, "battery", 0.9, 120.0, None)
    no_budget = Advert(1.0, "mains", 1.0, 0.0, None)
    cands = [mains.candidate(A), idle.candidate(B), battery.candidate(C)]
    assert choose_trainer(cands, None) == B
    assert choose_trainer([battery.candidate(C), no_budget.candidate(A)], None) is None


def test_ledger_rolls_over_a_day_and_parses_strictly() -> None:
    led = TrainLedger([])
    led.charge(1000.0, 30.0)
    led.charge(2000.0, 50.0)
    assert led.spent(2000.0) == 80.0 and led.left(2000.0, 120.0) == 40.0
    assert led.left(2000.0, 60.0) == 0.0
    assert led.spent(1000.0 + DAY + 1) == 50.0  # the first run aged out
    assert TrainLedger.from_obj(led.to_obj()).runs == led.runs
    for bad in ({"a": 1}, [[1.0]], [[1.0, -2.0]], [[1.0, float("nan")]], [[True, 1.0]],
                [[0.0, 1.0]] * 1000):
        with pytest.raises(ValueError):
            TrainLedger.from_obj(bad)


def test_advert_schema_is_strict() -> None:
    good = Advert(0.5, "charging", 0.6, 120.0, (A, 3, B)).to_obj()
    assert parse_advert(good) == Advert(0.5, "charging", 0.6, 120.0, (A, 3, B))
    assert parse_advert(good | {"model": None}).model is None
    bad_values = [
        {"headroom": 2.0}, {"headroom": True}, {"power": "solar"}, {"battery": -0.1},
        {"budget_s": 1e9}, {"model": [A, 0, B]}, {"model": [A, 1]}, {"model": ["x" * 32, 1, B]},
        {"model": [A, 1, "B" * 32]}, {"model": [A, True, B]}, {"model": "a"},
    ]
    for change in bad_values:
        with pytest.raises(AdvertError):
            parse_advert(good | change)
    with pytest.raises(AdvertError):
        parse_advert(good | {"extra": 1})
    with pytest.raises(AdvertError):
        parse_advert([good])


def test_training_sequences_come_from_released_counts_only_and_are_bounded() -> None:
    counts = MeshCounts({(): ((A, 9),), (A,): ((B, 5), (C, 1)), (A, B): ((C, 100),)})
    seqs = sequences_from_counts(counts, max_repeat=4)
    assert seqs.count([A, B, C]) == 4 and seqs.count([A, B]) == 4 and seqs.count([A, C]) == 1
    assert all(len(s) >= 2 for s in seqs)  # the unigram context teaches no transition
    assert len(sequences_from_counts(counts, max_seqs=3)) == 3


def test_online_hit_ratio_and_judgement() -> None:
    rows = [("self", r, float(i), 1) for i, r in enumerate([A, B, C] * 20)]
    hits, n = hit_ratio(make("ppm2"), rows, k=1)
    assert n == 60 and hits >= 54  # the cycle is learned after a turn or two
    assert judge((10, 100), (50, 100)) == (False, judge((10, 100), (50, 100))[1])
    assert "worse than the fallback" in judge((10, 100), (50, 100))[1]
    assert judge((50, 100), (50, 100))[0]
    ok, why = judge((0, 5), (5, 5))
    assert ok and "too few" in why
