"""The recurrent predictor: training with autograd and numpy inference on a tiny trace (seconds),
the stored format's strictness, and the size budget."""

from __future__ import annotations

import json
import struct
from functools import partial

import numpy as np
import pytest

from agent.predict.gru import MAGIC, MAX_MODEL_BYTES, GRUModel, GRUPredictor, ModelError
from agent.predict.traces import Request
from agent.predict.train import build_vocab, sessions, targets, train_gru, windows

pytest.importorskip("autograd", reason="the [train] extra (autograd) is part of the test extra")


def cyclic_trace(devices: int = 6, rounds: int = 12) -> list[Request]:
    """Each device walks a -> b -> c -> d -> a ...; after x the next is always known, except
    that after d two devices go to e instead of a (the GRU must rank a first)."""
    out = []
    t = 0.0
    for n in range(rounds):
        for dev in range(devices):
            walk = ["a", "b", "c", "d", "e" if dev < 2 else "a"]
            for res in walk:
                t += 1.0
                out.append(Request(t, f"dev{dev}", res, 10))
        t += 10_000.0  # a session gap between rounds
        del n
    return out


@pytest.fixture(scope="module")
def model() -> GRUModel:
    return train_gru(cyclic_trace(), vocab=16, dim=8, hidden=16, window=6, epochs=60,
                     batch=16, lr=0.03, seed=3)


def test_training_learns_the_walk_and_inference_predicts_it(model: GRUModel) -> None:
    pred = GRUPredictor(model)
    for expected_after, res in (("b", "a"), ("c", "b"), ("d", "c"), ("a", "d")):
        pred.observe("x", res, 100.0, 1)
        ranked = pred.predict("x", 2)
        assert ranked[0][0] == expected_after, (res, ranked)
    assert 0.0 < ranked[0][1] <= 1.0
    assert [r for r, _ in pred.predict("x", 2)][1] == "e"  # the minority branch second
    assert pred.predict("x", 2, exclude={"a"})[0][0] == "e"


def test_training_is_deterministic_and_bounded(model: GRUModel) -> None:
    again = train_gru(cyclic_trace(), vocab=16, dim=8, hidden=16, window=6, epochs=60,
                      batch=16, lr=0.03, seed=3)
    assert np.array_equal(again.out, model.out) and again.vocab == model.vocab
    assert model.nbytes() <= MAX_MODEL_BYTES


def test_fit_through_the_predictor_and_session_reset() -> None:
    pred = GRUPredictor(trainer=partial(train_gru, vocab=16, dim=8, hidden=16, epochs=40,
                                        batch=16, lr=0.03, session_gap_s=100.0))
    assert pred.predict("x", 1) == []  # no model yet
    with pytest.raises(ModelError):
        GRUPredictor().fit(cyclic_trace())  # no trainer: refuses rather than guesses
    pred.fit(cyclic_trace())
    pred.observe("x", "a", 0.0, 1)
    h1 = pred._state["x"][0].copy()
    pred.observe("x", "a", 1000.0, 1)  # after the gap the state restarts: same as fresh
    assert np.allclose(pred._state["x"][0], h1)
    assert pred.memory_bytes() > 0 and pred.context_bytes() > 0


def test_device_states_are_bounded(model: GRUModel) -> None:
    pred = GRUPredictor(model, max_devices=5)
    for i in range(50):
        pred.observe(f"d{i}", "a", float(i), 1)
    assert len(pred._state) == 5


def test_round_trip_through_bytes_is_float16_exact(model: GRUModel) -> None:
    data = model.to_bytes()
    back = GRUModel.from_bytes(data)
    assert back.vocab == model.vocab
    assert np.allclose(back.out, model.out, atol=1e-2)
    assert back.to_bytes() == data
    assert len(data) <= MAX_MODEL_BYTES


def _with_header(model: GRUModel, **changes: object) -> bytes:
    data = model.to_bytes()
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    header = json.loads(data[start:start + n])
    header.update(changes)
    head = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + data[start + n:]


def test_hostile_model_bytes_are_refused(model: GRUModel) -> None:
    good = model.to_bytes()
    bad = [
        b"nonsense",
        good[:-1],  # truncated body
        good + b"\0\0",  # trailing bytes
        MAGIC + struct.pack("<I", 10**9),  # header length beyond the data
        _with_header(model, h=10_000),  # dimensions out of bounds
        _with_header(model, vocab=["a"] * (len(model.vocab))),  # repeated names
        _with_header(model, vocab=5),
        MAGIC + struct.pack("<I", 3) + b"{x}",
    ]
    nan = bytearray(good)
    nan[-2:] = np.array([np.nan], dtype="<f2").tobytes()
    bad.append(bytes(nan))
    for data in bad:
        with pytest.raises(ModelError):
            GRUModel.from_bytes(data)


def test_a_model_over_the_budget_is_refused() -> None:
    v, d, h = 9000, 64, 16  # 9000 x 64 x 2 bytes of embeddings alone is over 1 MiB
    z = np.zeros
    with pytest.raises(ModelError, match="budget"):
        GRUModel([f"r{i}" for i in range(v - 1)], z((v, d), np.float32),
                 z((d, 3 * h), np.float32), z((h, 3 * h), np.float32), z(3 * h, np.float32),
                 z((h, v), np.float32), z(v, np.float32))


def test_training_data_preparation() -> None:
    reqs = [Request(float(i), "d", r, 1) for i, r in enumerate("abcab")]
    reqs.append(Request(10_000.0, "d", "z", 1))  # alone in its session: dropped
    vocab = build_vocab(reqs, 2)
    assert vocab == ["a", "b"]  # c and z are rarer; ties broken by name
    index = {n: i + 1 for i, n in enumerate(vocab)}
    seqs = sessions(reqs, index, 100.0)
    assert seqs == [[1, 2, 0, 1, 2]]
    pieces = windows(seqs, 3)
    assert pieces == [[1, 2, 0, 1], [1, 2]]
    X, rows, Y = targets(pieces, 3, 3, horizon=2)
    # piece 1 (a b ? a): after a -> {b} (the unknown token is never a target), after b ->
    # {a}, after ? -> {a}; piece 2 (a b): after a -> {b}. Rows are b * T + t.
    assert X.tolist() == [[1, 2, 0], [1, 0, 0]]
    assert rows.tolist() == [0, 1, 2, 3]
    assert Y.tolist() == [[0, 0, 1], [0, 1, 0], [0, 1, 0], [0, 0, 1]]
    _, _, Y2 = targets([[1, 2, 1]], 2, 3, horizon=2)
    assert Y2[0].tolist() == [0, 0.5, 0.5]  # two distinct upcoming requests share the mass
