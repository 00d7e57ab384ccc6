"""Model lifecycle decisions (docs/prediction-lifecycle.md) with known values."""

from __future__ import annotations

import math

import pytest

from agent.usage.aggregate import MeshCounts
from agent.usage.lifecycle import (
    ModelOffer,
    TrainerCandidate,
    choose_model,
    choose_trainer,
    drift,
    should_retrain,
)


def cand(dev: str, headroom: float, power: str = "mains", battery: float = 1.0,
         budget: float = 100.0) -> TrainerCandidate:
    return TrainerCandidate(dev, headroom, power, battery, budget)


def test_the_trainer_has_the_most_headroom_times_budget_on_mains() -> None:
    cs = [cand("a", 0.5), cand("b", 0.9, power="battery"), cand("c", 0.6),
          cand("d", 0.9, power="charging", battery=0.3), cand("e", 0.95, budget=0)]
    assert choose_trainer(cs, None) == "c"  # b on battery, d low, e no budget
    assert choose_trainer([cand("x", 0.5, power="charging", battery=0.6)], None) == "x"
    assert choose_trainer([cand("a", 0.5, power="battery")], None) is None
    assert choose_trainer([cand("b", 0.5), cand("a", 0.5)], None) == "a"  # tie: lowest ID


def test_the_incumbent_keeps_the_role_unless_clearly_beaten() -> None:
    cs = [cand("a", 0.50), cand("b", 0.55)]
    assert choose_trainer(cs, "a") == "a"  # 10 % better is within the 15 % hysteresis
    assert choose_trainer([cand("a", 0.5), cand("b", 0.6)], "a") == "b"  # 20 % better
    assert choose_trainer([cand("a", 0.5, power="battery"), cand("b", 0.1)], "a") == "b"


def test_drift_known_values() -> None:
    a = MeshCounts({("x",): (("y", 1),)})
    assert drift(a, a) == 0.0
    assert drift(a, MeshCounts({("x",): (("z", 1),)})) == 1.0  # disjoint next resources
    half = MeshCounts({("x",): (("y", 1), ("z", 1))})
    # JS({y:1}, {y:.5, z:.5}) = 1/2·log2(1/.75) + 1/4·log2(.5/.75) + 1/4·log2(.5/.25)
    expected = 0.5 * math.log2(4 / 3) + 0.25 * math.log2(2 / 3) + 0.25
    assert drift(a, half) == pytest.approx(expected)
    assert drift(MeshCounts({}), MeshCounts({})) == 0.0
    # a new context counts as fully changed, weighted by its counts: x weighs 1 + 1 (same
    # distribution), q 0 + 2 (new) -> 2 / 4
    grown = MeshCounts({("x",): (("y", 1),), ("q",): (("r", 2),)})
    assert drift(a, grown) == 0.5


def test_retraining_rules() -> None:
    kw = {"budget_left_s": 100.0, "estimated_cost_s": 30.0}
    assert should_retrain(drift_bits=0.0, since_last_s=None, **kw) == (True, "no model yet")
    assert not should_retrain(drift_bits=0.5, since_last_s=3600, **kw)[0]  # too soon
    assert should_retrain(drift_bits=0.5, since_last_s=7 * 3600, **kw)[0]
    assert not should_retrain(drift_bits=0.05, since_last_s=7 * 3600, **kw)[0]
    assert should_retrain(drift_bits=0.05, since_last_s=86400, **kw)[0]  # old
    assert should_retrain(drift_bits=1.0, since_last_s=None, budget_left_s=10,
                          estimated_cost_s=30) == (False, "over today's training budget")


def test_the_model_used_is_the_elected_trainers_newest_else_the_newest() -> None:
    offers = [ModelOffer(3, "bb", True), ModelOffer(5, "cc", True), ModelOffer(9, "ee", False)]
    assert choose_model(offers, "bb") == offers[0]  # the trainer's, though older
    assert choose_model(offers, "zz") == offers[1]  # trainer has none: newest trusted
    assert choose_model([ModelOffer(9, "ee", False)], "ee") is None  # untrusted: counts
    assert choose_model([ModelOffer(2, "b", True), ModelOffer(2, "a", True)], None
                        ) == ModelOffer(2, "a", True)
