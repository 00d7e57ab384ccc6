"""Training the GRU predictor with autograd (the ``[train]`` extra): deterministic, bounded.

Why autograd: it is a maintained automatic-differentiation library for plain numpy code
(HIPS/autograd, MIT), a 54 KB pure-Python wheel whose only dependency is numpy, so it installs
on a Raspberry Pi (aarch64) from PyPI in seconds and the trained weights are ordinary numpy
arrays that :mod:`agent.predict.gru` runs without it. docs/dependencies.md weighs it against
jax/jaxlib and torch.

What it learns: per device, requests are cut into sessions (``session_gap_s`` of silence ends
one) and sessions into windows of ``window`` steps; the GRU reads a window token by token and,
at each step, is trained to put probability on the next request (``horizon=1``) or spread over
the distinct requests of the next ``horizon`` steps (what a prefetch cache rewards). Only the
``vocab`` most requested resources get a token; the others read as token 0 and are never
targets. Bounded work: at most ``max_windows`` windows (the most recent), ``epochs`` passes.
Same requests and seed, same weights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as onp

from agent.predict.gru import GRUModel
from agent.predict.traces import Request


def build_vocab(requests: Sequence[Request], size: int) -> list[str]:
    """The *size* most requested resources (ties by name: deterministic)."""
    counts = Counter(r.resource for r in requests)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [name for name, _ in ranked[:size]]


def sessions(requests: Sequence[Request], index: dict[str, int],
             gap_s: float) -> list[list[int]]:
    """Token sequences per device session, in order of each session's start."""
    open_: dict[str, tuple[list[int], float]] = {}
    out: list[list[int]] = []
    for r in requests:
        cur = open_.get(r.client)
        if cur is None or r.t - cur[1] > gap_s:
            seq: list[int] = []
            out.append(seq)
        else:
            seq = cur[0]
        seq.append(index.get(r.resource, 0))
        open_[r.client] = (seq, r.t)
    return [s for s in out if len(s) >= 2]


def windows(seqs: list[list[int]], window: int) -> list[list[int]]:
    """Cut sequences into pieces of ``window + 1`` tokens overlapping by one."""
    out = []
    for s in seqs:
        for i in range(0, len(s) - 1, window):
            piece = s[i:i + window + 1]
            if len(piece) >= 2:
                out.append(piece)
    return out


def targets(batch: list[list[int]], window: int, vocab: int,
            horizon: int) -> tuple[onp.ndarray, onp.ndarray, onp.ndarray]:
    """Inputs X (B x T tokens), the flat positions (b * T + t) that have a target, and their
    target distributions Y (positions x V): only those rows reach the output layer."""
    B = len(batch)
    T = max(len(p) for p in batch) - 1
    X = onp.zeros((B, T), dtype=onp.int64)
    rows: list[int] = []
    dists: list[set[int]] = []
    for b, piece in enumerate(batch):
        n = len(piece) - 1
        X[b, :n] = piece[:n]
        for t in range(n):
            ahead = {tok for tok in piece[t + 1:t + 1 + horizon] if tok != 0}
            if ahead:
                rows.append(b * T + t)
                dists.append(ahead)
    Y = onp.zeros((len(rows), vocab), dtype=onp.float32)
    for i, ahead in enumerate(dists):
        for tok in ahead:
            Y[i, tok] = 1.0 / len(ahead)
    return X, onp.asarray(rows, dtype=onp.int64), Y


def _init(vocab: int, dim: int, hidden: int, rng: onp.random.Generator) -> dict[str, Any]:
    def glorot(a: int, b: int) -> onp.ndarray:
        return rng.normal(0.0, (2.0 / (a + b)) ** 0.5, size=(a, b))

    return {
        "emb": rng.normal(0.0, 0.1, size=(vocab, dim)).astype(onp.float32),
        "wx": glorot(dim, 3 * hidden).astype(onp.float32),
        "wh": glorot(hidden, 3 * hidden).astype(onp.float32),
        "b": onp.zeros(3 * hidden, dtype=onp.float32),
        "out": glorot(hidden, vocab).astype(onp.float32),
        "bout": onp.zeros(vocab, dtype=onp.float32),
    }


def train_gru(requests: Sequence[Request], *, vocab: int = 1024, dim: int = 32,
              hidden: int = 64, window: int = 8, horizon: int = 1, epochs: int = 12,
              batch: int = 128, lr: float = 0.01, l2: float = 1e-6,
              session_gap_s: float = 1800.0, max_windows: int = 20_000,
              seed: int = 1) -> GRUModel:
    """Fit a :class:`GRUModel` on *requests* (time order). Raises ``ImportError`` without
    the ``[train]`` extra."""
    import autograd.numpy as anp  # type: ignore[import-untyped]  # autograd ships no types
    from autograd import grad

    names = build_vocab(requests, vocab - 1)
    index = {n: i + 1 for i, n in enumerate(names)}
    V = len(names) + 1
    pieces = windows(sessions(requests, index, session_gap_s), window)[-max_windows:]
    rng = onp.random.default_rng(seed)
    params = _init(V, dim, hidden, rng)
    H = hidden

    def sigmoid(x: Any) -> Any:
        return 0.5 * (1.0 + anp.tanh(0.5 * x))

    def loss(p: dict[str, Any], X: onp.ndarray, rows: onp.ndarray, Y: onp.ndarray) -> Any:
        B, T = X.shape
        E = p["emb"][X]
        h = anp.zeros((B, H), dtype=onp.float32)
        hs = []
        for t in range(T):
            gx = anp.dot(E[:, t, :], p["wx"]) + p["b"]
            gh = anp.dot(h, p["wh"])
            z = sigmoid(gx[:, :H] + gh[:, :H])
            r = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
            c = anp.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
            h = (1.0 - z) * h + z * c
            hs.append(h)
        hsel = anp.reshape(anp.stack(hs, axis=1), (B * T, H))[rows]
        logits = anp.dot(hsel, p["out"]) + p["bout"]
        m = anp.max(logits, axis=1, keepdims=True)
        logp = logits - (m + anp.log(anp.sum(anp.exp(logits - m), axis=1, keepdims=True)))
        nll = -anp.sum(Y * logp) / len(rows)
        reg = l2 * (anp.sum(p["wx"] ** 2) + anp.sum(p["wh"] ** 2) + anp.sum(p["out"] ** 2))
        return nll + reg

    gradient = grad(loss)
    mom = {k: onp.zeros_like(v) for k, v in params.items()}
    vel = {k: onp.zeros_like(v) for k, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    step = 0
    for _ in range(epochs if pieces else 0):
        order = rng.permutation(len(pieces))
        for start in range(0, len(order), batch):
            chunk = [pieces[i] for i in order[start:start + batch]]
            X, rows, Y = targets(chunk, window, V, horizon)
            if not len(rows):
                continue
            g = gradient(params, X, rows, Y)
            step += 1
            for k in params:
                gk = onp.clip(g[k], -5.0, 5.0)
                mom[k] = b1 * mom[k] + (1 - b1) * gk
                vel[k] = b2 * vel[k] + (1 - b2) * gk * gk
                mhat = mom[k] / (1 - b1 ** step)
                vhat = vel[k] / (1 - b2 ** step)
                params[k] = (params[k] - lr * mhat / (onp.sqrt(vhat) + eps)).astype(onp.float32)
    f32 = {k: onp.asarray(v, dtype=onp.float32) for k, v in params.items()}
    return GRUModel(names, f32["emb"], f32["wx"], f32["wh"], f32["b"], f32["out"],
                    f32["bout"], session_gap_s, horizon)
