"""Named predictor configurations: what the harness, the tests and the agent instantiate.

Why one table: the benchmark's names, the documentation's names and the agent's config
value must mean the same model with the same bounds. Each entry is a factory so every run
starts from a fresh, empty model.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.predict.base import Predictor
from agent.predict.lookahead import Lookahead
from agent.predict.popularity import Popularity
from agent.predict.ppm import PPM, Markov
from agent.predict.scope import PerDevice

PREDICTORS: dict[str, Callable[[], Predictor]] = {
    "popularity": lambda: Popularity(),
    "markov1": lambda: Markov(),
    "ppm2": lambda: PPM(2, "fallback"),
    "ppm3-blend": lambda: PPM(3, "blend"),
    "lookahead": lambda: Lookahead(window=4, order=2),
    "gru": lambda: _gru(),
}


def _gru() -> Predictor:
    from agent.predict.gru import GRUPredictor  # numpy only when the GRU is asked for

    return GRUPredictor(train_options={"horizon": 1})

DEFAULT = "lookahead"


def make(name: str, *, per_device: bool = False) -> Predictor:
    """A fresh predictor called *name*; *per_device* wraps it so nothing is shared."""
    try:
        factory = PREDICTORS[name]
    except KeyError:
        raise ValueError(f"unknown predictor {name!r}: one of {', '.join(PREDICTORS)}") from None
    return PerDevice(factory, max_devices=4096) if per_device else factory()
