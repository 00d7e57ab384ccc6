"""Named predictor configurations: what the harness, the tests and the agent instantiate.

Why one table: the benchmark's names, the documentation's names and the agent's config
value must mean the same model with the same bounds. Each entry is a factory so every run
starts from a fresh, empty model. docs/prediction.md explains each and the default.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.predict.base import Predictor
from agent.predict.blend import Blend
from agent.predict.lookahead import Lookahead
from agent.predict.popularity import Popularity
from agent.predict.ppm import PPM, Markov
from agent.predict.scope import PerDevice
from agent.predict.stride import Stride
from agent.predict.successor import Successor

# Bytes of successor slots (7 bytes each). In the default blend the table keeps only what a
# stride gets wrong (37k contexts on the 93k-object OPeNDAP server) and stays with lookahead
# under 1 MB; alone it keeps every context. docs/prediction.md has the measurements.
BLEND_SUCCESSOR_BUDGET = 256 << 10
SUCCESSOR_BUDGET = 768 << 10


def _lookahead() -> Lookahead:
    return Lookahead(window=8, order=3, prior=2.0, max_contexts=1000, max_successors=8,
                     name="lookahead")


def _lookahead_big() -> Lookahead:
    return Lookahead(window=8, order=2, prior=2.0, max_contexts=20_000, max_successors=16,
                     name="lookahead-big")


def _gru() -> Predictor:
    # numpy (and autograd, when fitting) only when the GRU is asked for
    from functools import partial

    from agent.predict.gru import GRUPredictor
    from agent.predict.train import train_gru

    return GRUPredictor(trainer=partial(train_gru, horizon=1, epochs=16))


def _scan() -> Predictor:
    return Blend([(1.0, _lookahead()), (1.0, Stride())], name="lookahead+stride")


def _scan_table() -> Predictor:
    return Blend([(1.0, _lookahead()), (1.0, Stride()),
                  (2.0, Successor(BLEND_SUCCESSOR_BUDGET, max_named=1024, gate=0.6,
                                  skip_stride=True))],
                 name="lookahead+stride+successor")


def _hybrid() -> Predictor:
    return Blend([(0.7, _lookahead()), (0.3, _gru())], name="hybrid")


PREDICTORS: dict[str, Callable[[], Predictor]] = {
    "popularity": lambda: Popularity(),
    "markov1": lambda: Markov(),
    "ppm2": lambda: PPM(2, "fallback"),
    "ppm3-blend": lambda: PPM(3, "blend"),
    "lookahead": _lookahead,
    "lookahead-big": _lookahead_big,
    "gru": _gru,
    "hybrid": _hybrid,
    "stride": lambda: Stride(),
    "lookahead+stride": _scan,
    "successor": lambda: Successor(SUCCESSOR_BUDGET, max_named=2048),
    "lookahead+stride+successor": _scan_table,
}

DEFAULT = "lookahead+stride+successor"


def make(name: str, *, per_device: bool = False) -> Predictor:
    """A fresh predictor called *name*; *per_device* wraps it so nothing is shared."""
    try:
        factory = PREDICTORS[name]
    except KeyError:
        raise ValueError(f"unknown predictor {name!r}: one of {', '.join(PREDICTORS)}") from None
    return PerDevice(factory, max_devices=4096) if per_device else factory()
