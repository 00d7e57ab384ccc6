"""A GRU over resource embeddings: inference in plain numpy, a bounded and signed-ready format.

Why a recurrent model: the design documents ask for one, and unlike a count table it can
carry a device's whole session in a fixed-size state (``hidden`` floats per device) and
generalise across similar sequences. Why numpy only here: inference runs on every device
(a Raspberry Pi), where one GRU step and one output projection cost tens of microseconds;
training needs gradients and lives in :mod:`agent.predict.train` behind the ``[train]``
extra. numpy is imported by this module only, so the agent core does not pay for it unless
the recurrent predictor is configured.

The vocabulary is bounded (the *vocab* most requested resources of the training data; every
other resource is token 0, "unknown") so the model stays under ``MAX_MODEL_BYTES`` whatever
the trace. Weights are stored as float16 in a simple, strict format (:meth:`GRUModel.to_bytes`):
a length-prefixed JSON header (shapes, vocabulary) then raw little-endian arrays; no pickle.
A model is a resource like any other: the agent signs and versions the bytes.
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.predict.base import Ranked, deep_size
from agent.predict.traces import Request

MAGIC = b"SHGRU1\n"
MAX_MODEL_BYTES = 1 << 20  # the budget: a model is at most 1 MiB
MAX_HEADER = 512 * 1024
PARAMS = ("emb", "wx", "wh", "b", "out", "bout")

F32 = npt.NDArray[np.float32]


class ModelError(ValueError):
    """Model bytes that do not parse or break a bound; the model is refused."""


def _sigmoid(x: F32) -> F32:
    out: F32 = 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic
    return out


@dataclass
class GRUModel:
    """Weights of a one-layer GRU language model over resource tokens.

    Shapes (V vocabulary incl. token 0 "unknown", D embedding, H hidden):
    ``emb`` V x D, ``wx`` D x 3H, ``wh`` H x 3H, ``b`` 3H (gates z, r, candidate),
    ``out`` H x V, ``bout`` V.
    """

    vocab: list[str]  # token i >= 1 names vocab[i - 1]
    emb: F32
    wx: F32
    wh: F32
    b: F32
    out: F32
    bout: F32
    session_gap_s: float = 1800.0
    horizon: int = 1  # trained to predict the next request (1) or the next `horizon`

    def __post_init__(self) -> None:
        self.index = {name: i + 1 for i, name in enumerate(self.vocab)}
        self.check()

    @property
    def hidden(self) -> int:
        return int(self.wh.shape[0])

    def check(self) -> None:
        """Refuse inconsistent shapes or non-finite weights (hostile or corrupt bytes)."""
        v, d = self.emb.shape
        h = self.wh.shape[0]
        want = {"emb": (v, d), "wx": (d, 3 * h), "wh": (h, 3 * h), "b": (3 * h,),
                "out": (h, v), "bout": (v,)}
        for name, shape in want.items():
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ModelError(f"model array {name} has shape {arr.shape}, expected {shape}")
            if not np.all(np.isfinite(arr)):
                raise ModelError(f"model array {name} holds a non-finite number")
        if v != len(self.vocab) + 1:
            raise ModelError("model vocabulary does not match its embedding table")
        if self.nbytes() > MAX_MODEL_BYTES:
            raise ModelError(f"model is {self.nbytes()} bytes, over the {MAX_MODEL_BYTES} budget")

    def nbytes(self) -> int:
        """Bytes of the stored (float16) weights plus the vocabulary."""
        weights = sum(int(getattr(self, n).size) * 2 for n in PARAMS)
        return weights + sum(len(s.encode()) + 1 for s in self.vocab)

    def token(self, resource: str) -> int:
        return self.index.get(resource, 0)

    def step(self, h: F32, token: int) -> F32:
        """One GRU step: the new hidden state after reading *token*."""
        H = self.hidden
        gx = self.emb[token] @ self.wx + self.b
        gh = h @ self.wh
        z = _sigmoid(gx[:H] + gh[:H])
        r = _sigmoid(gx[H:2 * H] + gh[H:2 * H])
        c = np.tanh(gx[2 * H:] + r * gh[2 * H:])
        out: F32 = (1.0 - z) * h + z * c
        return out

    def probs(self, h: F32) -> F32:
        """Softmax over the vocabulary (token 0, "unknown", is never a candidate)."""
        logits = h @ self.out + self.bout
        logits[0] = -np.inf
        logits -= logits.max()
        e = np.exp(logits)
        out: F32 = e / e.sum()
        return out

    # ---- the stored form

    def to_bytes(self) -> bytes:
        header = {"v": len(self.vocab) + 1, "d": int(self.emb.shape[1]), "h": self.hidden,
                  "vocab": self.vocab, "session_gap_s": self.session_gap_s,
                  "horizon": self.horizon}
        head = json.dumps(header, separators=(",", ":")).encode()
        body = b"".join(getattr(self, n).astype("<f2").tobytes() for n in PARAMS)
        return MAGIC + struct.pack("<I", len(head)) + head + body

    @classmethod
    def from_bytes(cls, data: bytes) -> GRUModel:
        """Parse stored bytes strictly: bounded sizes, exact lengths, finite weights."""
        if len(data) > MAX_MODEL_BYTES + MAX_HEADER or not data.startswith(MAGIC):
            raise ModelError("not a Shoal GRU model (bad magic or too large)")
        pos = len(MAGIC)
        if len(data) < pos + 4:
            raise ModelError("model bytes truncated")
        (n,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if n > MAX_HEADER or len(data) < pos + n:
            raise ModelError("model header too large or truncated")
        try:
            header: Any = json.loads(data[pos:pos + n])
        except (UnicodeDecodeError, ValueError):
            raise ModelError("model header is not JSON") from None
        pos += n
        try:
            v, d, h = (int(header[k]) for k in ("v", "d", "h"))
            vocab = header["vocab"]
            gap = float(header["session_gap_s"])
            horizon = int(header["horizon"])
        except (KeyError, TypeError, ValueError):
            raise ModelError("model header lacks a field or has a wrong type") from None
        if not (1 <= v <= 65536 and 1 <= d <= 512 and 1 <= h <= 512 and 1 <= horizon <= 64):
            raise ModelError("model dimensions out of bounds")
        if not isinstance(vocab, list) or not all(isinstance(s, str) for s in vocab):
            raise ModelError("model vocabulary must be a list of strings")
        if len(set(vocab)) != len(vocab):
            raise ModelError("model vocabulary repeats a resource")
        shapes = {"emb": (v, d), "wx": (d, 3 * h), "wh": (h, 3 * h), "b": (3 * h,),
                  "out": (h, v), "bout": (v,)}
        need = sum(int(np.prod(s)) for s in shapes.values()) * 2
        if len(data) - pos != need:
            raise ModelError(f"model body is {len(data) - pos} bytes, expected {need}")
        arrays: dict[str, F32] = {}
        for name in PARAMS:
            size = int(np.prod(shapes[name]))
            raw = np.frombuffer(data, dtype="<f2", count=size, offset=pos)
            arrays[name] = raw.astype(np.float32).reshape(shapes[name])
            pos += size * 2
        return cls(vocab, arrays["emb"], arrays["wx"], arrays["wh"], arrays["b"],
                   arrays["out"], arrays["bout"], gap, horizon)

    def quantised(self) -> GRUModel:
        """The same model as it is after a float16 round trip (what peers run)."""
        return GRUModel.from_bytes(self.to_bytes())


class GRUPredictor:
    """Per-device hidden states over a shared :class:`GRUModel` (mesh-wide weights).

    Until a model is fitted or loaded it predicts nothing. ``fit`` trains on a list of
    requests with *trainer* (the registry passes :func:`agent.predict.train.train_gru`,
    which needs the ``[train]`` extra; a device that only runs models never imports it).
    """

    def __init__(self, model: GRUModel | None = None, *, max_devices: int = 4096,
                 trainer: Callable[[list[Request]], GRUModel] | None = None,
                 name: str = "gru") -> None:
        self.name = name
        self.model = model
        self.max_devices = max_devices
        self.trainer = trainer
        self._state: OrderedDict[str, tuple[F32, float]] = OrderedDict()
        self._probs: OrderedDict[str, F32] = OrderedDict()

    def fit(self, requests: Iterable[Request]) -> None:
        if self.trainer is None:
            raise ModelError("this GRU predictor has no trainer: load a model instead")
        self.model = self.trainer(list(requests)).quantised()
        self._state.clear()
        self._probs.clear()

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        model = self.model
        if model is None:
            return
        prev = self._state.get(device)
        if prev is None or t - prev[1] > model.session_gap_s:
            h = np.zeros(model.hidden, dtype=np.float32)
        else:
            h = prev[0]
            self._state.move_to_end(device)
        self._state[device] = (model.step(h, model.token(resource)), t)
        if len(self._state) > self.max_devices:
            self._state.popitem(last=False)
        self._probs.pop(device, None)

    def distribution(self, device: str) -> F32 | None:
        """The model's probabilities for the device's next request (cached until it asks)."""
        if self.model is None or device not in self._state:
            return None
        p = self._probs.get(device)
        if p is None:
            p = self._probs[device] = self.model.probs(self._state[device][0])
            if len(self._probs) > 64:
                self._probs.popitem(last=False)
        return p

    def predict(self, device: str, k: int, exclude: Container[str] = ()) -> Ranked:
        p = self.distribution(device)
        if p is None or self.model is None or k <= 0:
            return []
        vocab = self.model.vocab
        want = min(len(p) - 1, k + 16)
        top = np.argpartition(-p, want)[:want] if want < len(p) else np.arange(len(p))
        top = top[np.argsort(-p[top], kind="stable")]
        out: Ranked = []
        for tok in top.tolist():
            if tok == 0:
                continue
            name = vocab[tok - 1]
            if name in exclude:
                continue
            out.append((name, float(p[tok])))
            if len(out) >= k:
                break
        return out

    def state_size(self) -> int:
        return len(self._state) + (self.model.emb.shape[0] if self.model else 0)

    def max_state(self) -> int:
        return self.max_devices + 65536

    def memory_bytes(self) -> int:
        """Weights (float32 in memory) and the vocabulary with its index."""
        return deep_size(self.model) if self.model is not None else 0

    def context_bytes(self) -> int:
        return deep_size(self._state, self._probs)
