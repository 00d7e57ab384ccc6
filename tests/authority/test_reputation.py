"""Reputation formula, proximity, hysteresis and voter selection."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.authority.reputation import (
    DEFAULT_WEIGHTS,
    HolderStats,
    QualityMetrics,
    ReputationWeights,
    UsageCounter,
    choose_authority,
    choose_voters,
    decay,
    proximity_weight,
    reputation_score,
    score_components,
)

H = DEFAULT_WEIGHTS.usage_half_life_s


def test_decay_halves_every_half_life_and_ignores_clock_going_back() -> None:
    assert decay(8.0, H, H) == pytest.approx(4.0)
    assert decay(8.0, 3 * H, H) == pytest.approx(1.0)
    assert decay(8.0, -100.0, H) == 8.0


def test_usage_counter_accumulates_decayed_uses() -> None:
    u = UsageCounter().record(0.0, H)
    u = u.record(H, H)
    assert u.value_at(H, H) == pytest.approx(1.5)
    assert u.value_at(2 * H, H) == pytest.approx(0.75)
    assert u.record(0.0, H).updated_at == H  # an old timestamp does not rewind it


def test_proximity_from_rssi_and_rtt() -> None:
    assert proximity_weight(rssi_dbm=-90) == 0.0
    assert proximity_weight(rssi_dbm=-30) == 1.0
    assert proximity_weight(rssi_dbm=-60) == pytest.approx(0.5)
    assert proximity_weight(rssi_dbm=-20) == 1.0  # clamped
    assert proximity_weight(rtt_ms=0) == 1.0
    assert proximity_weight(rtt_ms=50) == pytest.approx(0.5)
    assert proximity_weight(rssi_dbm=-30, rtt_ms=150) == pytest.approx(0.25)  # the worse
    assert proximity_weight() == 0.5


def test_formula_matches_the_documented_weights() -> None:
    stats = HolderStats(
        usage=UsageCounter(10.0, 0.0),
        quality=QualityMetrics(bitrate_bps=4e6, width=1280, height=720, error_rate=0.1),
        uptime=0.8,
        load=0.25,
    )
    prox = proximity_weight(rssi_dbm=-60)
    c = score_components(stats, H, proximity=prox)
    assert c["usage"] == pytest.approx(5 / 15)
    assert c["quality"] == pytest.approx(0.4 * 0.5 + 0.3 * (921600 / 2073600) + 0.3 * 0.9)
    expected = 0.20 * (5 / 15) + 0.30 * c["quality"] + 0.25 * 0.8 + 0.15 * 0.75 + 0.10 * 0.5
    assert reputation_score(stats, H, proximity=prox) == pytest.approx(expected)
    assert expected == pytest.approx(0.610167, abs=1e-6)
    # Each integrity failure halves the score.
    bad = HolderStats(stats.usage, QualityMetrics(4e6, 1280, 720, 0.1, 2), 0.8, 0.25)
    assert reputation_score(bad, H, proximity=prox) == pytest.approx(expected / 4)


def test_custom_weights_change_the_ranking() -> None:
    near = HolderStats(uptime=0.5)
    steady = HolderStats(uptime=1.0)
    only_prox = ReputationWeights(usage=0, quality=0, uptime=0, load=0, proximity=1)
    assert reputation_score(near, 0, only_prox, proximity=0.9) > reputation_score(
        steady, 0, only_prox, proximity=0.2
    )
    assert reputation_score(near, 0, proximity=0.9) < reputation_score(steady, 0, proximity=0.2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"usage": -0.1},
        {"usage": 0, "quality": 0, "uptime": 0, "load": 0, "proximity": 0},
        {"usage_half_life_s": 0},
        {"integrity_penalty": 0},
        {"rssi_floor_dbm": -30, "rssi_ceiling_dbm": -90},
        {"load": math.nan},
        {"q_bitrate": 0, "q_resolution": 0, "q_errors": 0},
    ],
)
def test_weights_are_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ReputationWeights(**kwargs)


@given(
    st.floats(0, 1e6),
    st.floats(0, 1e9),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.floats(-1, 2),
    st.integers(0, 20),
    st.floats(-1, 2),
    st.floats(-1, 2),
    st.one_of(st.none(), st.floats(0, 1)),
)
def test_score_is_always_in_unit_interval(
    uses: float,
    bitrate: float,
    w: int,
    h: int,
    err: float,
    fails: int,
    uptime: float,
    load: float,
    prox: float | None,
) -> None:
    stats = HolderStats(
        UsageCounter(uses, 0), QualityMetrics(bitrate, w, h, err, fails), uptime, load
    )
    s = reputation_score(stats, 10.0, proximity=prox)
    assert 0.0 <= s <= 1.0


# --- hysteresis --------------------------------------------------------------------------


def test_incumbent_kept_within_margin_and_replaced_beyond_it() -> None:
    assert choose_authority("a", {"a": 0.50, "b": 0.55}) == "a"
    assert choose_authority("a", {"a": 0.50, "b": 0.575}) == "a"  # must *beat* the margin
    assert choose_authority("a", {"a": 0.50, "b": 0.60}) == "b"
    assert choose_authority("a", {"a": 0.50, "b": 0.55}, hysteresis=0.0) == "b"
    assert choose_authority("a", {"a": 0.0, "b": 0.01}) == "b"


def test_missing_or_absent_incumbent_and_ties() -> None:
    assert choose_authority(None, {"b": 0.3, "a": 0.3, "c": 0.1}) == "a"
    assert choose_authority("gone", {"b": 0.1}) == "b"
    assert choose_authority("a", {}) is None
    with pytest.raises(ValueError):
        choose_authority("a", {"a": math.nan})
    with pytest.raises(ValueError):
        choose_authority("a", {"a": 0.1}, hysteresis=-0.1)


def test_jittering_scores_do_not_flap() -> None:
    def moves(hysteresis: float) -> int:
        current, n = "a", 0
        for i in range(100):
            jitter = 0.05 if i % 2 else -0.05  # +-5% swings: ~10% apart at the extremes
            scores = {"a": 0.5 * (1 + jitter), "b": 0.5 * (1 - jitter)}
            nxt = choose_authority(current, scores, hysteresis)
            n += nxt != current
            current = nxt or current
        return n

    assert moves(0.15) == 0
    assert moves(0.0) == 100  # without hysteresis authority would move every single round


@given(
    st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 1), max_size=6),
    st.sampled_from([None, "a", "b", "z"]),
    st.floats(0, 1),
)
def test_choice_is_stable_once_made(scores: dict, current: str | None, hyst: float) -> None:
    first = choose_authority(current, scores, hyst)
    assert first is None or first in scores
    assert choose_authority(first, scores, hyst) == first


# --- voters ------------------------------------------------------------------------------


def test_choose_voters_by_uptime_with_odd_counts() -> None:
    up = {"a": 0.99, "b": 0.5, "c": 0.9, "d": 0.95, "e": 0.1, "f": 0.7, "g": 0.7}
    voters, learners = choose_voters(up)
    assert voters == ("a", "c", "d", "f", "g") and learners == ("b", "e")
    four = {k: up[k] for k in "abcd"}
    assert choose_voters(four) == (("a", "c", "d"), ("b",))
    assert choose_voters({"a": 1, "b": 0}) == (("a", "b"), ())
    assert choose_voters({"x": 0.5, "w": 0.5, "y": 0.5, "z": 0.5}) == (("w", "x", "y"), ("z",))
