"""The shared aggregate: strict schema (hostile input rejected whole) and the bounded merge."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from agent.usage.aggregate import (
    MAX_GRAMS,
    Aggregate,
    AggregateError,
    cap_grams,
    merge,
    parse_aggregate,
    to_wire,
)

A, B, C, D = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)


def sample() -> Aggregate:
    return Aggregate(1000.0, 3, 0.0, {(A,): 5, (A, B): 4, (A, B, C): 3, (A, C): 2},
                     {A: 2.5})


def test_round_trip_through_json() -> None:
    agg = sample()
    wire = json.loads(json.dumps(to_wire(agg)))
    assert wire["r"] == [A, B, C]
    assert parse_aggregate(wire) == agg


def _bad(mutate: Any) -> dict[str, Any]:
    w = copy.deepcopy(to_wire(sample()))
    mutate(w)
    return w


@pytest.mark.parametrize("mutate", [
    lambda w: w.pop("h"),
    lambda w: w.update(x=1),
    lambda w: w.update(v=2),
    lambda w: w.update(v=True),
    lambda w: w.update(t=float("nan")),
    lambda w: w.update(t=-1),
    lambda w: w.update(k=0),
    lambda w: w.update(k=2.5),
    lambda w: w.update(e=1e9),
    lambda w: w.update(r="abc"),
    lambda w: w["r"].append("A" * 32),  # upper case
    lambda w: w["r"].append("a" * 31),
    lambda w: w["r"].append(w["r"][0]),  # duplicate resource
    lambda w: w["g"].append([1]),  # no index
    lambda w: w["g"].append([1, 0, 1, 2, 0]),  # a 4-gram
    lambda w: w["g"].append([0, 1]),  # count 0
    lambda w: w["g"].append([True, 1]),
    lambda w: w["g"].append([1.5, 1]),
    lambda w: w["g"].append([1, 99]),  # index out of range
    lambda w: w["g"].append([1, -1]),
    lambda w: w["g"].append(w["g"][0]),  # duplicate n-gram
    lambda w: w["g"].append({"c": 1}),
    lambda w: w.update(g=[[1, 0]] * (MAX_GRAMS + 1)),
    lambda w: w["h"].append([0, 1.0]),  # second heat for one resource
    lambda w: w["h"].append([1, -1.0]),
    lambda w: w["h"].append([1, float("inf")]),
    lambda w: w["h"].append([1]),
])
def test_hostile_aggregates_are_rejected(mutate: Any) -> None:
    with pytest.raises(AggregateError):
        parse_aggregate(_bad(mutate))


@pytest.mark.parametrize("obj", [None, [], "x", 1, {"v": 1}])
def test_non_objects_are_rejected(obj: object) -> None:
    with pytest.raises(AggregateError):
        parse_aggregate(obj)


def test_cap_keeps_top_n_per_context_and_a_total() -> None:
    grams = {(A, B): 5, (A, C): 4, (A, D): 3, (B, C): 9, (C,): 1}
    assert cap_grams(grams, top_n=2, max_grams=10) == {(A, B): 5, (A, C): 4, (B, C): 9,
                                                       (C,): 1}
    assert cap_grams(grams, top_n=2, max_grams=2) == {(B, C): 9, (A, B): 5}


def test_merge_sums_is_order_free_and_bounded() -> None:
    one = Aggregate(0.0, 3, 0.0, {(A, B): 3, (A, C): 2, (B, C): 1})
    two = Aggregate(0.0, 3, 0.0, {(A, C): 2, (A, D): 1, (C,): 7})
    m = merge([one, two], top_n=2, max_contexts=10)
    assert m.next[(A,)] == ((C, 4), (B, 3))  # D cut by top_n
    assert m == merge([two, one], top_n=2, max_contexts=10)
    assert list(merge([one, two], top_n=2, max_contexts=1).next) == [(A,)]  # most counts
    assert m.predict((D, A), 1) == [(C, 4 / 7)]  # backs off to the known suffix
    assert m.predict((D,), 1) == [(C, 1.0)]  # unknown context: the 1-gram popularity
    assert merge([], top_n=2, max_contexts=2).predict((A,), 3) == []


def test_cap_keeps_more_popular_resources_than_next_choices() -> None:
    grams = {(f"{i:032x}",): 100 - i for i in range(20)}
    assert len(cap_grams(grams, top_n=2, max_grams=100, top_popular=10)) == 10


def test_what_a_sender_caps_a_receiver_always_accepts() -> None:
    """Distinct trigrams reference three resources each: the sender must stay under the
    receiver's resource cap, or the whole aggregate would be rejected."""
    grams = {(f"{3 * i:032x}", f"{3 * i + 1:032x}", f"{3 * i + 2:032x}"): 5
             for i in range(MAX_GRAMS)}
    capped = cap_grams(grams, top_n=8, max_grams=MAX_GRAMS)
    assert len({r for g in capped for r in g}) <= 4096
    parse_aggregate(json.loads(json.dumps(to_wire(Aggregate(0.0, 3, 0.0, capped)))))
